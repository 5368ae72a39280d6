/**
 * What PostgreSQL refuses in a text value: U+0000 (SQLSTATE 22021 in text, 22P05 as a json/jsonb escape)
 * and a lone UTF-16 surrogate, which has no UTF-8 form (node-postgres writes it as U+FFFD in text, but
 * JSON.stringify escapes it as `\udxxx` and jsonb refuses that). Invalid UTF-8 from the network is already
 * U+FFFD once Node decodes it.
 *
 * `pgText` replaces each such code unit with U+FFFD. Text from outside the engine (notification payloads,
 * backend answers, reasons quoting them, logbook texts) goes through it before it is written. It scans
 * without allocating and returns the same string when there is nothing to replace: the usual case.
 */
export function pgText(s: string): string {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 0) return replaceFrom(s, i);
    if (c >= 0xd800 && c <= 0xdfff) {
      if (c <= 0xdbff && isLow(s.charCodeAt(i + 1))) i += 1;
      else return replaceFrom(s, i);
    }
  }
  return s;
}

/** `pgText` for an optional value: undefined and null become null (SQL NULL). */
export function pgTextOrNull(s: string | null | undefined): string | null {
  return s === undefined || s === null ? null : pgText(s);
}

const REPLACEMENT = '\ufffd';

function isLow(c: number): boolean {
  return c >= 0xdc00 && c <= 0xdfff;
}

function replaceFrom(s: string, start: number): string {
  const out: string[] = [s.slice(0, start)];
  let from = start;
  for (let i = start; i < s.length; i++) {
    const c = s.charCodeAt(i);
    let bad = c === 0;
    if (c >= 0xd800 && c <= 0xdfff) {
      if (c <= 0xdbff && isLow(s.charCodeAt(i + 1))) {
        i += 1;
        continue;
      }
      bad = true;
    }
    if (bad) {
      out.push(s.slice(from, i), REPLACEMENT);
      from = i + 1;
    }
  }
  out.push(s.slice(from));
  return out.join('');
}
