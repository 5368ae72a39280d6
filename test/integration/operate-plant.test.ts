import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { PumpConfig } from '../../src/config/env.js';
import { channelsOf } from '../../src/operate/diagnose/index.js';
import { probePayload } from '../../src/source/probe.js';
import { quoteIdent } from '../../src/store/db.js';
import { ENGINE_SCHEMA } from '../../src/store/schema.js';
import { type CliRun, runCli } from '../helpers/child.js';
import { API_KEY, type Harness, harness, insertTimestamp, testEnv } from '../helpers/engine.js';
import { waitFor } from '../helpers/wait.js';

/**
 * The operator commands on the plant's wiring (plant-2026-03: shared tables, posted-only sensors, the
 * logbooks), run as an operator runs them: a CLI child process with the database and backend configured
 * but no wiring, against a running engine that recorded the wiring it serves.
 */

const S = ENGINE_SCHEMA;
let h: Harness;

beforeAll(async () => {
  h = await harness('operate_plant', { PUMPS_PROFILE: 'plant-2026-03' });
  // The classifier and the prediction routes validate an empty body as the real backend does.
  h.backend.behaviour = (r) =>
    (r.path.includes('predecir') || r.path.includes('gm-bitacoras')) && Object.keys(r.body).length === 0
      ? { status: 422 }
      : undefined;
  await h.startMonitor({ LOGBOOK_TIMEOUT_MS: '2000' });
  await waitFor('every pump and the logbook owned', () => {
    const st = h.monitor.status() as unknown as {
      pumps: Record<string, { owned: boolean }>;
      logbooks: Record<string, { owned: boolean }>;
    };
    return st.pumps.A?.owned === true && st.pumps.B?.owned === true && st.logbooks.bitacoras?.owned === true;
  });
});

afterAll(async () => {
  await h?.close();
});

/** `pump-monitor …` with the database and backend configured, and no PUMPS_PROFILE or PUMPS_DIR. */
function cli(args: string[], extra: Record<string, string> = {}): Promise<CliRun> {
  const env: Record<string, string> = { ...testEnv(h.db, h.backend), ...extra };
  return runCli(args, env);
}

async function count(sql: string, params: unknown[] = []): Promise<number> {
  const { rows } = await h.admin.query<{ n: number }>(`SELECT count(*)::int AS n FROM ${sql}`, params);
  return rows[0]?.n ?? -1;
}

/** The sum of a counter's samples in the engine's /metrics text. */
async function metric(name: string): Promise<number> {
  const text = await h.monitor.units.telemetry.registry.metrics();
  let sum = 0;
  for (const line of text.split('\n')) {
    if (line.startsWith(`${name}{`) || line.startsWith(`${name} `)) sum += Number(line.split(' ').pop());
  }
  return sum;
}

async function dbNow(): Promise<string> {
  const { rows } = await h.admin.query<{ t: string }>('SELECT localtimestamp::text AS t');
  return rows[0]?.t as string;
}

describe('the wiring listen recorded', () => {
  it('is the profile, with a digest and every definition; the commands use it when none is configured', async () => {
    const { rows } = await h.admin.query<{ profile: string; served: string[]; n: number; digest: string }>(
      `SELECT profile, served, jsonb_array_length(definitions) AS n, digest FROM ${S}.wiring`,
    );
    expect(rows).toEqual([
      { profile: 'plant-2026-03', served: ['A', 'B', 'bitacoras'], n: 3, digest: h.config.wiring.digest },
    ]);
    const list = await cli(['dead-letters', 'list']);
    expect(list.code, list.stderr).toBe(0);
    expect(list.stderr).toBe('');
    expect(list.stdout.split('\n')[0]).toBe(
      `wiring: profile plant-2026-03 (digest ${h.config.wiring.digest}), as listen recorded it at ${list.stdout.match(/recorded it at (\S+ \S+):/)?.[1]}: pumps A, B, logbooks bitacoras`,
    );
  });

  it('a wiring given that differs from the recorded one is used, with a warning naming both', async () => {
    const r = await cli(['dead-letters', 'list'], { PUMPS_PROFILE: 'default' });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.split('\n')[0]).toBe('wiring: profile default, from PUMPS_PROFILE: pumps A, B');
    expect(r.stderr).toContain('warning: the wiring given (profile default, digest');
    expect(r.stderr).toContain('differs from the one listen recorded last: profile plant-2026-03');
    // The same wiring given: no warning.
    const same = await cli(['dead-letters', 'list'], { PUMPS_PROFILE: 'plant-2026-03' });
    expect(same.stderr).toBe('');
  });
});

describe('diagnose on the plant', () => {
  it('passes with no wiring configured, checks each channel once and the logbooks, and leaves no trace in the running engine', async () => {
    const channels = channelsOf(h.config);
    // 25 channels per pump, 10 shared, and the two logbook streams.
    expect(channels).toHaveLength(42);
    const lettersBefore = await count(`${S}.dead_letters`);
    const probesBefore = await metric('pump_monitor_probes_total');
    const r = await cli(['diagnose']);
    expect(r.code, r.stdout).toBe(0);
    expect(r.stdout).toContain('pumps A, B, logbooks bitacoras');
    expect(r.stdout).toContain('wiring: profile plant-2026-03');
    expect(r.stdout).toContain('42 of 42 test notifications arrived');
    // connection, listen, queue, three per channel, engine tables, checkpoints, A, B and the classifier.
    expect(r.stdout).toContain(`all ${3 + 42 * 3 + 2 + 3} checks passed`);
    expect(r.stdout).toMatch(
      /^PASS {2}trigger A,B\/canal_voltaje_barra +voltaje_barra: pump_monitor_notify/m,
    );
    expect(r.stdout).toMatch(
      /^PASS {2}trigger bitacoras\/canal_gm_bitacora_a +gm_bitacoras_a: pump_monitor_notify/m,
    );
    expect(r.stdout).toMatch(
      /^PASS {2}backend bitacoras +POST http:\/\/127\.0\.0\.1:\d+\/gm-bitacoras\/clasificar with \{\} answered 422/m,
    );
    expect(r.stdout).not.toContain(API_KEY);
    // The engine heard every probe (notifications arrive in order: it has handled them all) and kept nothing.
    await waitFor(
      'the engine counted the 42 probes',
      async () => (await metric('pump_monitor_probes_total')) === probesBefore + 42,
    );
    expect(await count(`${S}.dead_letters`)).toBe(lettersBefore);
    expect(await metric('pump_monitor_readings_invalid_total')).toBe(0);
    const st = h.monitor.status() as unknown as {
      pumps: Record<string, { readings_invalid: number }>;
      logbooks: Record<string, { invalid: number }>;
    };
    expect(st.pumps.A?.readings_invalid).toBe(0);
    expect(st.pumps.B?.readings_invalid).toBe(0);
    expect(st.logbooks.bitacoras?.invalid).toBe(0);
  });

  it('a missing table gets the fix that names the wiring', async () => {
    const table = 'vibracion_x_descanso_interno_bomba_1a';
    await h.admin.query(`ALTER TABLE ${quoteIdent(table)} RENAME TO aside_vx`);
    try {
      const r = await cli(['diagnose']);
      expect(r.code).toBe(1);
      expect(r.stdout).toMatch(
        new RegExp(
          `^FAIL {2}table A/${table} .*-> fix: run PUMPS_PROFILE=plant-2026-03 pump-monitor migrate `,
          'm',
        ),
      );
      expect(r.stdout).toContain('2 of 134 checks failed');
    } finally {
      await h.admin.query(`ALTER TABLE aside_vx RENAME TO ${quoteIdent(table)}`);
    }
  });

  it('a forged probe sent for a real row skips nothing: the row is read from its table and posted', async () => {
    const A = h.pumps.A;
    const sensor = A.sensors.find((s) => s.table === 'sensores_corriente') as PumpConfig['sensors'][number];
    // A hostile plant: the table's trigger sends diagnose's probe instead of the row.
    await h.admin.query(`
      ALTER TABLE sensores_corriente DISABLE TRIGGER pump_monitor_notify;
      CREATE OR REPLACE FUNCTION public.forja_sonda() RETURNS trigger LANGUAGE plpgsql AS $fn$
      BEGIN
        PERFORM pg_notify('canal_sensores_corriente', ${`'${probePayload('0badc0de0badc0de')}'`});
        RETURN NEW;
      END $fn$;
      CREATE TRIGGER forja AFTER INSERT ON sensores_corriente FOR EACH ROW EXECUTE FUNCTION public.forja_sonda();
    `);
    try {
      const probes = await metric('pump_monitor_probes_total');
      const { rows } = await h.admin.query<{ id: number }>(
        "INSERT INTO sensores_corriente (tiempo_sensor, valor_sensor) VALUES ('2025-07-01T00:00:00', 42.5) RETURNING id",
      );
      const id = rows[0]?.id as number;
      await waitFor('the row posted to its endpoint', () =>
        h.backend.requests.some(
          (r) => r.status === 200 && r.path === `/sensores${sensor.endpoint}` && r.body.id_sensor === id,
        ),
      );
      expect(
        h.backend.requests.find((r) => r.path === `/sensores${sensor.endpoint}` && r.body.id_sensor === id)
          ?.body,
      ).toEqual({
        id_sensor: id,
        valor: 42.5,
      });
      expect(await metric('pump_monitor_probes_total')).toBe(probes + 1);
    } finally {
      await h.admin.query(`
        DROP TRIGGER forja ON sensores_corriente;
        ALTER TABLE sensores_corriente ENABLE TRIGGER pump_monitor_notify;
      `);
    }
  });
});

describe('replay on the plant', () => {
  let from = '';
  let to = '';
  const tiempos = ['2025-08-01T00:00:01', '2025-08-01T00:00:02'];

  beforeAll(async () => {
    from = await dbNow();
    // One row per table and timestamp: A's tables (the shared ones included), then B's own.
    const shared = new Set(h.pumps.A.sensors.map((s) => s.table));
    for (const [k, t] of tiempos.entries()) {
      await insertTimestamp(h.admin, h.pumps.A, t);
      for (const sensor of h.pumps.B.sensors.filter((x) => !shared.has(x.table))) {
        await h.admin.query(
          `INSERT INTO ${quoteIdent(sensor.table)} (tiempo_sensor, valor_sensor) VALUES ($1, $2)`,
          [t, 50 + k],
        );
      }
    }
    await waitFor(
      'the live vectors of both pumps',
      async () =>
        (await count(`${S}.outbox WHERE status = 'sent' AND tiempo_sensor = ANY($1)`, [tiempos])) === 4,
    );
    to = await dbNow();
    await waitFor('every reader past the range', async () => {
      let behind = 0;
      for (const p of [h.pumps.A, h.pumps.B]) {
        for (const sensor of p.sensors) {
          behind += await count(
            `${quoteIdent(sensor.table)} t WHERE t.id > (SELECT last_id FROM ${S}.checkpoints WHERE table_name = $1 AND pump = $2)`,
            [sensor.table, p.id],
          );
        }
      }
      return behind === 0;
    });
  });

  it('--dry-run counts pump A with nothing configured, its posted-only sensors left out of the vectors', async () => {
    const r = await cli(['replay', '--pump', 'A', '--from', from, '--to', to, '--dry-run']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toBe('');
    expect(r.stdout).toContain('wiring: profile plant-2026-03');
    expect(r.stdout).toContain('dry run for pump A: nothing was written');
    expect(r.stdout).toContain('vectors           2, 0 of them with fills');
    expect(r.stdout).toContain(
      'posted-only       6 sensors join no vector: not read (--posts replays their posts)',
    );
    const json = await cli([
      'replay',
      '--pump',
      'B',
      '--from',
      from,
      '--to',
      to,
      '--dry-run',
      '--posts',
      '--json',
    ]);
    expect(json.code, json.stderr).toBe(0);
    expect(JSON.parse(json.stdout)).toMatchObject({
      id: null,
      counts: { vectors: 2, dropped: 0, posts: 2 * 25, invalid: 0 },
    });
  });

  it('--posts replays every reading of A, posted-only and shared ones keyed with the pump', async () => {
    const r = await cli(['replay', '--pump', 'A', '--from', from, '--to', to, '--posts', '--json']);
    expect(r.code, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout) as { id: number; counts: Record<string, number> };
    expect(out.counts).toMatchObject({ vectors: 2, posts: 2 * 25, invalid: 0 });
    const suffix = `-replay-${out.id}`;
    await waitFor('the replayed posts and vectors delivered', () => {
      const keys = new Set(h.backend.requests.filter((x) => x.status === 200).map((x) => x.idempotencyKey));
      return [...keys].filter((k) => k?.endsWith(suffix)).length === 2 * 25 + 2;
    });
    const keys = h.backend.requests
      .filter((x) => x.idempotencyKey?.endsWith(suffix))
      .map((x) => x.idempotencyKey);
    // A posted-only sensor's reading, posted to its endpoint; a shared table's, keyed with its pump.
    expect(keys.some((k) => k?.startsWith('rd-vibracion_x_descanso_interno_bomba_1a-'))).toBe(true);
    expect(keys.some((k) => k?.startsWith('rd-A-voltaje_barra-'))).toBe(true);
    expect(keys.some((k) => k?.startsWith('rd-voltaje_barra-'))).toBe(false);
    const vx = h.backend.requests.filter(
      (x) =>
        x.idempotencyKey?.startsWith('rd-vibracion_x_descanso_interno_bomba_1a-') &&
        x.idempotencyKey.endsWith(suffix),
    );
    expect(vx.map((x) => x.path)).toEqual([
      '/sensores/prediccion_vibracion-x-interno',
      '/sensores/prediccion_vibracion-x-interno',
    ]);
  });

  it("--logbook bitacoras queues the range's entries again, under replay keys", async () => {
    const start = await dbNow();
    const { rows } = await h.admin.query<{ id: number }>(
      "INSERT INTO gm_bitacoras_a (bitacora, tiempo_ejecucion) VALUES ('Ronda sin novedad', localtimestamp) RETURNING id",
    );
    const id = rows[0]?.id as number;
    await waitFor('the entry classified', () =>
      h.backend.requests.some((x) => x.idempotencyKey === `lb-gm_bitacoras_a-${id}` && x.status === 200),
    );
    await waitFor(
      'the logbook past it',
      async () =>
        (await count(
          `${S}.checkpoints WHERE pump = 'bitacoras' AND table_name = 'gm_bitacoras_a' AND last_id >= $1`,
          [id],
        )) === 1,
    );
    const end = await dbNow();
    const r = await cli(['replay', '--logbook', 'bitacoras', '--from', start, '--to', end]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('entries           1: queued');
    const replayId = /replay (\d+) of logbook bitacoras/.exec(r.stdout)?.[1];
    await waitFor('the entry sent again', () =>
      h.backend.requests.some(
        (x) => x.idempotencyKey === `lb-gm_bitacoras_a-${id}-replay-${replayId}` && x.status === 200,
      ),
    );
    expect(
      h.backend.requests.find((x) => x.idempotencyKey === `lb-gm_bitacoras_a-${id}-replay-${replayId}`)?.body,
    ).toEqual({
      id,
      bitacora: 'Ronda sin novedad',
      tabla: 'a',
    });
    const wrong = await cli([
      'replay',
      '--logbook',
      'bitacoras',
      '--pump',
      'A',
      '--from',
      start,
      '--to',
      end,
    ]);
    expect(wrong.code).toBe(2);
    expect(wrong.stderr).toContain('give --pump ID or --logbook ID (one of them)');
  });
});

describe('dead-letters on the plant', () => {
  it("retries a logbook notification once its entry exists, for the logbook's lease holder", async () => {
    // A notification on a logbook channel naming an entry not (yet) in the table: a dead letter.
    const { rows: next } = await h.admin.query<{ id: number }>(
      "SELECT nextval(pg_get_serial_sequence('gm_bitacoras_b', 'id'))::int + 1000 AS id",
    );
    const ahead = next[0]?.id as number;
    await h.admin.query(`SELECT pg_notify('canal_gm_bitacora_b', $1)`, [
      JSON.stringify({ id: ahead, bitacora: 'x' }),
    ]);
    await waitFor(
      'the letter written',
      async () =>
        (await count(`${S}.dead_letters WHERE channel = 'canal_gm_bitacora_b' AND payload LIKE $1`, [
          `%${ahead}%`,
        ])) === 1,
    );
    const { rows: letter } = await h.admin.query<{ id: number }>(
      `SELECT id FROM ${S}.dead_letters WHERE channel = 'canal_gm_bitacora_b' AND payload LIKE $1`,
      [`%${ahead}%`],
    );
    const letterId = letter[0]?.id as number;
    const refused = await cli(['dead-letters', 'retry', String(letterId)]);
    expect(refused.code).toBe(1);
    expect(refused.stdout).toContain(`row ${ahead} is not in table gm_bitacoras_b`);
    // The row is written since, without a notification of its own (its trigger off for it).
    await h.admin.query(`
      ALTER TABLE gm_bitacoras_b DISABLE TRIGGER pump_monitor_notify;
      INSERT INTO gm_bitacoras_b (id, bitacora) VALUES (${ahead}, 'Falla de sello en bomba B');
      ALTER TABLE gm_bitacoras_b ENABLE TRIGGER pump_monitor_notify;
    `);
    const retried = await cli(['dead-letters', 'retry', String(letterId), '--json']);
    expect(retried.code, retried.stdout).toBe(0);
    expect(JSON.parse(retried.stdout)).toMatchObject({ retried: 1, refused: 0 });
    await waitFor('the entry sent', () =>
      h.backend.requests.some((x) => x.idempotencyKey === `lb-gm_bitacoras_b-${ahead}` && x.status === 200),
    );
  });
  it("retries a shared table's refused post for the pump it was for, under that pump's key", async () => {
    const B = h.pumps.B;
    const sensor = B.sensors.find((x) => x.table === 'voltaje_barra') as PumpConfig['sensors'][number];
    const path = `/sensores_b${sensor.endpoint}`;
    h.backend.behaviour = (r) => (r.path === path ? { status: 404 } : undefined);
    let id = 0;
    try {
      const { rows } = await h.admin.query<{ id: number }>(
        "INSERT INTO voltaje_barra (tiempo_sensor, valor_sensor) VALUES ('2025-09-01T00:00:00', 6600) RETURNING id",
      );
      id = rows[0]?.id as number;
      await waitFor(
        'the refusal kept as a dead letter of B',
        async () =>
          (await count(
            `${S}.dead_letters WHERE kind = 'sensor_post' AND pump = 'B' AND idempotency_key = $1`,
            [`rd-B-voltaje_barra-${id}`],
          )) === 1,
      );
    } finally {
      h.backend.behaviour = () => undefined;
    }
    const { rows: letter } = await h.admin.query<{ id: number }>(
      `SELECT id FROM ${S}.dead_letters WHERE idempotency_key = $1`,
      [`rd-B-voltaje_barra-${id}`],
    );
    const r = await cli(['dead-letters', 'retry', String(letter[0]?.id)]);
    expect(r.code, r.stdout).toBe(0);
    expect(r.stdout).toContain(`per-sensor post queued again (rd-B-voltaje_barra-${id})`);
    await waitFor('posted to B once the backend takes it', () =>
      h.backend.requests.some((x) => x.path === path && x.status === 200 && x.body.id_sensor === id),
    );
    expect(
      h.backend.requests
        .filter((x) => x.path === path && x.status === 200 && x.body.id_sensor === id)
        .map((x) => x.idempotencyKey),
    ).toEqual([`rd-B-voltaje_barra-${id}`]);
  });
});
