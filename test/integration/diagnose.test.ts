import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  type Check,
  formatJson,
  formatTable,
  runDiagnostics,
  toJson,
} from '../../src/operate/diagnose/index.js';
import { isProbe } from '../../src/source/probe.js';
import { quoteIdent } from '../../src/store/db.js';
import { migrate, TRIGGER_NAME } from '../../src/store/schema.js';
import { type CliRun, runCli } from '../helpers/child.js';
import { API_KEY, type Harness, harness, testEnv } from '../helpers/engine.js';

let h: Harness;

/** A backend that validates like the real one: 401 on a wrong key, 422 on an empty unified body. */
function realisticBackend() {
  h.backend.behaviour = (r) => {
    if (r.apiKey !== API_KEY) return { status: 401 };
    if (r.path.includes('predecir') && Object.keys(r.body).length === 0) return { status: 422 };
    return undefined;
  };
}

/** Puts every table and trigger back, so each test breaks one thing on a healthy setup. */
async function repair() {
  const client = await h.admin.connect();
  try {
    await migrate(client, h.config.pumps);
  } finally {
    client.release();
  }
}

function byName(checks: Check[], name: string): Check {
  const c = checks.find((x) => x.name === name);
  if (!c) throw new Error(`no check named ${name}: ${checks.map((x) => x.name).join(', ')}`);
  return c;
}

function failures(checks: Check[]): string[] {
  return checks.filter((c) => !c.ok).map((c) => c.name);
}

/** Everything a user could see: the table, the JSON and the raw checks. */
function allOutput(checks: Check[]): string {
  return `${formatTable(checks)}\n${formatJson(checks)}`;
}

beforeAll(async () => {
  h = await harness('diagnose');
  realisticBackend();
});

afterEach(async () => {
  realisticBackend();
  await repair();
});

afterAll(async () => {
  await h?.close();
});

describe('diagnose against a healthy setup', () => {
  it('passes every check, one per line, and writes nothing', async () => {
    // A LISTEN session of the test's own sees what diagnose sends: one notification per channel.
    const sensors = [...h.pumps.A.sensors, ...h.pumps.B.sensors];
    const watcher = new pg.Client({ connectionString: h.db.url });
    watcher.on('error', () => {});
    await watcher.connect();
    const seen = new Map<string, number>();
    watcher.on('notification', (msg) => {
      if (isProbe(msg.payload ?? '')) seen.set(msg.channel, (seen.get(msg.channel) ?? 0) + 1);
    });
    for (const s of sensors) await watcher.query(`LISTEN ${quoteIdent(s.channel)}`);
    let checks: Check[];
    try {
      checks = await runDiagnostics(h.config);
      // Notifications reach this session in commit order: one sent after diagnose is the last it gets.
      const last = new Promise<void>((resolve) =>
        watcher.on('notification', (msg) => msg.payload === '{"last": true}' && resolve()),
      );
      await watcher.query(`NOTIFY ${quoteIdent(sensors[0]?.channel as string)}, '{"last": true}'`);
      await last;
    } finally {
      await watcher.end();
    }
    expect(new Map([...seen].sort())).toEqual(new Map(sensors.map((s) => [s.channel, 1] as const).sort()));
    expect(failures(checks)).toEqual([]);
    // connection, listen, queue, three per channel, the engine tables, the checkpoints, one per backend.
    expect(checks).toHaveLength(3 + sensors.length * 3 + 1 + 1 + 2);
    // The harness migrated the engine schema: its tables are listed with their rows and sizes.
    expect(byName(checks, 'engine tables').detail).toMatch(/outbox \d+ rows \d+\.\d MB/);
    expect(byName(checks, 'engine tables').detail).toContain('sensor_posts');
    expect(byName(checks, 'connection').detail).toMatch(/^PostgreSQL \d+/);
    expect(byName(checks, 'connection').detail).toContain('TLS off');
    expect(byName(checks, 'listen').detail).toContain(`${sensors.length} of ${sensors.length}`);
    expect(byName(checks, 'listen').detail).toContain('as a probe (pump_monitor_probes_total)');
    expect(byName(checks, 'notification queue').ok).toBe(true);
    for (const [pump, list] of [
      ['A', h.pumps.A.sensors],
      ['B', h.pumps.B.sensors],
    ] as const) {
      for (const s of list) {
        expect(byName(checks, `table ${pump}/${s.table}`).ok).toBe(true);
        expect(byName(checks, `trigger ${pump}/${s.channel}`).detail).toContain(TRIGGER_NAME);
        const notify = byName(checks, `notify ${pump}/${s.channel}`);
        expect(notify.ok).toBe(true);
        // Received on its own channel, and its round trip is the one reported.
        expect(Number.isFinite(notify.ms)).toBe(true);
        expect(notify.detail).toBe(
          `test notification on ${s.channel} received, round trip ${notify.ms} ms (a probe to running listeners)`,
        );
      }
    }
    expect(byName(checks, 'backend A').detail).toContain('422');
    expect(byName(checks, 'backend B').detail).toContain('/sensores_b/predecir-bomba-b');

    // The backend saw only the two empty probes; no sensor table got a row.
    expect(h.backend.requests.map((r) => [r.path, r.body])).toEqual(
      expect.arrayContaining([
        ['/sensores/predecir-bomba', {}],
        ['/sensores_b/predecir-bomba-b', {}],
      ]),
    );
    expect(h.backend.requests.every((r) => Object.keys(r.body).length === 0)).toBe(true);
    for (const s of sensors) {
      const { rows } = await h.admin.query<{ n: number }>(
        `SELECT count(*)::int AS n FROM ${quoteIdent(s.table)}`,
      );
      expect(rows[0]?.n).toBe(0);
    }

    const table = formatTable(checks);
    expect(table.trim().split('\n')).toHaveLength(checks.length + 1);
    expect(table).toMatch(/^PASS {2}connection/m);
    expect(toJson(checks)).toMatchObject({ ok: true, failed: 0, passed: checks.length });
    expect(allOutput(checks)).not.toContain(h.db.config.password as string);
    expect(allOutput(checks)).not.toContain(API_KEY);
  });

  it("accepts a plant's own trigger under its own name, by function source or by argument", async () => {
    const [bySource, byArgument] = h.pumps.A.sensors;
    if (!bySource || !byArgument) throw new Error('pump A has sensors');
    await h.admin.query(`
      DROP TRIGGER ${TRIGGER_NAME} ON ${quoteIdent(bySource.table)};
      DROP TRIGGER ${TRIGGER_NAME} ON ${quoteIdent(byArgument.table)};
      CREATE OR REPLACE FUNCTION public.planta_avisa() RETURNS trigger LANGUAGE plpgsql AS $fn$
      BEGIN
        PERFORM pg_notify('${bySource.channel}', json_build_object('id_sensor', NEW.id)::text);
        RETURN NEW;
      END $fn$;
      CREATE TRIGGER planta_trg AFTER INSERT ON ${quoteIdent(bySource.table)}
        FOR EACH ROW EXECUTE FUNCTION public.planta_avisa();
      CREATE OR REPLACE FUNCTION public.planta_generica() RETURNS trigger LANGUAGE plpgsql AS $fn$
      BEGIN
        PERFORM pg_notify(TG_ARGV[0], json_build_object('id_sensor', NEW.id)::text);
        RETURN NEW;
      END $fn$;
      CREATE TRIGGER planta_arg_trg AFTER INSERT ON ${quoteIdent(byArgument.table)}
        FOR EACH ROW EXECUTE FUNCTION public.planta_generica('${byArgument.channel}');
    `);
    try {
      const checks = await runDiagnostics(h.config);
      expect(failures(checks)).toEqual([]);
      expect(byName(checks, `trigger A/${bySource.channel}`).detail).toContain('planta_trg');
      expect(byName(checks, `trigger A/${byArgument.channel}`).detail).toContain('planta_arg_trg');
    } finally {
      await h.admin.query(`
        DROP TRIGGER planta_trg ON ${quoteIdent(bySource.table)};
        DROP TRIGGER planta_arg_trg ON ${quoteIdent(byArgument.table)};
      `);
    }
  });
});

describe('diagnose reports what was broken on purpose', () => {
  it('a dropped trigger fails that channel only, with the migrate hint', async () => {
    const s = h.pumps.B.sensors[3];
    if (!s) throw new Error('pump B has sensors');
    await h.admin.query(`DROP TRIGGER ${TRIGGER_NAME} ON ${quoteIdent(s.table)}`);
    const checks = await runDiagnostics(h.config);
    expect(failures(checks)).toEqual([`trigger B/${s.channel}`]);
    const c = byName(checks, `trigger B/${s.channel}`);
    expect(c.detail).toContain(s.table);
    expect(c.hint).toContain('pump-monitor migrate');
    expect(formatTable(checks)).toMatch(
      new RegExp(`^FAIL {2}trigger B/${s.channel} .*-> fix: run pump-monitor migrate`, 'm'),
    );
  });

  it('a disabled trigger fails, with the statement that enables it', async () => {
    const s = h.pumps.A.sensors[5];
    if (!s) throw new Error('pump A has sensors');
    await h.admin.query(`ALTER TABLE ${quoteIdent(s.table)} DISABLE TRIGGER ${TRIGGER_NAME}`);
    const checks = await runDiagnostics(h.config);
    expect(failures(checks)).toEqual([`trigger A/${s.channel}`]);
    expect(byName(checks, `trigger A/${s.channel}`).detail).toContain('disabled');
    expect(byName(checks, `trigger A/${s.channel}`).hint).toContain('ENABLE TRIGGER');
  });

  it('a missing table fails its table and trigger checks', async () => {
    const s = h.pumps.A.sensors[7];
    if (!s) throw new Error('pump A has sensors');
    await h.admin.query(`DROP TABLE ${quoteIdent(s.table)}`);
    const checks = await runDiagnostics(h.config);
    expect(failures(checks)).toEqual([`table A/${s.table}`, `trigger A/${s.channel}`]);
    expect(byName(checks, `table A/${s.table}`).detail).toContain('does not exist');
    expect(byName(checks, `table A/${s.table}`).hint).toContain('pump-monitor migrate');
    // LISTEN/NOTIFY on the channel itself still works.
    expect(byName(checks, `notify A/${s.channel}`).ok).toBe(true);
  });

  it('a wrong API key fails both backend checks and the key appears nowhere', async () => {
    const wrong = 'wrong-key-d41d8cd98f';
    const checks = await runDiagnostics({ ...h.config, apiKey: wrong });
    expect(failures(checks)).toEqual(['backend A', 'backend B']);
    for (const name of ['backend A', 'backend B']) {
      expect(byName(checks, name).detail).toContain('401');
      expect(byName(checks, name).hint).toContain('API_KEY');
    }
    expect(h.backend.requests.some((r) => r.apiKey === wrong)).toBe(true);
    expect(allOutput(checks)).not.toContain(wrong);
    expect(allOutput(checks)).not.toContain(API_KEY);
    expect(allOutput(checks)).not.toContain(h.db.config.password as string);
  });

  it('a backend that redirects fails its check with the status, the target and the fix', async () => {
    const target = 'https://prediction.example.net/v2/sensores/predecir-bomba';
    h.backend.behaviour = () => ({ status: 301, headers: { location: target } });
    const checks = await runDiagnostics(h.config);
    expect(failures(checks)).toEqual(['backend A', 'backend B']);
    const a = byName(checks, 'backend A');
    expect(a.detail).toContain('answered 301');
    expect(a.detail).toContain(target);
    expect(a.detail).toContain('none dead-lettered');
    expect(a.hint).toContain(h.pumps.A.baseUrlEnv);
  });

  it('a backend that never answers fails within the timeout', async () => {
    h.backend.behaviour = () => 'hang';
    const before = h.backend.requests.length;
    const checks = await runDiagnostics(h.config, { timeoutMs: 800 });
    expect(failures(checks)).toEqual(['backend A', 'backend B']);
    // Each probe reached the backend and got no answer: the client's own timeout ended it.
    expect(h.backend.requests.slice(before).map((r) => [r.path, r.status])).toEqual(
      expect.arrayContaining([
        ['/sensores/predecir-bomba', 0],
        ['/sensores_b/predecir-bomba-b', 0],
      ]),
    );
    for (const name of ['backend A', 'backend B']) {
      expect(byName(checks, name).detail).toContain('no answer within 800 ms');
    }
  });

  it('a wrong database password fails the connection without printing it', async () => {
    const password = 'not-the-password-93c1';
    const checks = await runDiagnostics({ ...h.config, database: { ...h.config.database, password } });
    expect(checks[0]).toMatchObject({ name: 'connection', ok: false });
    expect(checks[0]?.hint).toContain('DB_PASSWORD');
    expect(checks.filter((c) => c.name.startsWith('backend')).every((c) => c.ok)).toBe(true);
    expect(allOutput(checks)).not.toContain(password);
  });

  it('a stopped backend fails both backend checks with the BASE_URL hints', async () => {
    const port = h.backend.port;
    await h.backend.stop();
    try {
      const checks = await runDiagnostics(h.config);
      expect(failures(checks)).toEqual(['backend A', 'backend B']);
      expect(byName(checks, 'backend A').detail).toContain('ECONNREFUSED');
      expect(byName(checks, 'backend A').hint).toContain('BASE_URL ');
      expect(byName(checks, 'backend B').hint).toContain('BASE_URL_B');
    } finally {
      await h.backend.start(port);
    }
  });
});

function cli(args: string[]): Promise<CliRun> {
  return runCli(args, testEnv(h.db, h.backend));
}

describe('pump-monitor diagnose (the CLI as a child process)', () => {
  it('exits 0 when healthy and 1 when broken, prints valid JSON and never the password', async () => {
    const secrets = [h.db.config.password as string, API_KEY];

    const healthy = await cli(['diagnose', '--json']);
    expect(healthy.stderr).toBe('');
    expect(healthy.code).toBe(0);
    const good = JSON.parse(healthy.stdout) as { ok: boolean; failed: number; checks: Check[] };
    expect(good.ok).toBe(true);
    expect(good.failed).toBe(0);
    for (const secret of secrets) expect(healthy.stdout + healthy.stderr).not.toContain(secret);

    const s = h.pumps.A.sensors[0];
    if (!s) throw new Error('pump A has sensors');
    await h.admin.query(`DROP TRIGGER ${TRIGGER_NAME} ON ${quoteIdent(s.table)}`);

    const broken = await cli(['diagnose', '--json']);
    expect(broken.code).toBe(1);
    const bad = JSON.parse(broken.stdout) as { ok: boolean; failed: number; checks: Check[] };
    expect(bad.ok).toBe(false);
    expect(bad.checks.filter((c) => !c.ok).map((c) => c.name)).toEqual([`trigger A/${s.channel}`]);
    for (const secret of secrets) expect(broken.stdout + broken.stderr).not.toContain(secret);

    const table = await cli(['diagnose']);
    expect(table.code).toBe(1);
    expect(table.stdout).toMatch(new RegExp(`^FAIL {2}trigger A/${s.channel} .*-> fix: `, 'm'));
    expect(table.stdout).toMatch(/1 of \d+ checks failed/);
    for (const secret of secrets) expect(table.stdout + table.stderr).not.toContain(secret);
  });
});
