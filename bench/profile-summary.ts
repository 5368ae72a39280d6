/**
 * Summarizes a V8 .cpuprofile (from `node --cpu-prof`) by self time: the functions, and the packages or
 * source files, where the process spent its own CPU time. A .heapprofile (the engine runner's
 * BENCH_ALLOC_PROFILE or BENCH_LIVE_PROFILE) is summarized the same way by the bytes each function
 * allocated (sampled).
 *
 *   npx tsx bench/profile-summary.ts <file.cpuprofile | file.heapprofile> [top]
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { round } from './stats.js';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}

interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

export interface SelfTime {
  name: string;
  where: string;
  ms: number;
  /** Share of the busy (non-idle) time. */
  pct: number;
}

export interface ProfileSummary {
  file: string;
  wallMs: number;
  idleMs: number;
  busyMs: number;
  functions: SelfTime[];
  areas: SelfTime[];
}

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

function location(url: string): string {
  if (url === '') return '';
  let p = url.startsWith('file://') ? fileURLToPath(url) : url;
  const nm = p.lastIndexOf('node_modules/');
  if (nm >= 0) return p.slice(nm + 'node_modules/'.length);
  // The children run the copy compiled by build.ts: <tmp>/build/src/... (JavaScript line numbers).
  const built = p.search(/\/build\/(src|bench)\//);
  if (built >= 0) return p.slice(built + '/build/'.length);
  if (p.startsWith(root)) p = path.relative(root, p);
  return p;
}

/** The package (node_modules), the project file (src/...), node's internals, or a V8 pseudo-frame. */
function areaOf(name: string, url: string): string {
  if (url === '') return name.startsWith('(') ? name : '(native)';
  const loc = location(url);
  if (loc.startsWith('node:')) return 'node: internals';
  if (url.includes('node_modules/')) {
    const parts = loc.split('/');
    return parts[0]?.startsWith('@') ? `${parts[0]}/${parts[1]}` : (parts[0] ?? loc);
  }
  return loc;
}

export function summarizeProfile(file: string, top = 20): ProfileSummary {
  const profile = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile;
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const selfUs = new Map<number, number>();
  for (let i = 0; i < profile.samples.length; i++) {
    const id = profile.samples[i] as number;
    const dt = profile.timeDeltas[i + 1] ?? 0;
    selfUs.set(id, (selfUs.get(id) ?? 0) + Math.max(0, dt));
  }
  const fns = new Map<string, { name: string; where: string; us: number }>();
  const areas = new Map<string, number>();
  let idleUs = 0;
  let totalUs = 0;
  for (const [id, us] of selfUs) {
    const node = byId.get(id);
    if (!node) continue;
    totalUs += us;
    const { functionName, url, lineNumber } = node.callFrame;
    const name = functionName || '(anonymous)';
    if (name === '(idle)') {
      idleUs += us;
      continue;
    }
    const where = url ? `${location(url)}:${lineNumber + 1}` : '';
    const key = `${name}@${where}`;
    const f = fns.get(key) ?? { name, where, us: 0 };
    f.us += us;
    fns.set(key, f);
    const area = areaOf(name, url);
    areas.set(area, (areas.get(area) ?? 0) + us);
  }
  const busyUs = totalUs - idleUs;
  const pct = (us: number) => round((100 * us) / Math.max(1, busyUs), 1);
  return {
    file,
    wallMs: round((profile.endTime - profile.startTime) / 1000, 0),
    idleMs: round(idleUs / 1000, 0),
    busyMs: round(busyUs / 1000, 0),
    functions: [...fns.values()]
      .sort((a, b) => b.us - a.us)
      .slice(0, top)
      .map((f) => ({ name: f.name, where: f.where, ms: round(f.us / 1000, 0), pct: pct(f.us) })),
    areas: [...areas.entries()]
      .sort((a, b) => b[1] - a[1])
      .slice(0, top)
      .map(([name, us]) => ({ name, where: '', ms: round(us / 1000, 0), pct: pct(us) })),
  };
}

interface HeapNode {
  callFrame: { functionName: string; url: string; lineNumber: number };
  selfSize: number;
  children?: HeapNode[];
}

export interface HeapSummary {
  file: string;
  sampledMb: number;
  functions: { name: string; where: string; mb: number; pct: number }[];
  areas: { name: string; mb: number; pct: number }[];
}

/** A sampling heap profile by the bytes allocated in each function and each package or file. */
export function summarizeHeapProfile(file: string, top = 20): HeapSummary {
  const profile = JSON.parse(readFileSync(file, 'utf8')) as { head: HeapNode };
  const fns = new Map<string, { name: string; where: string; bytes: number }>();
  const areas = new Map<string, number>();
  let total = 0;
  const stack: HeapNode[] = [profile.head];
  for (let node = stack.pop(); node; node = stack.pop()) {
    stack.push(...(node.children ?? []));
    if (node.selfSize === 0) continue;
    const { functionName, url, lineNumber } = node.callFrame;
    const name = functionName || '(anonymous)';
    const where = url ? `${location(url)}:${lineNumber + 1}` : '';
    const f = fns.get(`${name}@${where}`) ?? { name, where, bytes: 0 };
    f.bytes += node.selfSize;
    fns.set(`${name}@${where}`, f);
    const area = areaOf(name, url);
    areas.set(area, (areas.get(area) ?? 0) + node.selfSize);
    total += node.selfSize;
  }
  const mb = (b: number) => round(b / 1e6, 2);
  const pct = (b: number) => round((100 * b) / Math.max(1, total), 1);
  return {
    file,
    sampledMb: mb(total),
    functions: [...fns.values()]
      .sort((a, b) => b.bytes - a.bytes)
      .slice(0, top)
      .map((f) => ({ name: f.name, where: f.where, mb: mb(f.bytes), pct: pct(f.bytes) })),
    areas: [...areas.entries()]
      .sort((a, b) => b[1] - a[1])
      .slice(0, top)
      .map(([name, b]) => ({ name, mb: mb(b), pct: pct(b) })),
  };
}

export function formatHeapSummary(s: HeapSummary): string {
  return [
    `${path.basename(s.file)}: ${s.sampledMb} MB sampled`,
    '',
    '       MB        %  function (location)',
    ...s.functions.map(
      (f) =>
        `  ${f.mb.toFixed(2).padStart(7)}  ${f.pct.toFixed(1).padStart(6)}  ${f.name}${f.where ? ` (${f.where})` : ''}`,
    ),
    '',
    '       MB        %  package / file',
    ...s.areas.map((a) => `  ${a.mb.toFixed(2).padStart(7)}  ${a.pct.toFixed(1).padStart(6)}  ${a.name}`),
  ].join('\n');
}

export function formatSummary(s: ProfileSummary): string {
  const lines = [
    `${path.basename(s.file)}: ${s.wallMs} ms profiled, ${s.busyMs} ms busy, ${s.idleMs} ms idle`,
    '',
    '  self ms   busy %  function (location)',
    ...s.functions.map(
      (f) =>
        `  ${String(f.ms).padStart(7)}  ${f.pct.toFixed(1).padStart(6)}  ${f.name}${f.where ? ` (${f.where})` : ''}`,
    ),
    '',
    '  self ms   busy %  package / file',
    ...s.areas.map((a) => `  ${String(a.ms).padStart(7)}  ${a.pct.toFixed(1).padStart(6)}  ${a.name}`),
  ];
  return lines.join('\n');
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const file = process.argv[2];
  if (!file) {
    process.stderr.write('usage: tsx bench/profile-summary.ts <file.cpuprofile | file.heapprofile> [top]\n');
    process.exit(2);
  }
  const top = Number(process.argv[3] ?? 25);
  const text = file.endsWith('.heapprofile')
    ? formatHeapSummary(summarizeHeapProfile(file, top))
    : formatSummary(summarizeProfile(file, top));
  process.stdout.write(`${text}\n`);
}
