import { InvalidArgumentError } from 'commander';

/** Option parsers of the operator commands; light, so that main can register them without loading those. */

const UNIT_MS: Record<string, number> = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** `--since`: a duration back from now (30m, 2h, 7d) or a timestamp (2025-01-31T08:00, local time without a zone). */
export function parseSince(raw: string, now = Date.now()): Date {
  const m = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)$/.exec(raw.trim());
  if (m) return new Date(now - Number(m[1]) * (UNIT_MS[m[2] as string] as number));
  const t = Date.parse(raw);
  if (Number.isNaN(t)) {
    throw new InvalidArgumentError(
      'expected a duration such as 30m, 2h or 7d, or a timestamp such as 2025-01-31T08:00',
    );
  }
  return new Date(t);
}

/** One dead letter id of a variadic argument, appended to those before it. */
export function parseId(raw: string, previous: number[] = []): number[] {
  const n = Number(raw);
  if (!Number.isSafeInteger(n) || n <= 0) throw new InvalidArgumentError(`"${raw}" is not a dead letter id`);
  return [...previous, n];
}
