import { readFileSync } from 'node:fs';
import pg from 'pg';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { type Config, type DatabaseConfig, loadConfig } from '../../src/config/env.js';
import { Monitor } from '../../src/engine/monitor.js';
import { quoteIdent } from '../../src/store/db.js';
import { MIGRATIONS, runMigrations, SCHEMA_VERSION, schemaVersion } from '../../src/store/migrations.js';
import { ENGINE_SCHEMA, installSensorTables } from '../../src/store/schema.js';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';
import { testEnv } from '../helpers/engine.js';
import { FakeBackend } from '../helpers/fake-backend.js';
import { waitFor } from '../helpers/wait.js';

/**
 * Installations of earlier engine schemas are upgraded in place. Each earlier version is a frozen DDL
 * snapshot in test/fixtures/ (engine-schema-v<N>.sql), written once from the migrations as they were, so a
 * later edit of an old migration in src/ cannot move the starting point along with it.
 */

const S = ENGINE_SCHEMA;
const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c().catch(() => {});
});

async function setup(prefix: string) {
  const db: TestDatabase = await createTestDatabase(prefix);
  cleanups.push(() => db.drop());
  const admin = new pg.Pool({ connectionString: db.url, max: 4 });
  admin.on('error', () => {});
  cleanups.push(() => admin.end());
  const backend = await new FakeBackend().start();
  cleanups.push(() => backend.stop());
  const config = loadConfig(testEnv(db, backend), {
    requireDatabase: true,
    requireBackend: true,
  }) as Config & {
    database: DatabaseConfig;
  };
  return { db, admin, backend, config };
}

/** The frozen DDL of engine schema version `n` (1 to 4). */
function frozenSchema(n: 1 | 2 | 3 | 4): string {
  return readFileSync(new URL(`../fixtures/engine-schema-v${n}.sql`, import.meta.url), 'utf8');
}

/**
 * An installation of engine schema version `n` as it was: its frozen DDL (version 1 has no version table)
 * and the sensor tables.
 */
async function installVersion(admin: pg.Pool, config: Config, n: 1 | 2 | 3 | 4) {
  const client = await admin.connect();
  try {
    await client.query(frozenSchema(n));
    await installSensorTables(client, config.pumps);
  } finally {
    client.release();
  }
}

/** The engine schema's tables, columns, indexes and constraints, in a comparable form. */
async function catalog(admin: pg.Pool) {
  const columns = await admin.query(
    `SELECT table_name, column_name, data_type, is_nullable, column_default
       FROM information_schema.columns WHERE table_schema = $1 ORDER BY table_name, column_name`,
    [S],
  );
  const indexes = await admin.query(
    'SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = $1 ORDER BY tablename, indexname',
    [S],
  );
  const constraints = await admin.query(
    `SELECT conrelid::regclass::text AS rel, conname, pg_get_constraintdef(oid) AS def
       FROM pg_constraint WHERE connamespace = $1::regnamespace ORDER BY 1, 2`,
    [S],
  );
  return { columns: columns.rows, indexes: indexes.rows, constraints: constraints.rows };
}

describe('engine schema migrations', () => {
  it('upgrades a version-1 installation and delivers its pending vectors, deferred posts and keeps its dead letters', async () => {
    const { admin, backend, config } = await setup('migrate_v1');
    await installVersion(admin, config, 1);
    const A = config.pumps.find((p) => p.id === 'A');
    if (!A) throw new Error('no pump A');
    const sensor = A.sensors[0];
    if (!sensor) throw new Error('no sensor');
    // A reading whose per-sensor post was deferred, a pending vector, a sent one, a dead letter: all in v1 shape.
    const { rows: row } = await admin.query<{ id: number }>(
      `INSERT INTO ${quoteIdent(sensor.table)} (tiempo_sensor, valor_sensor) VALUES ('2025-05-01T00:00:00', 3.5) RETURNING id`,
    );
    const rowId = row[0]?.id as number;
    for (const s of A.sensors) {
      await admin.query(
        `INSERT INTO ${S}.checkpoints (table_name, last_id) SELECT $1, coalesce(max(id), 0) FROM ${quoteIdent(s.table)}`,
        [s.table],
      );
    }
    for (const s of config.pumps.find((p) => p.id === 'B')?.sensors ?? []) {
      await admin.query(`INSERT INTO ${S}.checkpoints (table_name, last_id) VALUES ($1, 0)`, [s.table]);
    }
    // Rows above the checkpoints whose vector v1 had already sent: the window a crash leaves at the upgrade.
    for (const s of A.sensors) {
      await admin.query(
        `INSERT INTO ${quoteIdent(s.table)} (tiempo_sensor, valor_sensor) VALUES ('2025-04-30T23:59:00', 2)`,
      );
    }
    const body = Object.fromEntries(A.sensors.map((s) => [s.field, 1.25]));
    await admin.query(
      `INSERT INTO ${S}.outbox (pump, tiempo_sensor, idempotency_key, body, status)
       VALUES ('A', '2025-05-01T00:00:00', 'vec-A-legacy-pending', $1, 'pending'),
              ('A', '2025-04-30T23:59:00', 'vec-A-legacy-sent', $1, 'sent')`,
      [JSON.stringify(body)],
    );
    await admin.query(`INSERT INTO ${S}.deferred_posts (pump, channel, payload) VALUES ('A', $1, $2)`, [
      sensor.channel,
      JSON.stringify({ id_sensor: rowId, valor: 3.5, tiempo_sensor: '2025-05-01T00:00:00' }),
    ]);
    await admin.query(
      `INSERT INTO ${S}.dead_letters (kind, pump, channel, payload, reason) VALUES ('notification', 'A', 'x', '{}', 'not_json: test')`,
    );

    const m = new Monitor({ config, logger: pino({ level: 'silent' }) });
    cleanups.push(() => m.stop(1_000));
    await m.start();

    const versions = await admin.query<{ version: number }>(
      `SELECT version FROM ${S}.schema_migrations ORDER BY version`,
    );
    expect(versions.rows.map((r) => r.version)).toEqual(MIGRATIONS.map((x) => x.version));
    await waitFor('the pending vector and the deferred post delivered', () => {
      const vector = backend.requests.filter(
        (r) => r.status === 200 && r.idempotencyKey === 'vec-A-legacy-pending',
      );
      const post = backend.requests.filter(
        (r) => r.status === 200 && r.path === `/sensores${sensor.endpoint}` && r.body.id_sensor === rowId,
      );
      return vector.length === 1 && post.length === 1;
    });
    expect(backend.requests.find((r) => r.idempotencyKey === 'vec-A-legacy-pending')?.body).toEqual(body);
    await waitFor('both recorded', async () => {
      const { rows } = await admin.query<{ p: number; d: number }>(
        `SELECT (SELECT count(*)::int FROM ${S}.outbox WHERE status = 'pending') AS p,
                (SELECT count(*)::int FROM ${S}.deferred_posts) AS d`,
      );
      return rows[0]?.p === 0 && rows[0]?.d === 0;
    });
    const { rows: dl } = await admin.query<{ n: number }>(`SELECT count(*)::int AS n FROM ${S}.dead_letters`);
    expect(dl[0]?.n).toBe(1);
    await waitFor(
      'the rebuilt legacy vector recognised',
      () => (m.status().pumps.A as { vectors_suppressed: number }).vectors_suppressed === 1,
    );
    expect(backend.requests.filter((r) => r.path === '/sensores/predecir-bomba')).toHaveLength(1);
    const { rows: nos } = await admin.query<{ n: number }>(
      `SELECT count(DISTINCT table_no)::int AS n FROM ${S}.checkpoints WHERE table_no IS NOT NULL`,
    );
    expect(nos[0]?.n).toBe(35);
    // Version 4: each legacy row (pump '') was taken over by its table's one reader, number kept.
    const { rows: readers } = await admin.query<{ legacy: number; n: number }>(
      `SELECT count(*) FILTER (WHERE pump = '')::int AS legacy, count(*)::int AS n FROM ${S}.checkpoints`,
    );
    expect(readers[0]).toEqual({ legacy: 0, n: 35 });
  });

  for (const n of [1, 2, 3, 4] as const) {
    it(`migrates a version-${n} installation to the current version: the schema a fresh installation gets, and the engine delivers on it`, async () => {
      const { db, admin, config, backend } = await setup(`migrate_from_v${n}`);
      await installVersion(admin, config, n);
      const client = new pg.Client({ connectionString: db.url });
      await client.connect();
      try {
        expect(await schemaVersion(client)).toBe(n === 1 ? 0 : n);
        // Version 1 recorded no version: every migration runs, the first one over its own tables.
        expect(await runMigrations(client)).toEqual(
          MIGRATIONS.map((m) => m.version).filter((v) => v > (n === 1 ? 0 : n)),
        );
        expect(await schemaVersion(client)).toBe(SCHEMA_VERSION);
        expect(await runMigrations(client)).toEqual([]);
      } finally {
        await client.end();
      }
      // The same tables, columns, indexes and constraints as a database migrated from nothing.
      const fresh = await setup(`migrate_fresh_v${n}`);
      const c2 = new pg.Client({ connectionString: fresh.db.url });
      await c2.connect();
      try {
        await runMigrations(c2);
      } finally {
        await c2.end();
      }
      expect(await catalog(admin)).toEqual(await catalog(fresh.admin));

      // The engine starts on the migrated schema and delivers a whole timestamp of each pump.
      const m = new Monitor({ config, logger: pino({ level: 'silent' }) });
      cleanups.push(() => m.stop(1_000));
      await m.start();
      for (const p of config.pumps) {
        const c = await admin.connect();
        try {
          await c.query('BEGIN');
          for (const [i, s] of p.sensors.entries()) {
            await c.query(
              `INSERT INTO ${quoteIdent(s.table)} (tiempo_sensor, valor_sensor) VALUES ('2025-06-01T00:00:00', $1)`,
              [10 + i],
            );
          }
          await c.query('COMMIT');
        } finally {
          c.release();
        }
      }
      await waitFor('a vector of each pump delivered', () =>
        config.pumps.every((p) => backend.answered(`${p.pathPrefix}${p.unifiedPath}`).length === 1),
      );
    });
  }

  it('two replicas upgrading together apply each migration once', async () => {
    const { db, admin, config } = await setup('migrate_race');
    await installVersion(admin, config, 1);
    const clients = await Promise.all([0, 1, 2].map(() => new pg.Client({ connectionString: db.url })));
    for (const c of clients) await c.connect();
    try {
      const applied = await Promise.all(clients.map((c) => runMigrations(c)));
      expect(applied.flat().sort()).toEqual(MIGRATIONS.map((x) => x.version));
      expect(await schemaVersion(clients[0] as pg.Client)).toBe(SCHEMA_VERSION);
    } finally {
      for (const c of clients) await c.end();
    }
  });

  it('refuses a schema newer than it knows, naming both versions', async () => {
    const { db, admin } = await setup('migrate_newer');
    const client = new pg.Client({ connectionString: db.url });
    await client.connect();
    try {
      await runMigrations(client);
      await admin.query(`INSERT INTO ${S}.schema_migrations (version, name) VALUES ($1, 'from the future')`, [
        SCHEMA_VERSION + 1,
      ]);
      await expect(runMigrations(client)).rejects.toThrow(
        `schema is at version ${SCHEMA_VERSION + 1}, but this pump-monitor knows versions up to ${SCHEMA_VERSION}`,
      );
    } finally {
      await client.end();
    }
  });
});
