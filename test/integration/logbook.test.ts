import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { retryDeadLetters } from '../../src/operate/dead-letters.js';
import { ENGINE_SCHEMA } from '../../src/store/schema.js';
import { API_KEY, type Harness, harness } from '../helpers/engine.js';
import { TcpProxy } from '../helpers/tcp-proxy.js';
import { pause, waitFor } from '../helpers/wait.js';

/**
 * The logbook stream of plant-2026-03 (PUMPS=bitacoras): each row POSTed on its own as
 * {id, bitacora, tabla} with X-API-Key and Idempotency-Key lb-<table>-<id>, retried on 5xx, dead-lettered
 * on 404, a long entry read from its row, and rows written while the engine was away caught up.
 */
let h: Harness;
let proxy: TcpProxy;

beforeAll(async () => {
  h = await harness('logbook', { PUMPS_PROFILE: 'plant-2026-03', PUMPS: 'bitacoras' });
  proxy = await new TcpProxy(h.db.config.port).start();
  const viaProxy = new URL(h.db.url);
  viaProxy.port = String(proxy.port);
  await h.startMonitor({ DATABASE_URL: viaProxy.toString(), LOGBOOK_TIMEOUT_MS: '2000' });
});

afterAll(async () => {
  await h?.close();
  await proxy?.stop();
});

async function entry(table: string, text: string): Promise<number> {
  const { rows } = await h.admin.query<{ id: number }>(
    `INSERT INTO ${table} (bitacora, tiempo_ejecucion) VALUES ($1, now()) RETURNING id`,
    [text],
  );
  return rows[0]?.id as number;
}

const posts = (key: string) => h.backend.requests.filter((r) => r.idempotencyKey === key);
const logbook = () =>
  (h.monitor.status() as unknown as { logbooks: Record<string, Record<string, unknown>> }).logbooks
    .bitacoras as Record<string, unknown>;

describe('logbook stream', () => {
  it('posts each entry on its own, with the exact body, path and headers, and records it', async () => {
    await waitFor('the logbook owned', () => logbook()?.owned === true);
    const a = await entry('gm_bitacoras_a', 'Ronda de turno: sin novedad en bomba A');
    const b = await entry('gm_bitacoras_b', 'Cambio de turno B');
    await waitFor(
      'both posted',
      () => posts(`lb-gm_bitacoras_a-${a}`).length === 1 && posts(`lb-gm_bitacoras_b-${b}`).length === 1,
    );
    const pa = posts(`lb-gm_bitacoras_a-${a}`)[0];
    expect(pa?.path).toBe('/gm-bitacoras/clasificar');
    expect(pa?.apiKey).toBe(API_KEY);
    expect(pa?.body).toEqual({ id: a, bitacora: 'Ronda de turno: sin novedad en bomba A', tabla: 'a' });
    expect(posts(`lb-gm_bitacoras_b-${b}`)[0]?.body).toEqual({
      id: b,
      bitacora: 'Cambio de turno B',
      tabla: 'b',
    });
    await waitFor('recorded in the post ledger', async () => {
      const { rows } = await h.admin.query<{ n: number }>(
        `SELECT count(*)::int AS n FROM ${ENGINE_SCHEMA}.sensor_posts WHERE pump = 'bitacoras'`,
      );
      return rows[0]?.n === 2;
    });
    expect(logbook()).toMatchObject({ received: 2, sent: 2, failed: 0 });
    expect(logbook()?.last_classification).toMatchObject({ clasificacion: 'Rutina' });
    const metrics = await h.monitor.units.telemetry.registry.metrics();
    expect(metrics).toMatch(/pump_monitor_logbook_events_total\{logbook="bitacoras",outcome="sent"\} 2/);
  });

  it('retries a 503 until the backend takes the entry', async () => {
    let refused = 0;
    h.backend.behaviour = (r) =>
      r.path.includes('gm-bitacoras') && refused++ < 2 ? { status: 503 } : undefined;
    const id = await entry('gm_bitacoras_a', 'Alarma de presión, reconocida');
    await waitFor('delivered after the 503s', () =>
      posts(`lb-gm_bitacoras_a-${id}`).some((r) => r.status === 200),
    );
    h.backend.behaviour = () => undefined;
    expect(posts(`lb-gm_bitacoras_a-${id}`).map((r) => r.status)).toEqual([503, 503, 200]);
  });

  it('dead-letters an entry the backend does not know (404), with the response', async () => {
    h.backend.behaviour = (r) => (r.path.includes('gm-bitacoras') ? { status: 404 } : undefined);
    const id = await entry('gm_bitacoras_b', 'Entrada que el backend no encuentra');
    await waitFor('the dead letter', async () => {
      const { rows } = await h.admin.query(
        `SELECT 1 FROM ${ENGINE_SCHEMA}.dead_letters WHERE kind = 'logbook' AND idempotency_key = $1`,
        [`lb-gm_bitacoras_b-${id}`],
      );
      return rows.length === 1;
    });
    h.backend.behaviour = () => undefined;
    const { rows } = await h.admin.query<{ pump: string; response_status: number; reason: string }>(
      `SELECT pump, response_status, reason FROM ${ENGINE_SCHEMA}.dead_letters WHERE idempotency_key = $1`,
      [`lb-gm_bitacoras_b-${id}`],
    );
    expect(rows[0]).toMatchObject({ pump: 'bitacoras', response_status: 404 });
    expect(posts(`lb-gm_bitacoras_b-${id}`)).toHaveLength(1);
    await waitFor('counted as failed', () => logbook()?.failed === 1);

    // dead-letters retry queues it again for the lease holder, which sends it under the same key.
    const { rows: letters } = await h.admin.query<{ id: number }>(
      `SELECT id::int AS id FROM ${ENGINE_SCHEMA}.dead_letters WHERE idempotency_key = $1`,
      [`lb-gm_bitacoras_b-${id}`],
    );
    const outcomes = await retryDeadLetters({ pool: h.admin, pumps: [], by: 'test' }, [
      letters[0]?.id as number,
    ]);
    expect(outcomes[0]).toMatchObject({ result: 'retried' });
    await waitFor('sent again and taken', () =>
      posts(`lb-gm_bitacoras_b-${id}`).some((r) => r.status === 200),
    );
    expect(posts(`lb-gm_bitacoras_b-${id}`).map((r) => r.status)).toEqual([404, 200]);
    expect(posts(`lb-gm_bitacoras_b-${id}`)[1]?.body).toEqual({
      id,
      bitacora: 'Entrada que el backend no encuentra',
      tabla: 'b',
    });
    await waitFor('the queued retry removed', async () => {
      const { rows } = await h.admin.query(`SELECT 1 FROM ${ENGINE_SCHEMA}.deferred_posts`);
      return rows.length === 0;
    });
  });

  it('retries a logbook dead letter stored without its key under the table key lb-<table>-<id>', async () => {
    // A letter written before keys were kept: the retry rebuilds the key the lane sends under from the
    // stream's table (the channel is another name).
    h.backend.behaviour = (r) => (r.path.includes('gm-bitacoras') ? { status: 404 } : undefined);
    const id = await entry('gm_bitacoras_b', 'Entrada sin clave guardada');
    const key = `lb-gm_bitacoras_b-${id}`;
    let letter: number | undefined;
    await waitFor('the dead letter', async () => {
      const { rows } = await h.admin.query<{ id: number }>(
        `SELECT id::int AS id FROM ${ENGINE_SCHEMA}.dead_letters WHERE kind = 'logbook' AND idempotency_key = $1`,
        [key],
      );
      letter = rows[0]?.id;
      return letter !== undefined;
    });
    h.backend.behaviour = () => undefined;
    await h.admin.query(`UPDATE ${ENGINE_SCHEMA}.dead_letters SET idempotency_key = NULL WHERE id = $1`, [
      letter,
    ]);
    const stream = h.config.logbooks[0]?.streams.find((s) => s.table === 'gm_bitacoras_b');
    expect(stream?.channel).not.toBe(stream?.table);
    const outcomes = await retryDeadLetters(
      { pool: h.admin, pumps: [], logbooks: h.config.logbooks, by: 'test' },
      [letter as number],
    );
    expect(outcomes[0]).toMatchObject({ result: 'retried' });
    await waitFor('sent again under the table key', () => posts(key).some((r) => r.status === 200));
    expect(posts(key).map((r) => r.status)).toEqual([404, 200]);
    expect(h.backend.requests.filter((r) => r.idempotencyKey?.includes(stream?.channel as string))).toEqual(
      [],
    );
  });

  it('reads a long entry (announced by its id alone) from its row', async () => {
    const text = `Mantenimiento mayor. ${'Detalle de la intervención en la bomba. '.repeat(400)}`;
    expect(Buffer.byteLength(text)).toBeGreaterThan(8000);
    const id = await entry('gm_bitacoras_a', text);
    await waitFor('posted', () => posts(`lb-gm_bitacoras_a-${id}`).length === 1);
    expect(posts(`lb-gm_bitacoras_a-${id}`)[0]?.body).toEqual({ id, bitacora: text, tabla: 'a' });
  });

  it('catches up entries written while the connection was down, once each', async () => {
    await proxy.refuse();
    await waitFor('the LISTEN connection lost', () => !h.monitor.units.listener.listening);
    const ids = [
      await entry('gm_bitacoras_a', 'Escrita durante el corte 1'),
      await entry('gm_bitacoras_b', 'Escrita durante el corte 2'),
    ];
    await pause(300);
    await proxy.restore();
    await waitFor(
      'both caught up',
      () =>
        posts(`lb-gm_bitacoras_a-${ids[0]}`).length === 1 &&
        posts(`lb-gm_bitacoras_b-${ids[1]}`).length === 1,
    );
    await pause(500);
    expect(posts(`lb-gm_bitacoras_a-${ids[0]}`)).toHaveLength(1);
    expect(posts(`lb-gm_bitacoras_b-${ids[1]}`)).toHaveLength(1);
    // Nothing earlier was sent again.
    for (const [key, n] of h.backend.answeredByKey((r) => r.path.includes('gm-bitacoras'))) {
      expect(n, key).toBe(1);
    }
  });
});
