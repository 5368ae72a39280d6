import { type ChildProcess, spawn } from 'node:child_process';
import { readFileSync, readlinkSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import type { LogTail } from './log-tail.js';

/**
 * Processes, read through /proc and moved by signals: whether one is alive, whether a leftover
 * postmaster is ours to stop, and how a running one is stopped (also when this process exits).
 */

const STOP_GRACE_MS = 15_000;
const LEFTOVER_GRACE_MS = 5_000;

/** Fields 3 onwards of /proc/<pid>/stat, after the command name (which may hold spaces and parentheses). */
function procStatFields(pid: number): string[] | undefined {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return text.slice(text.lastIndexOf(')') + 2).split(' ');
  } catch {
    return undefined;
  }
}

function readProcStat(pid: number): { state: string; ppid: number } | undefined {
  const fields = procStatFields(pid);
  return fields ? { state: fields[0] ?? '', ppid: Number(fields[1]) } : undefined;
}

/** The kernel's start time of a process (field 22 of /proc/<pid>/stat), where /proc exists. */
export function processStartTime(pid: number): string | undefined {
  return procStatFields(pid)?.[19];
}

/** True if `pid` is a live process. A zombie (exited, not yet reaped by its parent) counts as gone. */
export function isProcessRunning(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
  return readProcStat(pid)?.state !== 'Z';
}

function readCmdline(pid: number): string[] {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean);
  } catch {
    return [];
  }
}

function isPostmasterFor(pid: number, dataDir: string): boolean {
  const argv = readCmdline(pid);
  return argv.length > 0 && path.basename(argv[0] ?? '') === 'postgres' && argv.includes(dataDir);
}

/** A postmaster whose parent is still a running Node program belongs to that program, not to a crash. */
function isHeldByLiveProgram(pid: number): boolean {
  const ppid = readProcStat(pid)?.ppid;
  if (ppid === undefined || !Number.isInteger(ppid) || ppid <= 1) return false;
  try {
    const exe = readlinkSync(`/proc/${ppid}/exe`);
    return exe === process.execPath || path.basename(exe).startsWith('node');
  } catch {
    // Unreadable means another user's process: leave it alone.
    return true;
  }
}

async function waitUntilGone(pid: number, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (isProcessRunning(pid)) {
    if (Date.now() >= deadline) return false;
    await delay(50);
  }
  return true;
}

function sendSignal(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(pid, signal);
  } catch {
    // Already gone.
  }
}

/**
 * SIGTERM lets the postmaster shut down cleanly. SIGQUIT (immediate shutdown) still makes it take its
 * backends down with it; a bare SIGKILL would leave them holding the shared memory a new server needs.
 */
async function stopLeftoverPostmaster(pid: number): Promise<void> {
  for (const signal of ['SIGTERM', 'SIGQUIT', 'SIGKILL'] as const) {
    sendSignal(pid, signal);
    if (await waitUntilGone(pid, LEFTOVER_GRACE_MS)) return;
  }
  throw new Error(`could not stop the leftover PostgreSQL process ${pid}`);
}

function readPostmasterPid(dataDir: string): number | undefined {
  try {
    const firstLine = readFileSync(path.join(dataDir, 'postmaster.pid'), 'utf8').split('\n')[0] ?? '';
    const pid = Number.parseInt(firstLine, 10);
    return Number.isInteger(pid) ? pid : 0;
  } catch {
    return undefined;
  }
}

/**
 * A node process killed with SIGKILL leaves its postmaster running and postmaster.pid behind; starting over
 * that file fails. Stop such a leftover server, but never a process that is not this data dir's postmaster.
 */
export async function clearStalePostmaster(dataDir: string, log: LogTail): Promise<void> {
  const pid = readPostmasterPid(dataDir);
  if (pid === undefined) return;
  if (pid > 0 && isProcessRunning(pid) && isPostmasterFor(pid, dataDir)) {
    if (isHeldByLiveProgram(pid)) {
      throw new Error(
        `${dataDir} is in use by PostgreSQL process ${pid}, started by another running program`,
      );
    }
    log.note(`stopping leftover PostgreSQL process ${pid} for ${dataDir}`);
    await stopLeftoverPostmaster(pid);
  }
  await rm(path.join(dataDir, 'postmaster.pid'), { force: true });
}

export function hasExited(child: ChildProcess): boolean {
  return child.exitCode !== null || child.signalCode !== null;
}

function waitForExit(child: ChildProcess, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    if (hasExited(child)) {
      resolve(true);
      return;
    }
    const onExit = () => {
      clearTimeout(timer);
      resolve(true);
    };
    const timer = setTimeout(() => {
      child.off('exit', onExit);
      resolve(false);
    }, timeoutMs);
    child.once('exit', onExit);
  });
}

/** SIGINT is PostgreSQL's fast shutdown: the postmaster ends its sessions and waits for its children. */
export async function stopChild(child: ChildProcess): Promise<void> {
  if (hasExited(child)) return;
  child.kill('SIGINT');
  if (await waitForExit(child, STOP_GRACE_MS)) return;
  child.kill('SIGKILL');
  if (!(await waitForExit(child, STOP_GRACE_MS)))
    throw new Error(`PostgreSQL process ${child.pid} did not exit`);
}

/** Running postmasters, each with the relocation directory it runs from, if any. */
const runningChildren = new Map<ChildProcess, string | undefined>();
let exitHookInstalled = false;
const REMOVAL_WAIT_S = 60;

/**
 * Removes a relocation's directory once its postmaster has exited, from a small detached shell: the
 * exiting process cannot wait for it. Gives up waiting after a minute (an unreaped process) and removes
 * it all the same.
 */
export function removeWhenGone(dir: string, pid: number): void {
  const script = `i=0; while kill -0 "$1" 2>/dev/null && [ "$i" -lt ${REMOVAL_WAIT_S * 5} ]; do sleep 0.2; i=$((i+1)); done; rm -rf -- "$2"`;
  try {
    spawn('/bin/sh', ['-c', script, 'pump-monitor-pg-cleanup', String(pid), dir], {
      detached: true,
      stdio: 'ignore',
    }).unref();
  } catch {
    // The next start with the same data directory removes it instead.
  }
}

/**
 * 'exit' handlers must be synchronous, so the postmaster is only signalled and shuts down on its own; a
 * relocation's directory goes once it has.
 */
function terminateRunningChildren(): void {
  for (const [child, dir] of runningChildren) {
    if (hasExited(child)) continue;
    child.kill('SIGTERM');
    if (dir && child.pid) removeWhenGone(dir, child.pid);
  }
}

export function trackChild(child: ChildProcess, relocationDir: string | undefined): void {
  runningChildren.set(child, relocationDir);
  child.once('exit', () => runningChildren.delete(child));
  if (!exitHookInstalled) {
    process.on('exit', terminateRunningChildren);
    exitHookInstalled = true;
  }
}
