import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ENGINE_SCHEMA } from '../../src/store/schema.js';
import { type CliRun, runCli } from '../helpers/child.js';
import { type Harness, harness, insertTimestamp, testEnv } from '../helpers/engine.js';
import { waitFor } from '../helpers/wait.js';

/**
 * Issue 19, "operator footguns": a bulk action with no filter asks first, and a retry never re-posts a
 * reading whose post is on record as answered unless --again says so.
 */

const S = ENGINE_SCHEMA;
let h: Harness;

beforeAll(async () => {
  h = await harness('operate_guards');
  // Retention would remove the post ledger's rows behind the checkpoints: kept out of this test's way.
  await h.startMonitor({ RETENTION_INTERVAL_MS: '3600000' });
});
afterAll(async () => {
  await h?.close();
});

function cli(args: string[]): Promise<CliRun> {
  return runCli(args, testEnv(h.db, h.backend));
}

async function letterStatuses(): Promise<Map<number, string>> {
  const { rows } = await h.admin.query<{ id: string; status: string }>(
    `SELECT id, status FROM ${S}.dead_letters ORDER BY id`,
  );
  return new Map(rows.map((r) => [Number(r.id), r.status]));
}

/** 200 answers of per-sensor posts for one row id on one path. */
function answered(path: string, id: number): number {
  return h.backend.requests.filter(
    (r) => r.status === 200 && r.path === path && r.body.id_sensor === id && !r.path.includes('predecir'),
  ).length;
}

describe('--all-matching with no filter', () => {
  it('retry and discard refuse in one line, touching nothing, until --all is given', async () => {
    const A = h.pumps.A;
    h.backend.behaviour = (r) => (r.body.valor === 777 ? { status: 404 } : undefined);
    await insertTimestamp(h.admin, A, '2025-05-01T00:00:01', { value: () => 777 });
    const n = A.sensors.length;
    await waitFor('a dead letter per sensor', async () => (await letterStatuses()).size === n, 30_000);
    h.backend.behaviour = () => undefined;

    for (const verb of ['retry', 'discard']) {
      const run = await cli(['dead-letters', verb, '--all-matching']);
      expect(run.code, run.stderr).toBe(2);
      expect(run.stdout).toBe('');
      expect(run.stderr.trim().split('\n')).toHaveLength(1);
      expect(run.stderr).toContain('--all-matching without --pump, --since, --reason or --kind');
      expect(run.stderr).toContain(
        verb === 'retry' ? 'retries every open dead letter' : 'discards every open dead letter',
      );
      expect(run.stderr).toContain('add --all');
      expect([...(await letterStatuses()).values()].every((s) => s === 'open')).toBe(true);
    }
    // A filter is enough, and so is --all.
    const filtered = await cli(['dead-letters', 'discard', '--all-matching', '--pump', 'B']);
    expect(filtered.code).toBe(0);
    expect(filtered.stdout).toContain('no dead letters matched');
    const all = await cli(['dead-letters', 'discard', '--all-matching', '--all', '--note', 'test']);
    expect(all.stdout).toContain(`${n} discarded, 0 refused`);
    expect(all.code).toBe(0);
    expect([...(await letterStatuses()).values()].every((s) => s === 'discarded')).toBe(true);
  });
});

describe('retry of a reading whose post is on record as answered', () => {
  it('is skipped and said so; --again re-posts it', async () => {
    const A = h.pumps.A;
    const sensor = A.sensors[0];
    if (!sensor) throw new Error('pump A has no sensor');
    const path = `${A.pathPrefix}${sensor.endpoint}`;
    h.backend.behaviour = (r) =>
      r.body.valor === 555 && !r.path.includes('predecir') ? { status: 404 } : undefined;
    const before = new Set((await letterStatuses()).keys());
    const [rowId] = await insertTimestamp(h.admin, A, '2025-05-01T00:00:02', {
      value: (f) => (f === sensor.field ? 555 : 50),
    });
    if (rowId === undefined) throw new Error('no row inserted');
    await waitFor(
      'the refusal as a dead letter',
      async () => (await letterStatuses()).size === before.size + 1,
      30_000,
    );
    const first = [...(await letterStatuses()).keys()].find((id) => !before.has(id)) as number;
    // A second letter for the same reading, as a replica that crashed mid-post and posted it again writes.
    const { rows } = await h.admin.query<{ id: string }>(
      `INSERT INTO ${S}.dead_letters (kind, pump, channel, payload, reason, response_status, idempotency_key)
       SELECT kind, pump, channel, payload, reason, response_status, idempotency_key
         FROM ${S}.dead_letters WHERE id = $1 RETURNING id`,
      [first],
    );
    const second = Number(rows[0]?.id);
    h.backend.behaviour = () => undefined;

    // The first letter's retry is answered.
    const retried = await cli(['dead-letters', 'retry', String(first)]);
    expect(retried.stdout).toContain('1 retried, 0 refused');
    await waitFor('the retried post answered', () => answered(path, rowId) === 1, 30_000);
    await waitFor('its deferred post removed', async () => {
      const r = await h.admin.query(`SELECT 1 FROM ${S}.deferred_posts`);
      return r.rowCount === 0;
    });

    // The second letter names a reading on record as answered: skipped, said why, nothing posted.
    const skipped = await cli(['dead-letters', 'retry', String(second)]);
    expect(skipped.code).toBe(0);
    expect(skipped.stdout).toContain('skipped');
    expect(skipped.stdout).toContain('0 retried, 0 refused, 1 skipped');
    expect(skipped.stdout).toContain('on record as answered');
    expect(skipped.stdout).toContain('--again');
    const json = await cli(['dead-letters', 'retry', String(second), '--json']);
    expect(JSON.parse(json.stdout)).toMatchObject({ retried: 0, skipped: 1, refused: 0 });
    // Time enough for a post the engine would have picked up (it looks for deferred posts every 0.5 s).
    await new Promise((r) => setTimeout(r, 2_000));
    expect(answered(path, rowId)).toBe(1);
    expect((await letterStatuses()).get(second)).toBe('open');

    // --again: the operator means it.
    const again = await cli(['dead-letters', 'retry', String(second), '--again']);
    expect(again.stdout).toContain('1 retried, 0 refused');
    await waitFor('re-posted with --again', () => answered(path, rowId) === 2, 30_000);
    expect((await letterStatuses()).get(second)).toBe('retried');
  });

  it('a notification letter naming a row whose post is on record as answered: skipped; --again re-posts the row', async () => {
    const A = h.pumps.A;
    const sensor = A.sensors[1];
    if (!sensor) throw new Error('pump A has a second sensor');
    const path = `${A.pathPrefix}${sensor.endpoint}`;
    h.backend.behaviour = () => undefined;
    const ids = await insertTimestamp(h.admin, A, '2025-05-01T00:00:03', { value: () => 60 });
    const rowId = ids[1] as number;
    await waitFor('the row posted and answered', () => answered(path, rowId) === 1, 30_000);
    await waitFor('its post on record in the ledger', async () => {
      const r = await h.admin.query(
        `SELECT 1 FROM ${S}.sensor_posts WHERE table_name = $1 AND row_id = $2 AND pump = 'A'`,
        [sensor.table, rowId],
      );
      return r.rowCount === 1;
    });
    // A garbled notification naming that row: a dead letter of its own.
    const before = new Set((await letterStatuses()).keys());
    await h.admin.query('SELECT pg_notify($1, $2)', [
      sensor.channel,
      JSON.stringify({ id_sensor: rowId, valor: null, tiempo_sensor: '2025-05-01T00:00:03' }),
    ]);
    await waitFor('the notification letter', async () => (await letterStatuses()).size === before.size + 1);
    const letter = [...(await letterStatuses()).keys()].find((id) => !before.has(id)) as number;

    const skipped = await cli(['dead-letters', 'retry', String(letter)]);
    expect(skipped.code, skipped.stdout + skipped.stderr).toBe(0);
    expect(skipped.stdout).toContain('0 retried, 0 refused, 1 skipped');
    expect(skipped.stdout).toContain(
      `row ${rowId} of ${sensor.table} has its per-sensor post on record as answered`,
    );
    await new Promise((r) => setTimeout(r, 2_000));
    expect(answered(path, rowId)).toBe(1);

    const again = await cli(['dead-letters', 'retry', String(letter), '--again']);
    expect(again.stdout).toContain('1 retried, 0 refused');
    await waitFor('the row re-posted with --again', () => answered(path, rowId) === 2, 30_000);
  });
});
