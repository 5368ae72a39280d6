import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

/**
 * Test files run in parallel on one PostgreSQL server. A session-ending statement in one of them must end
 * only its own sessions: those of its own database, under a session name it was given (a parameter), never
 * a wildcard over every `pm-listen:` session of the server.
 */

const testRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

function testFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) return e.name === 'fixtures' ? [] : testFiles(p);
    return p.endsWith('.ts') ? [p] : [];
  });
}

/** The statement text from `pg_terminate_backend` to the end of its string literal (at most 400 characters). */
function statementsAt(source: string): string[] {
  const out: string[] = [];
  let at = source.indexOf('pg_terminate_backend(');
  while (at >= 0 && out.length < 100) {
    const tail = source.slice(at, at + 400);
    const end = tail.search(/[`"],|[`"]\s*\)/);
    out.push(end > 0 ? tail.slice(0, end) : tail);
    at = source.indexOf('pg_terminate_backend(', at + 1);
  }
  return out;
}

describe('test isolation', () => {
  it('every session-ending statement of the tests names its own database and a session name it was given', () => {
    const self = fileURLToPath(import.meta.url);
    const offending: string[] = [];
    let seen = 0;
    for (const file of testFiles(testRoot).filter((f) => f !== self)) {
      for (const sql of statementsAt(readFileSync(file, 'utf8'))) {
        seen += 1;
        const ownDatabase = /datname\s*=\s*current_database\(\)/.test(sql);
        const ownName = /application_name\s*(=\s*\$\d|LIKE\s+'[^']*'\s*\|\|\s*\$\d)/.test(sql);
        if (!ownDatabase || !ownName)
          offending.push(`${path.relative(testRoot, file)}: ${sql.replace(/\s+/g, ' ')}`);
      }
    }
    expect(seen).toBeGreaterThan(0);
    expect(offending).toEqual([]);
  });
});
