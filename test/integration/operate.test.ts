import { userInfo } from 'node:os';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { retryDeadLetters } from '../../src/operate/dead-letters.js';
import { replay } from '../../src/operate/replay.js';
import { createPool, quoteIdent } from '../../src/store/db.js';
import { listDeadLetters } from '../../src/store/dead-letters.js';
import { insertReplayVectors } from '../../src/store/outbox.js';
import { ENGINE_SCHEMA } from '../../src/store/schema.js';
import { type CliRun, runCli } from '../helpers/child.js';
import { type Harness, harness, insertTimestamp, testEnv } from '../helpers/engine.js';
import type { RecordedRequest } from '../helpers/fake-backend.js';
import { type PrivateServer, startPrivateServer } from '../helpers/private-server.js';
import { waitFor } from '../helpers/wait.js';

/** The operator commands against a running engine: dead letters listed, retried and discarded; replays. */

const S = ENGINE_SCHEMA;
let h: Harness;
let pool: ReturnType<typeof createPool>;
// A server of this file's own: the replay's settled rows are judged against the server's oldest running
// transaction, and one test keeps a transaction open on purpose, which would hold other files' checkpoints.
let server: PrivateServer | undefined;

beforeAll(async () => {
  server = await startPrivateServer();
  h = await harness('operate', {}, { server: server.url });
  await h.startMonitor();
  pool = createPool(h.config.database, 'operate-test', 3);
});
afterAll(async () => {
  await pool?.end();
  await h?.close();
  await server?.stop();
});

/** `pump-monitor …` as a child process, from the sources, against the test database and backend. */
function cli(args: string[]): Promise<CliRun> {
  return runCli(args, testEnv(h.db, h.backend));
}

const ctx = () => ({ pool, pumps: h.config.pumps, by: 'test-operator' });

/** 200 answers per per-sensor path and row id. */
function postsDelivered(): Map<string, number> {
  const out = new Map<string, number>();
  for (const r of h.backend.requests) {
    if (r.status !== 200 || r.path.includes('predecir')) continue;
    const k = `${r.path} ${r.body.id_sensor}`;
    out.set(k, (out.get(k) ?? 0) + 1);
  }
  return out;
}

/** 200 answers per unified path and body (its fields in name order). */
function vectorsDelivered(match: (r: RecordedRequest) => boolean = () => true): Map<string, number> {
  const out = new Map<string, number>();
  for (const r of h.backend.requests) {
    if (r.status !== 200 || !r.path.includes('predecir') || !match(r)) continue;
    const sorted = Object.fromEntries(Object.entries(r.body).sort(([a], [b]) => a.localeCompare(b)));
    const k = `${r.path} ${JSON.stringify(sorted)}`;
    out.set(k, (out.get(k) ?? 0) + 1);
  }
  return out;
}

async function count(sql: string, params: unknown[] = []): Promise<number> {
  const { rows } = await h.admin.query<{ n: number }>(`SELECT count(*)::int AS n FROM ${sql}`, params);
  return rows[0]?.n ?? -1;
}

describe('dead letters', () => {
  it('lists what was rejected, retries it through the normal path once the backend is fixed, and discards', async () => {
    const A = h.pumps.A;
    const B = h.pumps.B;
    // The backend rejects two readings of one timestamp (404) and the vector of another (422).
    const broken = { posts: true, vector: true };
    h.backend.behaviour = (r) => {
      const unified = r.path.includes('predecir');
      if (broken.vector && unified && r.body.corriente_motor === 7) return { status: 422 };
      if (broken.posts && !unified && (r.body.valor === 901 || r.body.valor === 902)) return { status: 404 };
      return undefined;
    };
    const [f0, f1] = A.sensors.map((s) => s.field);
    const idsT1 = await insertTimestamp(h.admin, A, '2025-03-01T00:00:01', {
      value: (f) => (f === f0 ? 901 : f === f1 ? 902 : 50),
    });
    const idsT2 = await insertTimestamp(h.admin, A, '2025-03-01T00:00:02', { value: () => 7 });
    // A notification that names no row, and a real row of pump B whose valor is null.
    const bChannel = B.sensors[0]?.channel as string;
    const bTable = B.sensors[0]?.table as string;
    await h.admin.query('SELECT pg_notify($1, $2)', [bChannel, 'not json at all']);
    const idsB = await insertTimestamp(h.admin, B, '2025-03-01T00:00:03', {
      value: (f) => (f === B.sensors[0]?.field ? null : 60),
    });
    const nullRow = idsB[0] as number;
    await waitFor('five dead letters', async () => (await count(`${S}.dead_letters`)) === 5);

    const listed = await cli(['dead-letters', 'list', '--json']);
    expect(listed.stderr).toBe('');
    expect(listed.code).toBe(0);
    const { total, dead_letters: letters } = JSON.parse(listed.stdout) as {
      total: number;
      dead_letters: {
        id: number;
        kind: string;
        reason: string;
        response_status: number | null;
        outbox_id: number | null;
        payload: string;
        status: string;
      }[];
    };
    expect(total).toBe(5);
    const byKind = (k: string) => letters.filter((l) => l.kind === k);
    expect(byKind('sensor_post').map((l) => l.response_status)).toEqual([404, 404]);
    expect(byKind('vector')).toHaveLength(1);
    expect(byKind('vector')[0]).toMatchObject({ response_status: 422 });
    expect(byKind('vector')[0]?.outbox_id).toBeGreaterThan(0);
    expect(
      byKind('notification')
        .map((l) => l.reason.split(':')[0])
        .sort(),
    ).toEqual(['not_json', 'valor_null']);
    expect(letters.every((l) => l.status === 'open')).toBe(true);
    const notJson = byKind('notification').find((l) => l.reason.startsWith('not_json'))?.id as number;
    const post901 = byKind('sensor_post').find((l) => l.payload.includes('"valor":901'))?.id as number;

    // The table form names the reasons and the backend's answers.
    const table = await cli(['dead-letters', 'list', '--kind', 'sensor_post']);
    expect(table.stderr).toBe('');
    expect(table.stdout).toContain('404');
    expect(table.stdout).toContain('2 open dead letters');

    // The payload that names no row cannot be retried: said per row.
    const [refused] = await retryDeadLetters(ctx(), [notJson]);
    expect(refused).toMatchObject({ result: 'refused' });
    expect(refused?.detail).toContain('names no row');

    // A retry that fails again comes back as a new dead letter: nothing is lost.
    broken.vector = false;
    const [again] = await retryDeadLetters(ctx(), [post901]);
    expect(again?.result).toBe('retried');
    await waitFor(
      'the failed retry back as a dead letter',
      async () => (await count(`${S}.dead_letters`)) === 6,
      30_000,
    );

    // The null row is fixed in the table without a notification: only a retry of its letter posts it.
    await h.admin.query(`ALTER TABLE ${quoteIdent(bTable)} DISABLE TRIGGER pump_monitor_notify`);
    await h.admin.query(`UPDATE ${quoteIdent(bTable)} SET valor_sensor = 61 WHERE id = $1`, [nullRow]);
    await h.admin.query(`ALTER TABLE ${quoteIdent(bTable)} ENABLE TRIGGER pump_monitor_notify`);

    broken.posts = false;
    const discarded = await cli([
      'dead-letters',
      'discard',
      String(notJson),
      '--note',
      'garbage on the channel',
    ]);
    expect(discarded.code).toBe(0);
    expect(discarded.stdout).toContain('1 discarded, 0 refused');
    // No filter: every open letter; said in one line and refused until --all says it is meant.
    const unfiltered = await cli(['dead-letters', 'retry', '--all-matching']);
    expect(unfiltered.code).toBe(2);
    expect(unfiltered.stderr.trim().split('\n')).toHaveLength(1);
    expect(unfiltered.stderr).toContain('add --all');
    const retried = await cli(['dead-letters', 'retry', '--all-matching', '--all']);
    expect(retried.stdout).toContain('4 retried, 0 refused');
    expect(retried.code).toBe(0);

    // Each reading and each vector arrived once.
    const postPath = (pump: typeof A, i: number) => `${pump.pathPrefix}${pump.sensors[i]?.endpoint}`;
    const expectedPosts = [
      ...idsT1.map((id, i) => `${postPath(A, i)} ${id}`),
      ...idsT2.map((id, i) => `${postPath(A, i)} ${id}`),
      `${postPath(B, 0)} ${nullRow}`,
    ];
    await waitFor(
      'every reading delivered',
      () => {
        const got = postsDelivered();
        return expectedPosts.every((k) => got.has(k));
      },
      30_000,
    );
    const bodyT2 = Object.fromEntries(
      A.sensors.map((s) => [s.field, 7]).sort(([a], [b]) => String(a).localeCompare(String(b))),
    );
    await waitFor('the rejected vector delivered', () =>
      vectorsDelivered().has(`${A.pathPrefix}${A.unifiedPath} ${JSON.stringify(bodyT2)}`),
    );
    await new Promise((r) => setTimeout(r, 1_000));
    const got = postsDelivered();
    for (const k of expectedPosts) expect(got.get(k), k).toBe(1);
    const vectors = vectorsDelivered((r) => r.path.endsWith('predecir-bomba'));
    expect([...vectors.values()]).toEqual([1, 1]);

    // Handled letters are hidden by default, shown with --all, and a second retry is refused.
    expect((await listDeadLetters(pool, {}, 50)).total).toBe(0);
    const all = await listDeadLetters(pool, { all: true }, 50);
    expect(all.rows.map((l) => l.status).sort()).toEqual([
      'discarded',
      'retried',
      'retried',
      'retried',
      'retried',
      'retried',
    ]);
    expect(all.rows.find((l) => l.id === notJson)).toMatchObject({
      handledBy: userInfo().username,
      handledNote: 'garbage on the channel',
    });
    const second = await retryDeadLetters(ctx(), [post901]);
    expect(second[0]?.result).toBe('refused');
    expect(second[0]?.detail).toContain('already retried');
    const secondCli = await cli(['dead-letters', 'retry', String(post901)]);
    expect(secondCli.code).toBe(1);
    expect(secondCli.stdout).toContain('already retried');
  });
});

describe('replay', () => {
  const A = () => h.pumps.A;
  const tiempos = [
    '2025-04-01T00:00:01',
    '2025-04-01T00:00:02',
    '2025-04-01T00:00:03',
    '2025-04-01T00:00:04',
  ];
  let from = '';
  let to = '';

  async function dbNow(): Promise<string> {
    const { rows } = await h.admin.query<{ t: string }>('SELECT localtimestamp::text AS t');
    return rows[0]?.t as string;
  }

  async function liveRow(tiempo: string, status = 'sent') {
    const { rows } = await h.admin.query<{ body: Record<string, number> }>(
      `SELECT body FROM ${S}.outbox WHERE pump = 'A' AND tiempo_sensor = $1 AND replay_id IS NULL AND status = $2`,
      [tiempo, status],
    );
    return rows[0];
  }

  beforeAll(async () => {
    h.backend.behaviour = () => undefined;
    from = await dbNow();
    const fields = A().sensors.map((s) => s.field);
    for (const [k, t] of tiempos.entries()) {
      await insertTimestamp(h.admin, A(), t, { value: (f) => 300 + k * 10 + fields.indexOf(f) });
      await waitFor(`the live vector of ${t}`, async () => (await liveRow(t)) !== undefined);
    }
    // At the threshold (filled from recent values) and below it (dropped).
    await insertTimestamp(h.admin, A(), '2025-04-01T00:00:05', {
      fields: fields.slice(0, 16),
      value: () => 5,
    });
    await waitFor('the filled live vector', async () => (await liveRow('2025-04-01T00:00:05')) !== undefined);
    await insertTimestamp(h.admin, A(), '2025-04-01T00:00:06', {
      fields: fields.slice(0, 10),
      value: () => 6,
    });
    await waitFor(
      'the dropped group',
      async () => (await liveRow('2025-04-01T00:00:06', 'dropped')) !== undefined,
    );
    to = await dbNow();
    // A replay reads only rows the engine has dealt with: those at or below the saved checkpoints.
    await waitFor('the checkpoints past the range', async () => {
      const behind = await Promise.all(
        A().sensors.map((s) =>
          count(
            `${quoteIdent(s.table)} t WHERE t.id > (SELECT last_id FROM ${S}.checkpoints WHERE table_name = $1)`,
            [s.table],
          ),
        ),
      );
      return behind.every((n) => n === 0);
    });
  });

  const replayKeys = async (id: number) => {
    const { rows } = await h.admin.query<{ k: string; t: string; body: Record<string, number> }>(
      `SELECT idempotency_key AS k, tiempo_sensor AS t, body FROM ${S}.outbox WHERE replay_id = $1 ORDER BY id`,
      [id],
    );
    return rows;
  };

  it('--dry-run prints the counts and changes nothing', async () => {
    const before = await Promise.all(
      [`${S}.outbox`, `${S}.deferred_posts`, `${S}.replays`].map((t) => count(t)),
    );
    const r = await cli([
      'replay',
      '--pump',
      'A',
      '--from',
      from,
      '--to',
      to,
      '--posts',
      '--dry-run',
      '--json',
    ]);
    expect(r.stderr).toBe('');
    const out = JSON.parse(r.stdout);
    expect(out).toMatchObject({
      id: null,
      dry_run: true,
      counts: { vectors: 5, filled: 1, dropped: 1, posts: 106 },
    });
    const after = await Promise.all(
      [`${S}.outbox`, `${S}.deferred_posts`, `${S}.replays`].map((t) => count(t)),
    );
    expect(after).toEqual(before);
    const text = await cli(['replay', '--pump', 'A', '--from', from, '--to', to, '--dry-run']);
    expect(text.stdout).toContain('dry run for pump A: nothing was written');
    expect(text.stdout).toContain('vectors           5, 1 of them with fills');
  });

  it('rebuilds the range through the assembler and delivers each vector and post once, under replay keys; twice is two replays', async () => {
    const first = await cli(['replay', '--pump', 'A', '--from', from, '--to', to, '--posts', '--json']);
    expect(first.stderr).toBe('');
    expect(first.code).toBe(0);
    const one = JSON.parse(first.stdout);
    expect(one.counts).toEqual({
      rows: 106,
      vectors: 5,
      filled: 1,
      dropped: 1,
      late: 0,
      invalid: 0,
      posts: 106,
      unsettled: 0,
    });
    expect(one.inserted).toEqual({ vectors: 5, posts: 106 });
    const keys1 = await replayKeys(one.id);
    expect(keys1.map((k) => k.t)).toEqual([...tiempos, '2025-04-01T00:00:05']);
    for (const k of keys1) expect(k.k).toMatch(new RegExp(`^vec-A-[0-9a-f]{32}-replay-${one.id}$`));
    // The same rules give the same vectors: fills included.
    for (const k of keys1) expect(k.body).toEqual((await liveRow(k.t))?.body);

    // The second run goes through the library, paced to 4 rows a second.
    const started = Date.now();
    const two = await replay({
      pool,
      pump: A(),
      assembler: h.config.assembler,
      from,
      to,
      posts: false,
      dryRun: false,
      rate: 4,
      runBy: 'second-operator',
    });
    expect(Date.now() - started).toBeGreaterThanOrEqual(900);
    expect(two.counts).toMatchObject({ vectors: 5, dropped: 1, posts: 0 });
    const keys2 = await replayKeys(two.id as number);
    expect(new Set([...keys1, ...keys2].map((k) => k.k)).size).toBe(10);

    const delivered = async (keys: { k: string }[]) => {
      const by = h.backend.answeredByKey(() => true);
      return keys.every((k) => by.get(k.k) === 1);
    };
    await waitFor(
      'both runs delivered',
      async () => (await delivered(keys1)) && (await delivered(keys2)),
      30_000,
    );
    const postKey = new RegExp(`^rd-.+-replay-${one.id}$`);
    await waitFor(
      "the first run's posts delivered",
      () => [...h.backend.answeredByKey((r) => postKey.test(r.idempotencyKey ?? '')).keys()].length === 106,
      30_000,
    );
    // Nothing left to send: no pending vector, no deferred post, nothing queued.
    await waitFor('the engine quiescent', () =>
      h.ledger().quiescent({ admin: h.admin, monitors: [h.monitor] }),
    );
    const byKey = h.backend.answeredByKey(() => true);
    for (const k of [...keys1, ...keys2]) expect(byKey.get(k.k), k.k).toBe(1);
    const posts = h.backend.answeredByKey((r) => postKey.test(r.idempotencyKey ?? ''));
    expect(posts.size).toBe(106);
    expect([...posts.values()].every((n) => n === 1)).toBe(true);

    // Inserting a run's rows again (a retry after a lost answer) stores nothing.
    const { rows } = await h.admin.query(
      `SELECT pump, tiempo_sensor AS tiempo, idempotency_key AS key, body, filled, missing, members::text[] AS members, replay_id
         FROM ${S}.outbox WHERE replay_id = $1`,
      [one.id],
    );
    const again = await insertReplayVectors(
      pool,
      rows.map((r) => ({ ...r, members: r.members.map(Number), replayId: r.replay_id })),
    );
    expect(again).toBe(0);

    // Both runs are in the audit.
    const { rows: audit } = await h.admin.query(`SELECT * FROM ${S}.replays ORDER BY id`);
    expect(audit).toHaveLength(2);
    expect(audit[0]).toMatchObject({
      run_by: userInfo().username,
      pump: 'A',
      status: 'done',
      vectors: 5,
      vectors_filled: 1,
      dropped: 1,
      posts: 106,
      rows_read: 106,
      options: { posts: true, rate: null },
    });
    expect(audit[1]).toMatchObject({
      run_by: 'second-operator',
      status: 'done',
      vectors: 5,
      posts: 0,
      options: { posts: false, rate: 4 },
    });
    expect(audit[0].finished_at).toBeInstanceOf(Date);
  });

  it('leaves rows above the checkpoints to the engine', async () => {
    // A transaction that has written and stays open holds every checkpoint below rows committed after it.
    const holder = await h.admin.connect();
    try {
      await holder.query('BEGIN');
      await holder.query('CREATE TEMP TABLE hold_checkpoints (x int)');
      const table = A().sensors[0]?.table as string;
      await h.admin.query(
        `INSERT INTO ${quoteIdent(table)} (tiempo_ejecucion, tiempo_sensor, valor_sensor) VALUES ($1::timestamp, '2025-04-01T00:00:09', 9)`,
        [from],
      );
      const dry = await replay({
        pool,
        pump: A(),
        assembler: h.config.assembler,
        from,
        to,
        posts: true,
        dryRun: true,
        runBy: 'x',
      });
      expect(dry.counts).toMatchObject({ rows: 106, vectors: 5, dropped: 1, unsettled: 1 });
    } finally {
      await holder.query('ROLLBACK');
      holder.release();
    }
  });

  it('refuses a range that is not one, in one line', async () => {
    const r = await cli(['replay', '--pump', 'A', '--from', 'yesterday-ish', '--to', to]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('--from: got "yesterday-ish"');
    const back = await cli(['replay', '--pump', 'A', '--from', to, '--to', from]);
    expect(back.code).toBe(2);
    expect(back.stderr).toContain('is not before --to');
  });
});
