import { performance } from 'node:perf_hooks';

/** One line of the diagnosis. */
export interface Check {
  name: string;
  ok: boolean;
  detail: string;
  /** How to fix it; set on failures. */
  hint?: string;
  /** How long the check took, when timing means something (connect, round trip, HTTP). */
  ms?: number;
}

export const round = (ms: number) => Math.round(ms * 10) / 10;

export function elapsed(since: number): number {
  return round(performance.now() - since);
}

/** Replaces every occurrence of a secret; a last line of defence, the checks never put one in. */
export function redact(checks: Check[], secrets: (string | undefined)[]): Check[] {
  const hidden = secrets.filter((s): s is string => typeof s === 'string' && s.length >= 4);
  if (hidden.length === 0) return checks;
  const clean = (s: string) => hidden.reduce((acc, secret) => acc.split(secret).join('***'), s);
  return checks.map((c) => {
    const out: Check = { ...c, name: clean(c.name), detail: clean(c.detail) };
    if (c.hint !== undefined) out.hint = clean(c.hint);
    return out;
  });
}

/** One line per check: PASS or FAIL, the name, the detail, and for a failure how to fix it. */
export function formatTable(checks: Check[]): string {
  const width = Math.min(
    60,
    checks.reduce((w, c) => Math.max(w, c.name.length), 0),
  );
  const lines = checks.map((c) => {
    const hint = !c.ok && c.hint ? ` -> fix: ${c.hint}` : '';
    return `${c.ok ? 'PASS' : 'FAIL'}  ${c.name.padEnd(width)}  ${c.detail}${hint}`;
  });
  const failed = checks.filter((c) => !c.ok).length;
  lines.push(
    failed === 0 ? `all ${checks.length} checks passed` : `${failed} of ${checks.length} checks failed`,
  );
  return `${lines.join('\n')}\n`;
}

export interface DiagnosisJson {
  ok: boolean;
  passed: number;
  failed: number;
  checks: Check[];
}

/** The machine-readable form: overall verdict, counts and every check. */
export function toJson(checks: Check[]): DiagnosisJson {
  const failed = checks.filter((c) => !c.ok).length;
  return { ok: failed === 0, passed: checks.length - failed, failed, checks };
}

export function formatJson(checks: Check[]): string {
  return `${JSON.stringify(toJson(checks), null, 2)}\n`;
}
