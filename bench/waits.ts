/**
 * What PostgreSQL's sessions wait on over a measurement window: pg_stat_activity sampled every
 * `everyMs`, each backend put in a role (the bench's inserts, the engine's pool and lease sessions, its
 * LISTEN session, PostgreSQL's own processes by backend_type) and a state: `CPU` (active, waiting on
 * nothing), a wait as `type:event` (`Lock:object` is the notify queue's commit lock, `LWLock:WALWrite`
 * and `IO:WALSync` the WAL flush at commit, `LWLock:NotifyQueue` / `NotifySLRU` the queue itself), or
 * idle (waiting for its client, or a background process waiting for work). The bench's PostgreSQL serves
 * the bench alone, so every session of the cluster is sampled.
 */
import { setTimeout as delay } from 'node:timers/promises';
import pg from 'pg';
import type { DatabaseConfig } from '../src/config/env.js';
import { clientConfig } from '../src/store/db.js';
import { round } from './stats.js';

export type WaitRole = 'inserts' | 'engine' | 'listen' | string;

export interface RoleWaits {
  /** Mean number of this role's sessions at a sample. */
  sessions: number;
  /** Mean number of them busy (not idle) at a sample. */
  busy: number;
  /** Mean sessions in each busy state ("CPU" or "type:event"), largest first. */
  states: Record<string, number>;
}

export interface WaitProfile {
  samples: number;
  everyMs: number;
  byRole: Record<WaitRole, RoleWaits>;
  /**
   * The largest waits other than CPU over the client sessions (inserts, engine, listen), in mean sessions:
   * what the commits queue behind when PostgreSQL binds.
   */
  top: { role: string; state: string; sessions: number }[];
}

interface Row {
  pid: number;
  app: string;
  kind: string | null;
  state: string | null;
  wtype: string | null;
  wevent: string | null;
}

function roleOf(r: Row): WaitRole {
  if (r.kind !== 'client backend') return r.kind ?? 'unknown';
  if (r.app === 'bench-inserter') return 'inserts';
  if (r.app.startsWith('pm-listen:')) return 'listen';
  if (r.app === 'pump-monitor' || r.app.startsWith('pm-lease:')) return 'engine';
  return 'other';
}

/** A session's state at a sample; undefined when it is idle. */
function stateOf(r: Row): string | undefined {
  if (r.kind === 'client backend') {
    if (r.state !== 'active') return undefined; // idle, or idle in transaction: waiting for its client
    return r.wtype ? `${r.wtype}:${r.wevent}` : 'CPU';
  }
  // A background process waits on its Activity event while it has nothing to do.
  if (r.wtype === 'Activity' || r.wtype === 'Extension') return undefined;
  return r.wtype ? `${r.wtype}:${r.wevent}` : 'CPU';
}

export interface WaitSampler {
  /** Ends the sampling and sums it up (once: a second call gives the same summary). */
  stop(): Promise<WaitProfile>;
}

/** Starts sampling on a connection of its own; `stop()` closes it. */
export async function sampleWaits(db: DatabaseConfig, everyMs = 100): Promise<WaitSampler> {
  const client = new pg.Client(clientConfig(db, 'bench-waits'));
  client.on('error', () => {});
  await client.connect();
  const counts = new Map<string, { sessions: number; busy: number; states: Map<string, number> }>();
  let samples = 0;
  let stopping = false;
  const loop = (async () => {
    // Bounded: at most an hour of samples.
    const most = Math.ceil(3_600_000 / everyMs);
    for (let i = 0; i < most && !stopping; i++) {
      const t = Date.now();
      try {
        const { rows } = await client.query<Row>(
          `SELECT pid, coalesce(application_name, '') AS app, backend_type AS kind, state,
                  wait_event_type AS wtype, wait_event AS wevent
             FROM pg_stat_activity WHERE pid <> pg_backend_pid()`,
        );
        samples += 1;
        for (const r of rows) {
          const role = roleOf(r);
          let c = counts.get(role);
          if (!c) {
            c = { sessions: 0, busy: 0, states: new Map() };
            counts.set(role, c);
          }
          c.sessions += 1;
          const st = stateOf(r);
          if (st === undefined) continue;
          c.busy += 1;
          c.states.set(st, (c.states.get(st) ?? 0) + 1);
        }
      } catch {
        break; // the server went away: what was sampled stands
      }
      await delay(Math.max(0, everyMs - (Date.now() - t)));
    }
  })();
  let summed: Promise<WaitProfile> | undefined;
  const sum = async (): Promise<WaitProfile> => {
    stopping = true;
    await loop;
    await client.end().catch(() => {});
    const n = Math.max(1, samples);
    const byRole: Record<string, RoleWaits> = {};
    const top: WaitProfile['top'] = [];
    for (const [role, c] of [...counts].sort((a, b) => b[1].busy - a[1].busy)) {
      const states: Record<string, number> = {};
      for (const [st, k] of [...c.states].sort((a, b) => b[1] - a[1])) {
        states[st] = round(k / n, 2);
        if (st !== 'CPU' && (role === 'inserts' || role === 'engine' || role === 'listen'))
          top.push({ role, state: st, sessions: round(k / n, 2) });
      }
      byRole[role] = { sessions: round(c.sessions / n, 2), busy: round(c.busy / n, 2), states };
    }
    top.sort((a, b) => b.sessions - a.sessions);
    return { samples, everyMs, byRole, top: top.slice(0, 5) };
  };
  return {
    stop() {
      summed ??= sum();
      return summed;
    },
  };
}

/**
 * One line for the table: PostgreSQL's cores, the busy sessions by role with their largest states, and
 * the largest wait: "inserts 1.8 busy (Lock:object 0.9, CPU 0.5); engine 0.3 busy (CPU 0.2)".
 */
export function waitsLine(w: WaitProfile | undefined): string {
  if (!w || w.samples === 0) return 'not sampled';
  const parts: string[] = [];
  for (const role of ['inserts', 'engine', 'listen']) {
    const r = w.byRole[role];
    if (!r) continue;
    const states = Object.entries(r.states)
      .slice(0, 3)
      .map(([s, k]) => `${s} ${k}`)
      .join(', ');
    parts.push(`${role} ${r.busy}/${r.sessions} busy${states ? ` (${states})` : ''}`);
  }
  const bg = Object.entries(w.byRole)
    .filter(([role]) => !['inserts', 'engine', 'listen', 'other'].includes(role))
    .filter(([, r]) => r.busy >= 0.05)
    .map(([role, r]) => `${role} ${r.busy}`);
  if (bg.length > 0) parts.push(`background: ${bg.join(', ')}`);
  return parts.join('; ');
}
