import { existsSync } from 'node:fs';
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Monitor } from '../../src/engine/monitor.js';
import { replicationNames } from '../../src/source/replication/setup.js';
import { readSlot } from '../../src/store/replication.js';
import { TRIGGER_NAME } from '../../src/store/schema.js';
import { type EmbeddedPostgres, startEmbeddedPostgres } from '../../src/tools/postgres/embedded.js';
import { type Harness, harness, insertTimestamp } from '../helpers/engine.js';
import { expectExactlyOnce } from '../helpers/ledger.js';
import { waitFor } from '../helpers/wait.js';

/** Debian's PostgreSQL 15 with its wal2json package (scripts/ensure-test-tools.sh installs it). */
const PG15 = '/usr/lib/postgresql/15';

let root: string;
let server: EmbeddedPostgres | undefined;
let h: Harness;

beforeAll(async () => {
  if (!existsSync(path.join(PG15, 'lib', 'wal2json.so'))) {
    throw new Error(
      `no wal2json for the system PostgreSQL (${PG15}/lib/wal2json.so): run scripts/ensure-test-tools.sh (apt-get install postgresql-15-wal2json)`,
    );
  }
  root = await mkdtemp(path.join(tmpdir(), 'pump-monitor-test-w2j-'));
  await chmod(root, 0o755);
  server = await startEmbeddedPostgres({
    dataDir: path.join(root, 'data'),
    installDir: PG15,
    postgresFlags: ['-c', 'wal_level=logical'],
  });
  // migrate (SOURCE=replication) takes the triggers off and creates the wal2json slot, as a superuser may.
  h = await harness(
    'w2j',
    { SOURCE: 'replication', REPLICATION_PLUGIN: 'wal2json' },
    { ownBackendB: true, server: server.url },
  );
}, 120_000);

afterAll(async () => {
  await h?.close();
  await server?.stop();
  if (root) await rm(root, { recursive: true, force: true });
});

async function exactlyOnce(monitors: Monitor[] = [h.monitor]) {
  const c = await h.ledger().settle({ admin: h.admin, monitors, timeoutMs: 30_000 });
  expectExactlyOnce(c);
  return c;
}

describe('SOURCE=replication on wal2json (Debian PostgreSQL 15)', () => {
  it('delivers every reading and vector once from a wal2json slot, with no trigger, and confirms it', async () => {
    const slot = replicationNames(h.config.source, h.db.name).slot;
    expect((await readSlot(h.admin, slot))?.plugin).toBe('wal2json');
    const { rows } = await h.admin.query<{ n: number }>(
      'SELECT count(*)::int AS n FROM pg_trigger WHERE tgname = $1',
      [TRIGGER_NAME],
    );
    expect(rows[0]?.n).toBe(0);
    await h.startMonitor();
    // Committed before the engine ran: the slot and the start's catch-up both have them; one each.
    await insertTimestamp(h.admin, h.pumps.A, '2025-05-01T10:00:00');
    await waitFor('streaming', () => h.monitor.units.replication?.isStreaming === true);
    await insertTimestamp(h.admin, h.pumps.B, '2025-05-01T10:00:00');
    await insertTimestamp(h.admin, h.pumps.A, '2025-05-01T10:00:01', {
      fields: h.pumps.A.sensors.slice(0, 16).map((s) => s.field),
    });
    const c = await exactlyOnce();
    expect(c.readings).toBe(20 + 15 + 16);
    expect(h.monitor.units.replication?.rows).toBeGreaterThanOrEqual(15 + 16);
    const { rows: w } = await h.admin.query<{ l: string }>('SELECT pg_current_wal_lsn()::text AS l');
    await waitFor('the slot confirmed', async () => {
      const s = await readSlot(h.admin, slot);
      const [a, b] = [s?.confirmed, w[0]?.l].map((x) => {
        const [hi, lo] = (x as string).split('/');
        return (BigInt(`0x${hi}`) << 32n) | BigInt(`0x${lo}`);
      });
      return (a as bigint) >= (b as bigint);
    });
  });

  it('resumes from the slot after a restart', async () => {
    await h.monitor.stop(1_000);
    await insertTimestamp(h.admin, h.pumps.B, '2025-05-01T10:00:02');
    await h.startMonitor();
    await insertTimestamp(h.admin, h.pumps.A, '2025-05-01T10:00:03');
    await exactlyOnce();
  });
});
