import { readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

/**
 * The README's variable table, `.env.example` and the variables the program reads are one set: a
 * variable added to the code without its line in both fails here, and so does a documented one the code
 * no longer reads.
 */

const root = path.resolve(import.meta.dirname, '../..');
const read = (file: string) => readFileSync(path.join(root, file), 'utf8');

/** Variables the program reads that are the system's, not its configuration. */
const SYSTEM = new Set([
  'PATH', // the embedded PostgreSQL's helpers are looked up on it
  'HOME',
  'USER', // who ran an operator command, for the audit trail (dead-letters, replay)
  'LOGNAME',
]);

function filesUnder(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const full = path.join(dir, name);
    return statSync(full).isDirectory() ? filesUnder(full) : [full];
  });
}

/** Names the code reads: the config schema's literals, and process.env / env lookups anywhere in src/. */
function readByCode(): Set<string> {
  const names = new Set<string>();
  const add = (text: string, pattern: RegExp) => {
    for (const m of text.matchAll(pattern)) names.add(m[1] as string);
  };
  // Every upper-case literal of the config schema (src/config/) names a variable (read, checked or reported).
  for (const file of filesUnder(path.join(root, 'src/config')).filter((f) => f.endsWith('.ts'))) {
    add(readFileSync(file, 'utf8'), /'([A-Z][A-Z0-9_]{2,})'/g);
  }
  for (const file of filesUnder(path.join(root, 'src')).filter((f) => f.endsWith('.ts'))) {
    const text = readFileSync(file, 'utf8');
    add(text, /\bprocess\.env\.([A-Z][A-Z0-9_]+)/g);
    add(text, /\benv\.([A-Z][A-Z0-9_]+)/g);
    add(text, /\((?:process\.)?env, '([A-Z][A-Z0-9_]+)'/g);
  }
  // A pump definition names the variable of its backend URL.
  for (const file of filesUnder(path.join(root, 'pumps')).filter((f) => f.endsWith('.json'))) {
    add(readFileSync(file, 'utf8'), /"baseUrlEnv"\s*:\s*"([A-Z][A-Z0-9_]+)"/g);
  }
  for (const name of SYSTEM) names.delete(name);
  return names;
}

/** The first column of the README's table under "| Variable | Default | Meaning |". */
function inReadme(): Set<string> {
  const text = read('README.md');
  const start = text.indexOf('| Variable | Default | Meaning |');
  expect(start, 'the README has a variable table').toBeGreaterThan(0);
  const rows = text.slice(start).split('\n').slice(2);
  const names = new Set<string>();
  for (const row of rows) {
    if (!row.startsWith('|')) break;
    const first = row.split('|')[1] ?? '';
    for (const m of first.matchAll(/`([A-Z][A-Z0-9_]+)`/g)) names.add(m[1] as string);
  }
  return names;
}

function inEnvExample(): Set<string> {
  const names = new Set<string>();
  for (const m of read('.env.example').matchAll(/^#?([A-Z][A-Z0-9_]+)=/gm)) names.add(m[1] as string);
  return names;
}

const sorted = (s: Set<string>) => [...s].sort();
const minus = (a: Set<string>, b: Set<string>) => sorted(new Set([...a].filter((x) => !b.has(x))));

describe('the documented variables are the ones the program reads', () => {
  const code = readByCode();
  const readme = inReadme();
  const example = inEnvExample();

  it('finds a plausible set in each place', () => {
    // The extraction itself: the original's variables and the demo's are found in the code.
    for (const name of [
      'DB_HOST',
      'BASE_URL_B',
      'API_KEY',
      'LOG_FORMAT',
      'BACKEND_PORT',
      'SIMULATE_MISSING',
    ]) {
      expect(code.has(name), name).toBe(true);
    }
    expect(readme.size).toBeGreaterThan(40);
  });

  it('the README table names every variable the code reads, and no other', () => {
    expect({ undocumented: minus(code, readme), unread: minus(readme, code) }).toEqual({
      undocumented: [],
      unread: [],
    });
  });

  it('.env.example has a line for every variable in the README table, and no other', () => {
    expect({ missingFromExample: minus(readme, example), notInReadme: minus(example, readme) }).toEqual({
      missingFromExample: [],
      notInReadme: [],
    });
  });
});
