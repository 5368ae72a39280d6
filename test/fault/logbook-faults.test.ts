import { afterEach, describe, expect, it } from 'vitest';
import { buildServer } from '../../src/http/server.js';
import { ENGINE_SCHEMA } from '../../src/store/schema.js';
import { freePort } from '../../src/tools/free-port.js';
import { BATCHES_WAITING, LEDGER_BATCH } from '../helpers/bounds.js';
import { runCli, spawnListener } from '../helpers/child.js';
import { type Cleanup, runCleanups } from '../helpers/cleanup.js';
import { type Harness, harness, testEnv } from '../helpers/engine.js';
import {
  countLogbook,
  LOGBOOK_ID,
  LOGBOOK_TABLES,
  type LogbookEntry,
  logbookFactsAtKill,
  logbookKey,
  logbookQuiet,
} from '../helpers/logbook-facts.js';
import { LOGBOOK_PATH } from '../helpers/spec-oracle.js';
import { pause, waitFor } from '../helpers/wait.js';

/**
 * The operators' logbook stream of plant-2026-03 (PUMPS=bitacoras) under faults that break real things: a
 * `pump-monitor listen` SIGKILLed mid-stream, a classifier that refuses an entry past the retry budget,
 * a classifier slower than LOGBOOK_TIMEOUT_MS, and a row gone by the time its text is read. Every entry
 * is counted at the fake backend against the rows the test wrote (body, key, path).
 */

const PLANT = { PUMPS_PROFILE: 'plant-2026-03', PUMPS: LOGBOOK_ID };
/** The logbook lane's workers (docs/reliability.md: two entries in flight per logbook). */
const LOGBOOK_IN_FLIGHT = 2;

const cleanups: Cleanup[] = [];
afterEach(() => runCleanups(cleanups));

async function setup(prefix: string): Promise<Harness> {
  const h = await harness(prefix, PLANT);
  cleanups.push(() => h.close());
  return h;
}

async function write(h: Harness, tabla: 'a' | 'b', text: string): Promise<LogbookEntry> {
  const table = LOGBOOK_TABLES[tabla];
  const { rows } = await h.admin.query<{ id: number }>(
    `INSERT INTO ${table} (bitacora, tiempo_ejecucion) VALUES ($1, now()) RETURNING id`,
    [text],
  );
  return { table, tabla, id: rows[0]?.id as number, text };
}

const answers = (h: Harness, e: LogbookEntry) =>
  h.backend.requests.filter((r) => r.path === LOGBOOK_PATH && r.idempotencyKey === logbookKey(e.table, e.id));

async function letters(h: Harness, where: string, params: unknown[]) {
  const { rows } = await h.admin.query<{
    id: number;
    kind: string;
    pump: string;
    reason: string;
    status: string;
    response_status: number | null;
    idempotency_key: string | null;
  }>(
    `SELECT id::int AS id, kind, pump, reason, status, response_status, idempotency_key
       FROM ${ENGINE_SCHEMA}.dead_letters WHERE ${where} ORDER BY id`,
    params,
  );
  return rows;
}

async function recorded(h: Harness, e: LogbookEntry): Promise<number> {
  const { rows } = await h.admin.query<{ n: number }>(
    `SELECT count(*)::int AS n FROM ${ENGINE_SCHEMA}.sensor_posts WHERE pump = $1 AND table_name = $2 AND row_id = $3`,
    [LOGBOOK_ID, e.table, e.id],
  );
  return rows[0]?.n ?? 0;
}

async function ready(port: string): Promise<void> {
  await waitFor(
    `the listener on port ${port} ready`,
    async () => (await fetch(`http://127.0.0.1:${port}/readyz`).catch(() => undefined))?.status === 200,
    30_000,
  );
}

function logbookStatus(h: Harness) {
  return (h.monitor.status() as unknown as { logbooks: Record<string, Record<string, number>> }).logbooks[
    LOGBOOK_ID
  ] as Record<string, number>;
}

describe('logbook stream under faults', { timeout: 180_000 }, () => {
  it('a listener SIGKILLed mid-stream: every entry classified, resends only of entries unrecorded at the kill', async () => {
    const h = await setup('lb_sigkill');
    // A classifier that takes a little while, so the stream is still flowing at the kill.
    h.backend.behaviour = (r) => (r.path === LOGBOOK_PATH ? { delayMs: 15 } : undefined);
    const env = {
      ...testEnv(h.db, h.backend, PLANT),
      PORT: String(await freePort()),
      LOG_LEVEL: 'warn',
      LOG_FORMAT: 'json',
    };
    const first = spawnListener(env);
    cleanups.push(async () => void first.proc.kill('SIGKILL'));
    await ready(env.PORT);

    const total = 400;
    const entries: LogbookEntry[] = [];
    let writing = true;
    const writer = (async () => {
      for (let i = 0; i < total; i++) {
        const tabla = i % 2 === 0 ? 'a' : 'b';
        entries.push(await write(h, tabla, `Turno ${i}: ronda en bomba ${tabla.toUpperCase()}, sin novedad`));
        // Paces the writer only; nothing is concluded from it.
        if (i % 10 === 9) await pause(20);
      }
      writing = false;
    })();
    await waitFor(
      'the first listener classifying entries',
      () => h.backend.requests.filter((r) => r.path === LOGBOOK_PATH && r.status === 200).length >= 80,
      60_000,
    );
    first.proc.kill('SIGKILL');
    expect(await first.exited).toBeNull();
    const kill = await logbookFactsAtKill(h.admin, h.backend);
    // The kill landed mid-stream: entries were still being written, and some were not classified yet.
    expect(writing, 'the writer was still writing at the kill').toBe(true);
    const classifiedAtKill = new Set(
      h.backend.requests
        .filter((r) => r.path === LOGBOOK_PATH && r.status === 200)
        .map((r) => r.idempotencyKey),
    ).size;
    expect(classifiedAtKill).toBeLessThan(total);

    const second = spawnListener(env);
    cleanups.push(async () => void second.proc.kill('SIGKILL'));
    await ready(env.PORT);
    await writer;
    await waitFor(
      'every entry classified',
      () => countLogbook(h.backend, entries, kill).missing.length === 0,
      90_000,
    );
    await logbookQuiet(`http://127.0.0.1:${env.PORT}`);
    // Every entry is on record, but for one the first listener settled (answered, and passed by its saved
    // checkpoint or slot position) and was killed before it wrote the record: such an entry was answered
    // once, before the kill, and the restart rightly did not send it again.
    const { rows } = await h.admin.query<{ k: string }>(
      `SELECT table_name || '|' || row_id AS k FROM ${ENGINE_SCHEMA}.sensor_posts WHERE pump = $1`,
      [LOGBOOK_ID],
    );
    const onRecord = new Set(rows.map((r) => r.k));
    const answered = (e: LogbookEntry) =>
      h.backend.requests.flatMap((r, i) =>
        r.path === LOGBOOK_PATH && r.status === 200 && r.idempotencyKey === logbookKey(e.table, e.id)
          ? [i < kill.cut ? 'before' : 'after']
          : [],
      );
    const unrecorded = entries.filter((e) => !onRecord.has(`${e.table}|${e.id}`));
    expect(unrecorded.map((e) => `${e.table}:${e.id} ${answered(e).join(',')}`)).toEqual(
      unrecorded.map((e) => `${e.table}:${e.id} before`),
    );
    expect(unrecorded.length).toBeLessThanOrEqual(LOGBOOK_IN_FLIGHT + BATCHES_WAITING * LEDGER_BATCH);
    second.proc.kill('SIGTERM');
    expect(await second.exited).toBe(0);

    const c = countLogbook(h.backend, entries, kill);
    console.log(
      `fault logbook-sigkill: ${classifiedAtKill} entries classified before the kill, ${kill.recorded.size} on record, ` +
        `unrecorded at the kill ${c.unrecordedAtKill}, sent again ${c.resent}, other repeats ${c.problems.length}, ` +
        `settled before the kill and never recorded ${unrecorded.length}`,
    );
    expect(c.missing).toEqual([]);
    expect(c.wrong).toEqual([]);
    expect(c.problems.slice(0, 8)).toEqual([]);
    expect(c.resent).toBeLessThanOrEqual(c.unrecordedAtKill);
    expect(c.unrecordedAtKill).toBeLessThanOrEqual(LOGBOOK_IN_FLIGHT + BATCHES_WAITING * LEDGER_BATCH);
    // Nothing but the logbook's path was called, and no dead letter was written.
    expect(h.backend.requests.filter((r) => r.path !== LOGBOOK_PATH)).toEqual([]);
    expect(await letters(h, 'true', [])).toEqual([]);
  });

  it('a classifier that refuses the route (401, 403) holds the entries, says so in /readyz, /status and /metrics, dead-letters nothing; fixed, each entry is classified once', async () => {
    const h = await setup('lb_route');
    const m = await h.startMonitor({ SENSOR_POST_MAX_ATTEMPTS: '3' });
    await waitFor('the logbook owned', () => logbookStatus(h)?.owned === (true as unknown as number));
    let refusal: number | undefined = 401;
    h.backend.behaviour = (r) =>
      refusal !== undefined && r.path === LOGBOOK_PATH ? { status: refusal } : undefined;
    const held = [await write(h, 'a', 'Arranque de la bomba A'), await write(h, 'b', 'Revisión de sellos')];
    // Refused again and again: far past the budget of 3, which a refusal does not spend.
    await waitFor('the entries refused past the retry budget', () =>
      held.every((e) => answers(h, e).filter((r) => r.status === 401).length >= 4),
    );
    expect(m.readiness()).toMatchObject({ ready: false });
    expect(m.readiness().reason).toContain(`logbook ${LOGBOOK_ID}: backend answered 401`);
    const route = () =>
      (
        m.status() as unknown as {
          logbooks: Record<string, { route_fault: { status: number; reason: string } | null }>;
        }
      ).logbooks[LOGBOOK_ID]?.route_fault;
    expect(route()).toMatchObject({ status: 401 });
    expect(route()?.reason).toContain('API_KEY');
    const app = await buildServer(m);
    cleanups.push(() => app.close());
    const metrics = (await app.inject({ method: 'GET', url: '/metrics' })).body;
    expect(metrics).toMatch(
      new RegExp(`pump_monitor_backend_route_refused\\{pump="${LOGBOOK_ID}",status="401"\\} 1`),
    );
    // Another refusal status is the same hold, named anew.
    refusal = 403;
    await waitFor('the 403 named', () => route()?.status === 403);
    expect(await letters(h, 'true', [])).toEqual([]);
    expect(held.map((e) => answers(h, e).some((r) => r.status === 200))).toEqual([false, false]);
    // The backend lets the key in again: each held entry is classified once, and the engine is ready.
    refusal = undefined;
    await waitFor('the held entries classified', () =>
      held.every((e) => answers(h, e).some((r) => r.status === 200)),
    );
    await waitFor('ready again', () => m.readiness().ready);
    expect(route()).toBeNull();
    for (const e of held) expect(answers(h, e).filter((r) => r.status === 200)).toHaveLength(1);
    expect(await letters(h, 'true', [])).toEqual([]);
    await waitFor(
      'both on record',
      async () =>
        (await recorded(h, held[0] as LogbookEntry)) + (await recorded(h, held[1] as LogbookEntry)) === 2,
    );
  });

  it('an exhausted retry budget gives a dead letter; `dead-letters retry` delivers it once', async () => {
    const h = await setup('lb_budget');
    await h.startMonitor({ SENSOR_POST_MAX_ATTEMPTS: '3', LOGBOOK_TIMEOUT_MS: '2000' });
    await waitFor('the logbook owned', () => logbookStatus(h)?.owned === (true as unknown as number));
    let refusing = true;
    const DOOMED = 'Vibración alta en el cojinete, se avisa a mantenimiento';
    h.backend.behaviour = (r) => (refusing && r.body.bitacora === DOOMED ? { status: 503 } : undefined);
    const doomed = await write(h, 'b', DOOMED);
    const doomedKey = logbookKey(doomed.table, doomed.id);
    await waitFor(
      'the dead letter',
      async () => (await letters(h, 'idempotency_key = $1', [doomedKey])).length === 1,
    );
    const [letter] = await letters(h, 'idempotency_key = $1', [doomedKey]);
    expect(letter).toMatchObject({ kind: 'logbook', pump: LOGBOOK_ID, status: 'open' });
    expect(letter?.reason).toMatch(/^gave up after 3 attempts/);
    expect(answers(h, doomed).map((r) => r.status)).toEqual([503, 503, 503]);
    // Settled as dead: on record, so a restart does not send it again either.
    await waitFor('the dead entry on record', async () => (await recorded(h, doomed)) === 1);
    // The lane goes on with the others while the letter waits.
    const other = await write(h, 'a', 'Cambio de filtro realizado');
    await waitFor('the next entry classified', () => answers(h, other).some((r) => r.status === 200));

    refusing = false;
    const cliEnv = { DATABASE_URL: h.db.url, ...PLANT, LOG_LEVEL: 'warn' };
    const run = await runCli(['dead-letters', 'retry', String(letter?.id), '--json'], cliEnv);
    expect(run.code, run.stderr).toBe(0);
    expect(JSON.parse(run.stdout)).toMatchObject({ outcomes: [{ id: letter?.id, result: 'retried' }] });
    await waitFor('sent again and classified', () => answers(h, doomed).some((r) => r.status === 200));
    await waitFor('the queued retry removed', async () => {
      const { rows } = await h.admin.query(`SELECT 1 FROM ${ENGINE_SCHEMA}.deferred_posts`);
      return rows.length === 0;
    });
    // A second retry of the same letter is refused: it was retried already, and nothing is queued.
    const again = await runCli(['dead-letters', 'retry', String(letter?.id), '--json'], cliEnv);
    expect(JSON.parse(again.stdout)).toMatchObject({ outcomes: [{ id: letter?.id, result: 'refused' }] });
    const { rows: queued } = await h.admin.query(`SELECT 1 FROM ${ENGINE_SCHEMA}.deferred_posts`);
    expect(queued).toEqual([]);
    // An entry written after the retry is classified: the lane read past the retry's turn.
    const marker = await write(h, 'b', 'Fin de turno');
    await waitFor('the marker classified', () => answers(h, marker).some((r) => r.status === 200));
    expect(answers(h, doomed).map((r) => r.status)).toEqual([503, 503, 503, 200]);
    expect(answers(h, doomed)[3]?.body).toEqual({ id: doomed.id, bitacora: doomed.text, tabla: 'b' });
    expect(await letters(h, 'idempotency_key = $1', [doomedKey])).toMatchObject([{ status: 'retried' }]);
    expect(await recorded(h, doomed)).toBe(1);
    expect(logbookStatus(h)).toMatchObject({ sent: 2 + 1, failed: 1 });
  });

  it('a classifier slower than LOGBOOK_TIMEOUT_MS: retried under the same key, then a dead letter naming the timeout', async () => {
    const h = await setup('lb_timeout');
    // HTTP_TIMEOUT_MS (the sensors') is far shorter: a logbook entry must wait for its own timeout.
    await h.startMonitor({
      SENSOR_POST_MAX_ATTEMPTS: '3',
      LOGBOOK_TIMEOUT_MS: '1500',
      HTTP_TIMEOUT_MS: '200',
    });
    await waitFor('the logbook owned', () => logbookStatus(h)?.owned === (true as unknown as number));
    const release: (() => void)[] = [];
    cleanups.push(async () => {
      for (const r of release) r();
    });
    // What the classifier does with each attempt of an entry, by the entry's text.
    const plan = new Map<string, ('hang' | number)[]>();
    const seen = new Map<string, number>();
    h.backend.behaviour = (r) => {
      const text = String(r.body.bitacora);
      const steps = plan.get(text);
      if (r.path !== LOGBOOK_PATH || !steps) return undefined;
      const n = seen.get(text) ?? 0;
      seen.set(text, n + 1);
      const step = steps[Math.min(n, steps.length - 1)];
      // Held until the test ends: the engine's timeout, not the backend, ends the attempt.
      if (step === 'hang') return { gate: new Promise<void>((r) => release.push(r)) };
      return { delayMs: step };
    };
    const keyOf = (e: LogbookEntry) => logbookKey(e.table, e.id);
    // 1) A slow answer within LOGBOOK_TIMEOUT_MS (well past HTTP_TIMEOUT_MS) is taken at the first attempt.
    plan.set('Clasificación lenta pero a tiempo', [600]);
    const s = await write(h, 'a', 'Clasificación lenta pero a tiempo');
    await waitFor('the slow entry classified', () => answers(h, s).some((r) => r.status === 200));
    expect(answers(h, s).map((r) => r.status)).toEqual([200]);

    // 2) The first attempt never answers: it times out and the entry is sent again under its own key.
    plan.set('Primera respuesta perdida', ['hang', 0]);
    const hung = await write(h, 'b', 'Primera respuesta perdida');
    await waitFor('the hung entry classified at its second attempt', () =>
      answers(h, hung).some((r) => r.status === 200),
    );
    expect(answers(h, hung).map((r) => r.status)).toEqual([0, 200]);
    expect(answers(h, hung).map((r) => r.idempotencyKey)).toEqual([keyOf(hung), keyOf(hung)]);

    // 3) Every attempt hangs: the budget runs out on timeouts, and the letter says so.
    plan.set('Nunca clasificada', ['hang']);
    const lost = await write(h, 'a', 'Nunca clasificada');
    await waitFor(
      'the timed-out entry dead-lettered',
      async () => (await letters(h, 'idempotency_key = $1', [keyOf(lost)])).length === 1,
      30_000,
    );
    const [letter] = await letters(h, 'idempotency_key = $1', [keyOf(lost)]);
    expect(letter?.kind).toBe('logbook');
    expect(letter?.reason).toMatch(/^gave up after 3 attempts: .*1500 ms/);
    expect(answers(h, lost).map((r) => r.status)).toEqual([0, 0, 0]);
    expect(logbookStatus(h)).toMatchObject({ sent: 2, failed: 1 });
    // Settled entries are recorded in batches: each is on record once its batch is written.
    for (const e of [s, hung, lost])
      await waitFor(`${logbookKey(e.table, e.id)} on record`, async () => (await recorded(h, e)) === 1);
  });

  it('a row gone between its notification and the reading of its text: a counted dead letter, nothing posted, nothing stalls', async () => {
    const h = await setup('lb_gone');
    await h.startMonitor({ LOGBOOK_TIMEOUT_MS: '2000' });
    await waitFor('the logbook owned', () => logbookStatus(h)?.owned === (true as unknown as number));
    // The trigger's NOTIFY is delivered at commit; the row it names was deleted in the same transaction,
    // so whenever the engine reads it, it is gone.
    const client = await h.admin.connect();
    let goneId: number;
    try {
      await client.query('BEGIN');
      const { rows } = await client.query<{ id: number }>(
        `INSERT INTO ${LOGBOOK_TABLES.a} (bitacora, tiempo_ejecucion) VALUES ('Entrada borrada', now()) RETURNING id`,
      );
      goneId = rows[0]?.id as number;
      await client.query(`DELETE FROM ${LOGBOOK_TABLES.a} WHERE id = $1`, [goneId]);
      await client.query('COMMIT');
    } finally {
      client.release();
    }
    await waitFor(
      'the notification dead-lettered',
      async () => (await letters(h, `kind = 'notification'`, [])).length === 1,
    );
    const [letter] = await letters(h, `kind = 'notification'`, []);
    expect(letter).toMatchObject({ pump: LOGBOOK_ID });
    expect(letter?.reason).toBe(`no_such_row: table ${LOGBOOK_TABLES.a} holds no row with id ${goneId}`);
    expect(logbookStatus(h)).toMatchObject({ invalid: 1 });
    // The stream goes on past it, and the checkpoint with it.
    const after = await write(h, 'a', 'Siguiente entrada');
    await waitFor('the next entry classified', () => answers(h, after).some((r) => r.status === 200));
    expect(
      h.backend.requests.filter((r) => r.idempotencyKey === logbookKey(LOGBOOK_TABLES.a, goneId)),
    ).toEqual([]);

    // An operator's retry reads the text from the row: a row deleted since its letter gives a letter again,
    // and nothing is sent.
    h.backend.behaviour = (r) => (r.path === LOGBOOK_PATH ? { status: 404 } : undefined);
    const refused = await write(h, 'b', 'Rechazada y luego borrada');
    const key = logbookKey(refused.table, refused.id);
    await waitFor(
      'the 404 letter',
      async () => (await letters(h, 'idempotency_key = $1', [key])).length === 1,
    );
    h.backend.behaviour = () => undefined;
    await h.admin.query(`DELETE FROM ${refused.table} WHERE id = $1`, [refused.id]);
    const [first] = await letters(h, 'idempotency_key = $1', [key]);
    const run = await runCli(['dead-letters', 'retry', String(first?.id), '--json'], {
      DATABASE_URL: h.db.url,
      ...PLANT,
      LOG_LEVEL: 'warn',
    });
    expect(run.code, run.stderr).toBe(0);
    await waitFor('a second letter for the deleted row', async () => {
      const l = await letters(h, 'idempotency_key = $1', [key]);
      return l.length === 2;
    });
    const both = await letters(h, 'idempotency_key = $1', [key]);
    expect(both.map((l) => [l.status, l.reason])).toEqual([
      ['retried', 'the backend does not know this entry (404)'],
      ['open', 'the row no longer exists'],
    ]);
    await waitFor('the queued retry removed', async () => {
      const { rows } = await h.admin.query(`SELECT 1 FROM ${ENGINE_SCHEMA}.deferred_posts`);
      return rows.length === 0;
    });
    expect(answers(h, refused).map((r) => r.status)).toEqual([404]);

    // After a restart nothing of this is sent again and the stream still flows.
    await h.monitor.stop(2_000);
    await h.startMonitor({ LOGBOOK_TIMEOUT_MS: '2000' });
    const last = await write(h, 'a', 'Tras el reinicio');
    await waitFor('classified after the restart', () => answers(h, last).some((r) => r.status === 200));
    const c = countLogbook(h.backend, [after, last]);
    expect(c.missing).toEqual([]);
    expect(c.wrong).toEqual([]);
    expect(c.problems).toEqual([]);
    expect(answers(h, refused).map((r) => r.status)).toEqual([404]);
  });
});
