import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Config, type DatabaseConfig, loadConfig } from '../../src/config/env.js';
import { runDiagnostics } from '../../src/operate/diagnose/index.js';
import { replicationChecks } from '../../src/operate/diagnose/replication.js';
import { migrateSource } from '../../src/source/replication/migrate.js';
import { replicationNames } from '../../src/source/replication/setup.js';
import { type Harness, harness, testEnv } from '../helpers/engine.js';

let h: Harness;

function config(extra: Record<string, string> = {}): Config & { database: DatabaseConfig } {
  return loadConfig(testEnv(h.db, h.backend, { SOURCE: 'replication', ...extra }), {
    requireDatabase: true,
  }) as Config & { database: DatabaseConfig };
}

const byName = async (extra: Record<string, string> = {}) =>
  new Map(
    (await replicationChecks(config(extra))).map((c) => [
      c.name.replace(/^(replication slot|publication) \S+$/, '$1'),
      c,
    ]),
  );

beforeAll(async () => {
  h = await harness('diag_repl', { SOURCE: 'replication' });
});
afterAll(async () => {
  await h?.close();
});

describe('diagnose on SOURCE=replication', () => {
  it('passes wal_level, privilege, slot and publication on a migrated setup, and checks no trigger', async () => {
    const checks = await byName();
    expect([...checks.keys()]).toEqual([
      'wal_level',
      'replication privilege',
      'replication slot',
      'publication',
    ]);
    for (const c of checks.values()) expect(c, c.detail).toMatchObject({ ok: true });
    expect(checks.get('publication')?.detail).toMatch(/^exactly the \d+ tables, inserts$/);
    const all = await runDiagnostics(config(), { timeoutMs: 2_000 });
    expect(all.filter((c) => c.name.startsWith('trigger '))).toEqual([]);
    expect(all.some((c) => c.name.startsWith('replication slot '))).toBe(true);
  });

  it('a slot of another plug-in, a missing slot, a publication short of a table: each one line with its fix', async () => {
    const wrong = (await byName({ REPLICATION_PLUGIN: 'wal2json' })).get('replication slot');
    expect(wrong).toMatchObject({
      ok: false,
      detail: expect.stringMatching(/plug-in pgoutput, REPLICATION_PLUGIN is wal2json/),
    });
    expect(wrong?.hint).toMatch(/REPLICATION_PLUGIN=pgoutput/);

    const missing = (await byName({ REPLICATION_SLOT: 'no_such_slot_here' })).get('replication slot');
    expect(missing).toMatchObject({
      ok: false,
      detail: 'no such slot',
      hint: expect.stringMatching(/migrate/),
    });

    const table = h.pumps.A.sensors[0]?.table as string;
    await h.admin.query(`ALTER PUBLICATION pump_monitor DROP TABLE "${table}"`);
    try {
      const pub = (await byName()).get('publication');
      expect(pub).toMatchObject({ ok: false, detail: expect.stringContaining(`missing public.${table}`) });
      expect(pub?.hint).toMatch(/migrate with SOURCE=replication/);
    } finally {
      const c = await h.admin.connect();
      await migrateSource(c, config()).finally(() => c.release());
    }
    expect((await byName()).get('publication')?.ok).toBe(true);
  });

  it('on SOURCE=notify, a slot left behind that nobody reads fails with the way to drop it', async () => {
    const notify = loadConfig(testEnv(h.db, h.backend, { SOURCE: 'notify' }), {
      requireDatabase: true,
    }) as Config & {
      database: DatabaseConfig;
    };
    const [left] = await replicationChecks(notify);
    const slot = replicationNames(notify.source, h.db.name).slot;
    expect(left).toMatchObject({ name: `replication slot ${slot}`, ok: false });
    expect(left?.detail).toMatch(/read by nobody/);
    expect(left?.hint).toContain(`pg_drop_replication_slot('${slot}')`);
  });
});
