import { createServer, type Server } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { buildServer } from '../../src/http/server.js';
import { writersRetrying } from '../../src/http/status.js';
import { ENGINE_SCHEMA } from '../../src/store/schema.js';
import { freePort } from '../../src/tools/free-port.js';
import { spawnListener } from '../helpers/child.js';
import { type Harness, harness, insertTimestamp, testEnv } from '../helpers/engine.js';
import { waitFor } from '../helpers/wait.js';

/**
 * Issue 19, "answers are bounded" and "a poison item never jams a writer", against the whole engine and a
 * real PostgreSQL: answers a real backend should never send (NUL bytes, invalid UTF-8), and payloads a
 * plant should never notify.
 */

/** How the test backend answers one request; undefined: 200 with a small JSON body. */
type Plan = { status: number; body: Buffer | string } | 'huge' | 'drip' | undefined;

interface Seen {
  path: string;
  key: string | undefined;
  /** Body bytes written before the answer ended or the client went away. */
  bytes: number;
  /** Whether the whole planned answer was written. */
  complete: boolean;
  /** Whether the client closed the connection before the answer was complete. */
  cut: boolean;
}

const HUGE_BYTES = 20 * 1024 * 1024;
/** The drip: one byte every 3 s, 10 bytes in all (30 s): never idle for as long as the timeout. */
const DRIP_EVERY_MS = 3_000;
const DRIP_BYTES = 10;

/** A backend that answers as `plan` says, in whatever shape, and records what it wrote. */
class AnswerBackend {
  readonly requests: Seen[] = [];
  plan: (path: string, seen: Seen) => Plan = () => undefined;
  private server: Server | undefined;
  private port = 0;
  private readonly sockets = new Set<Socket>();

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  async start(): Promise<this> {
    this.server = createServer((req, res) => {
      const seen: Seen = {
        path: req.url ?? '',
        key: req.headers['idempotency-key'] as string | undefined,
        bytes: 0,
        complete: false,
        cut: false,
      };
      this.requests.push(seen);
      res.on('close', () => {
        if (!seen.complete) seen.cut = true;
      });
      req.resume();
      req.on('end', () => {
        const plan = this.plan(seen.path, seen);
        if (plan === 'huge') {
          res.writeHead(200, { 'content-type': 'application/json' });
          const piece = Buffer.alloc(64 * 1024, 0x20);
          const next = () => {
            while (seen.bytes < HUGE_BYTES && !res.destroyed) {
              seen.bytes += piece.length;
              if (!res.write(piece)) return void res.once('drain', next);
            }
            if (!res.destroyed) {
              seen.complete = true;
              res.end();
            }
          };
          next();
        } else if (plan === 'drip') {
          res.writeHead(200, { 'content-type': 'application/json' });
          const timer = setInterval(() => {
            if (res.destroyed) return clearInterval(timer);
            seen.bytes += 1;
            if (seen.bytes < DRIP_BYTES) return void res.write(' ');
            clearInterval(timer);
            seen.complete = true;
            res.end('{}');
          }, DRIP_EVERY_MS);
          res.on('close', () => clearInterval(timer));
        } else {
          const { status, body } = plan ?? { status: 200, body: '{"prediccion":1,"contador_anomalias":0}' };
          res.writeHead(status, { 'content-type': 'application/json' });
          seen.bytes = Buffer.byteLength(body);
          seen.complete = true;
          res.end(body);
        }
      });
    });
    this.server.on('connection', (s) => {
      this.sockets.add(s);
      s.on('close', () => this.sockets.delete(s));
    });
    await new Promise<void>((resolve) => this.server?.listen(0, '127.0.0.1', resolve));
    this.port = (this.server.address() as AddressInfo).port;
    return this;
  }

  async stop(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }
}

const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c().catch(() => {});
});

async function setup(
  prefix: string,
): Promise<{ h: Harness; backend: AnswerBackend; env: Record<string, string> }> {
  const h = await harness(prefix);
  cleanups.push(() => h.close());
  const backend = await new AnswerBackend().start();
  cleanups.push(() => backend.stop());
  return { h, backend, env: { BASE_URL: backend.url, BASE_URL_B: `${backend.url}/sensores_b` } };
}

interface Letter {
  kind: string;
  payload: string | null;
  reason: string;
  response_status: number | null;
  response_body: string | null;
}

async function letters(h: Harness, kind: string): Promise<Letter[]> {
  const { rows } = await h.admin.query<Letter>(
    `SELECT kind, payload, reason, response_status, response_body FROM ${ENGINE_SCHEMA}.dead_letters
      WHERE kind = $1 ORDER BY id`,
    [kind],
  );
  return rows;
}

async function outbox(h: Harness, pump: string): Promise<{ tiempo: string; status: string }[]> {
  const { rows } = await h.admin.query<{ tiempo: string; status: string }>(
    `SELECT tiempo_sensor AS tiempo, status FROM ${ENGINE_SCHEMA}.outbox WHERE pump = $1 ORDER BY id`,
    [pump],
  );
  return rows;
}

const NUL = String.fromCharCode(0);
/** A 400 body as a broken backend might send it: a NUL byte, and bytes that are not UTF-8. */
const POISON_BODY = Buffer.concat([
  Buffer.from('{"detail":"bad'),
  Buffer.from([0x00]),
  Buffer.from(' byte '),
  Buffer.from([0xff, 0xfe, 0xc3]),
  Buffer.from('"}'),
]);

describe('answers and payloads PostgreSQL cannot store as they are', () => {
  it('a 400 whose body has a NUL byte and invalid UTF-8 is dead-lettered, sanitised; later letters and vectors go on', async () => {
    const { h, backend, env } = await setup('answers_nul');
    const A = h.pumps.A;
    const poisoned = `/sensores${A.sensors[0]?.endpoint}`;
    let vectors = 0;
    backend.plan = (path) => {
      if (path === poisoned) return { status: 400, body: POISON_BODY };
      // The first vector is refused with the same body.
      if (path === `/sensores${A.unifiedPath}` && vectors++ === 0) return { status: 400, body: POISON_BODY };
      return undefined;
    };
    await h.startMonitor(env);
    await insertTimestamp(h.admin, A, '2026-01-01 10:00:00');
    await waitFor('the refused vector and post stored as dead letters', async () => {
      return (await letters(h, 'vector')).length === 1 && (await letters(h, 'sensor_post')).length === 1;
    });
    await insertTimestamp(h.admin, A, '2026-01-01 10:01:00');
    await insertTimestamp(h.admin, A, '2026-01-01 10:02:00');
    await waitFor('the later letters stored and the later vectors sent', async () => {
      const sent = (await outbox(h, 'A')).filter((r) => r.status === 'sent');
      return (await letters(h, 'sensor_post')).length === 3 && sent.length === 2;
    });
    const all = [...(await letters(h, 'vector')), ...(await letters(h, 'sensor_post'))];
    for (const l of all) {
      expect(l.response_status).toBe(400);
      expect(l.response_body).toBe('{"detail":"bad\ufffd byte \ufffd\ufffd\ufffd"}');
    }
    expect((await outbox(h, 'A')).map((r) => r.status)).toEqual(['dead', 'sent', 'sent']);
  });

  it('a notification whose tiempo_sensor holds \\u0000 or a lone surrogate is a dead letter, and the stream goes on', async () => {
    const { h, env } = await setup('answers_payload_nul');
    const A = h.pumps.A;
    await h.startMonitor(env);
    const channel = A.sensors[0]?.channel as string;
    const payloads = [
      // Ids no row has: the letters say so, and keep the payloads as they came, cleaned where stored.
      '{"id_sensor": 900001, "valor": 1.5, "tiempo_sensor": "2026-01-01 09:00:00\\u0000"}',
      '{"id_sensor": 900002, "valor": 1.5, "tiempo_sensor": "\\ud800"}',
    ];
    for (const p of payloads) await h.admin.query('SELECT pg_notify($1, $2)', [channel, p]);
    await insertTimestamp(h.admin, A, '2026-01-01 10:00:00');
    await waitFor('two dead letters and the next vector sent', async () => {
      const sent = (await outbox(h, 'A')).filter((r) => r.status === 'sent');
      return (await letters(h, 'notification')).length === 2 && sent.length === 1;
    });
    const stored = await letters(h, 'notification');
    expect(stored.map((l) => l.payload)).toEqual(payloads);
    for (const l of stored) {
      expect(l.reason).toMatch(/^no_such_row: /);
      expect(l.reason).not.toContain(NUL);
    }
    expect(await outbox(h, 'A')).toEqual([{ tiempo: '2026-01-01 10:00:00', status: 'sent' }]);
  });
});

describe('answers are bounded', () => {
  it('20 MB answers to every POST: the engine under the production heap stays up and delivers', async () => {
    const { h, backend, env } = await setup('answers_huge');
    backend.plan = () => 'huge';
    const childEnv = {
      ...testEnv(h.db, h.backend),
      ...env,
      PORT: String(await freePort()),
      LOG_LEVEL: 'warn',
      // As `npm start` runs it (package.json).
      NODE_OPTIONS: '--max-old-space-size=96 --max-semi-space-size=4',
    };
    const child = spawnListener(childEnv);
    cleanups.push(async () => void child.proc.kill('SIGKILL'));
    // A fresh installation starts at the tables' ends: rows count from once the engine listens.
    await waitFor(
      'the engine ready',
      async () => {
        try {
          return (await fetch(`http://127.0.0.1:${childEnv.PORT}/readyz`)).status === 200;
        } catch {
          return false;
        }
      },
      30_000,
    );
    const A = h.pumps.A;
    const tiempos = [
      '2026-01-01 10:00:00',
      '2026-01-01 10:01:00',
      '2026-01-01 10:02:00',
      '2026-01-01 10:03:00',
    ];
    for (const t of tiempos) await insertTimestamp(h.admin, A, t);
    const alive = () => {
      if (child.proc.exitCode !== null || child.proc.signalCode !== null) {
        throw new Error(
          `the engine exited (${child.proc.exitCode ?? child.proc.signalCode}): ${child.output.slice(-5).join('\n')}`,
        );
      }
    };
    let last = '';
    await waitFor(
      'every vector and post of the four timestamps delivered',
      async () => {
        alive();
        const sent = (await outbox(h, 'A')).filter((r) => r.status === 'sent').length;
        const { rows } = await h.admin.query<{ n: number }>(
          `SELECT count(*)::int AS n FROM ${ENGINE_SCHEMA}.sensor_posts WHERE pump = 'A'`,
        );
        last = `sent ${sent}, posts ${rows[0]?.n}, requests ${backend.requests.length}, complete ${backend.requests.filter((r) => r.complete).length}`;
        return sent === tiempos.length && rows[0]?.n === tiempos.length * A.sensors.length;
      },
      60_000,
    ).catch((err: Error) => {
      throw new Error(`${err.message} (${last}; ${child.output.slice(-5).join(' | ')})`);
    });
    alive();
    // Every answer was cut at the cap: none was read whole.
    expect(backend.requests.length).toBeGreaterThanOrEqual(tiempos.length * (A.sensors.length + 1));
    expect(backend.requests.filter((r) => r.complete)).toEqual([]);
    expect(child.output.join('\n')).not.toMatch(/heap out of memory/i);
    child.proc.kill('SIGTERM');
    expect(await child.exited).toBe(0);
  });

  it('a backend that sends one byte every 3 s: the attempt ends at HTTP_TIMEOUT_MS and is retried', async () => {
    const { h, backend, env } = await setup('answers_drip');
    const unified = `/sensores${h.pumps.A.unifiedPath}`;
    let vectors = 0;
    backend.plan = (path) => (path === unified && vectors++ === 0 ? 'drip' : undefined);
    // Longer than the drip's gaps, so only a deadline on the whole attempt can end it.
    await h.startMonitor({ ...env, HTTP_TIMEOUT_MS: '4000', SENSOR_POSTS: 'false' });
    await insertTimestamp(h.admin, h.pumps.A, '2026-01-01 10:00:00');
    // The drip takes 30 s; the wait ends well before it would have.
    await waitFor('the vector sent on a second attempt', async () => {
      return (await outbox(h, 'A')).some((r) => r.status === 'sent');
    });
    const attempts = backend.requests.filter((r) => r.path === unified);
    expect(attempts.length).toBeGreaterThanOrEqual(2);
    expect(new Set(attempts.map((r) => r.key)).size).toBe(1);
    const [first] = attempts;
    expect(first).toMatchObject({ cut: true, complete: false });
    expect(first?.bytes).toBeLessThan(DRIP_BYTES);
  });
});

describe('a poison item never jams a writer', () => {
  it('a dead letter the table refuses is stored bare, and the letters behind it go through', async () => {
    const { h, env } = await setup('answers_poison_letter');
    // A rule of this installation's own: no payload may say "poison" (SQLSTATE 23514, a data error).
    await h.admin.query(
      `ALTER TABLE ${ENGINE_SCHEMA}.dead_letters ADD CONSTRAINT no_poison CHECK (payload NOT LIKE '%poison%')`,
    );
    await h.startMonitor(env);
    const channel = h.pumps.A.sensors[0]?.channel as string;
    // One burst: the three letters meet in one batch.
    await h.admin.query(
      `SELECT pg_notify($1, 'not json 1'), pg_notify($1, 'poison, not json'), pg_notify($1, 'not json 2')`,
      [channel],
    );
    await waitFor('three dead letters', async () => (await letters(h, 'notification')).length === 3);
    const stored = await letters(h, 'notification');
    expect(stored.map((l) => l.payload)).toEqual(['not json 1', null, 'not json 2']);
    expect(stored[1]?.reason).toMatch(/^not_json: .*\[payload and answer not stored: 23514 /);
    expect(writersRetrying(h.monitor.units.snapshot)).toEqual([]);
  });

  it("a vector's dead letter the table refuses is stored bare, and the pump's next vectors are sent", async () => {
    const { h, backend, env } = await setup('answers_poison_vector');
    await h.admin.query(
      `ALTER TABLE ${ENGINE_SCHEMA}.dead_letters
         ADD CONSTRAINT no_poison CHECK (response_body IS NULL OR response_body NOT LIKE '%poison%')`,
    );
    const unified = `/sensores${h.pumps.A.unifiedPath}`;
    let vectors = 0;
    backend.plan = (path) =>
      path === unified && vectors++ === 0 ? { status: 400, body: '{"detail":"poison"}' } : undefined;
    await h.startMonitor({ ...env, SENSOR_POSTS: 'false' });
    await insertTimestamp(h.admin, h.pumps.A, '2026-01-01 10:00:00');
    await waitFor('the refused vector on record', async () => (await letters(h, 'vector')).length === 1);
    await insertTimestamp(h.admin, h.pumps.A, '2026-01-01 10:01:00');
    await waitFor('the next vector sent', async () =>
      (await outbox(h, 'A')).some((r) => r.status === 'sent'),
    );
    const [letter] = await letters(h, 'vector');
    expect(letter).toMatchObject({ response_status: 400, response_body: null, payload: null });
    expect(letter?.reason).toMatch(
      /^backend answered 400 to the unified POST for tiempo_sensor 2026-01-01 10:00:00 \[payload and answer not stored: 23514 /,
    );
    expect((await outbox(h, 'A')).map((r) => r.status)).toEqual(['dead', 'sent']);
  });

  it('a writer retrying shows in /readyz, /status and the metrics, until it writes again', async () => {
    const { h, env } = await setup('answers_writer_retrying');
    const m = await h.startMonitor(env);
    const app = await buildServer(m);
    cleanups.push(() => app.close());
    const get = async (url: string) => app.inject({ method: 'GET', url });
    // A fault no split can fix: the table is away (42P01), so the batch is retried whole.
    await h.admin.query(`ALTER TABLE ${ENGINE_SCHEMA}.dead_letters RENAME TO dead_letters_away`);
    await h.admin.query(`SELECT pg_notify($1, 'not json')`, [h.pumps.A.sensors[0]?.channel]);
    await waitFor('the dead-letter writer failing twice', () =>
      writersRetrying(m.units.snapshot).some((w) => w.writer === 'dead_letters' && w.failures >= 2),
    );
    const ready = await get('/readyz');
    expect(ready.statusCode).toBe(503);
    expect(ready.json().reason).toMatch(
      /^dead_letters writer retrying since \S+ \(\d+ failures, 1 queued\): 42P01: /,
    );
    const status = (await get('/status')).json() as {
      writers_retrying: { writer: string; pending: number }[];
    };
    expect(status.writers_retrying).toMatchObject([{ writer: 'dead_letters', pending: 1 }]);
    expect((await get('/metrics')).body).toMatch(
      /^pump_monitor_writer_retrying\{writer="dead_letters"\} 1$/m,
    );
    await h.admin.query(`ALTER TABLE ${ENGINE_SCHEMA}.dead_letters_away RENAME TO dead_letters`);
    await waitFor('the letter stored', async () => (await letters(h, 'notification')).length === 1);
    await waitFor('ready again', async () => (await get('/readyz')).statusCode === 200);
    expect((await get('/status')).json().writers_retrying).toEqual([]);
    expect((await get('/metrics')).body).toMatch(
      /^pump_monitor_writer_retrying\{writer="dead_letters"\} 0$/m,
    );
  });
});
