import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../../src/config/env.js';
import {
  builtinProfiles,
  distinctSensorTables,
  loadDefinitions,
  loadPumpDefinitions,
  type PumpDefinition,
  profileDir,
} from '../../src/config/pumps.js';

const PROFILE = 'plant-2026-03';
const plant = loadDefinitions(profileDir(PROFILE));

function pump(id: string, from: PumpDefinition[] = plant.pumps): PumpDefinition {
  const p = from.find((x) => x.id === id);
  if (!p) throw new Error(`no pump ${id}`);
  return p;
}

// Expected values, read off /work/shared/spec/plant-2026-03.json (cfeea47's campos_requeridos and
// required_fields, in the order the listeners list their channels).
const VECTOR_A = [
  'corriente_motor',
  'mw_brutos_gas',
  'temp_ambiental',
  'temp_bomba',
  'temp_empuje',
  'temp_motor',
  'vibracion_axial',
  'voltaje_barra',
  'excentricidad_bomba',
  'flujo_agua_recalentador',
  'flujo_agua',
  'posicion_valvula_recirc',
  'presion_succion_baa',
  'temperatura_estator',
  'flujo_salida_12fpmfc',
  'flujo_agua_domo_ap',
  'flujo_agua_domo_mp',
  'presion_agua_mp',
  'presion_agua',
];
const VECTOR_B = [
  'corriente_motor',
  'excentricidad_bomba',
  'flujo_descarga_ap',
  'flujo_agua_domo_ap',
  'flujo_agua_domo_mp',
  'presion_agua_ap',
  'temperatura_agua_alim_ap',
  'temperatura_estator',
  'vibracion_axial',
  'vibracion_x_descanso',
  'vibracion_y_descanso',
  'flujo_agua_recalentador',
  'flujo_agua_vapor_alta',
  'temperatura_ambiental',
  'voltaje_barra',
];
const SHARED_TABLES = [
  'mw_brutos_generacion_gas',
  'temperatura_ambiental',
  'voltaje_barra',
  'flujo_agua_recalentador',
  'flujo_agua_vapor_alta',
  'flujo_agua_domo_ap_b',
  'flujo_agua_domo_mp_b',
  'presion_agua_b',
  'temperatura_agua_alim_b',
  'presion_agua_alimentacion_econ_ap',
];
const VECTORLESS_CHANNELS = [
  'canal_vibracion_x_descanso_interno_bomba_1a',
  'canal_vibracion_y_descanso_interno_bomba_1a',
  'canal_vibracion_x_descanso_externo',
  'canal_vibracion_y_descanso_externo',
  'canal_presion_agua_alimentacion_econ_ap',
  'canal_temperatura_descanso_interno_bomba_b',
  'canal_temperatura_descanso_interna_empuje_bomba_b',
  'canal_temperatura_descanso_interna_motor_bomba_b',
  'canal_vibracion_x_descanso_externo_b',
  'canal_vibracion_y_descanso_externo_b',
  'canal_presion_succion_baa_b',
  'canal_posicion_valvula_recirc_b',
];

describe('the plant-2026-03 profile', () => {
  it('has 25 channels per pump, 40 distinct sensor tables, 10 of them read by both pumps', () => {
    const a = pump('A');
    const b = pump('B');
    for (const p of [a, b]) {
      expect(p.sensors, p.id).toHaveLength(25);
      expect(new Set(p.sensors.map((s) => s.channel)).size, p.id).toBe(25);
    }
    const tables = distinctSensorTables(plant.pumps);
    expect(tables).toHaveLength(40);
    const tablesOf = (p: PumpDefinition) => new Set(p.sensors.map((s) => s.table));
    const shared = [...tablesOf(a)].filter((t) => tablesOf(b).has(t));
    expect(shared).toEqual(SHARED_TABLES);
    // A shared table is the same channel in both pumps, each with its own field and endpoint.
    for (const t of shared) {
      const sa = a.sensors.find((s) => s.table === t);
      const sb = b.sensors.find((s) => s.table === t);
      expect(sa?.channel, t).toBe(sb?.channel);
    }
    const presion = (p: PumpDefinition) => p.sensors.find((s) => s.table === 'presion_agua_b')?.field;
    expect([presion(a), presion(b)]).toEqual(['presion_agua_mp', 'presion_agua_ap']);
  });

  it('has the logbook streams separately: 2 tables, none of them a sensor table', () => {
    expect(plant.logbooks).toHaveLength(1);
    const [logbook] = plant.logbooks;
    expect(logbook).toMatchObject({ kind: 'logbook', id: 'bitacoras', endpoint: '/gm-bitacoras/clasificar' });
    expect(logbook?.streams).toEqual([
      { channel: 'canal_gm_bitacora_a', table: 'gm_bitacoras_a', tabla: 'a', pump: 'A' },
      { channel: 'canal_gm_bitacora_b', table: 'gm_bitacoras_b', tabla: 'b', pump: 'B' },
    ]);
    const sensorTables = new Set(distinctSensorTables(plant.pumps).map((t) => t.table));
    for (const s of logbook?.streams ?? []) expect(sensorTables.has(s.table)).toBe(false);
  });

  it("builds A's vector from exactly its 19 model fields and B's from its 15, all of them awaited", () => {
    expect(pump('A').vectorFields).toEqual(VECTOR_A);
    expect(pump('B').vectorFields).toEqual(VECTOR_B);
    expect(pump('A').minFields).toBe(19);
    expect(pump('B').minFields).toBe(15);
    // salida_bomba left A's list; the backend defaults it.
    expect(pump('A').vectorFields).not.toContain('salida_bomba');
    expect(pump('A').sensors.filter((s) => !s.inVector)).toHaveLength(6);
    expect(pump('B').sensors.filter((s) => !s.inVector)).toHaveLength(9);
    // Two of B's channels feed temperatura_agua_alim_ap: one vector field, two sensors.
    const alim = pump('B').sensors.filter((s) => s.field === 'temperatura_agua_alim_ap');
    expect(alim.map((s) => s.table)).toEqual(['temperatura_agua_alim_b', 'temperatura_agua_alim_ap_b']);
  });

  it("warns about the facts file's findings: one endpoint fed by two tables, 12 channels in no vector", () => {
    const endpoint = plant.warnings.filter((w) => w.includes('no longer names one row'));
    expect(endpoint).toHaveLength(1);
    expect(endpoint[0]).toContain('/sensores_b/prediccion_temperatura_agua_alim');
    expect(endpoint[0]).toContain('temperatura_agua_alim_b, temperatura_agua_alim_ap_b');
    expect(endpoint[0]).toContain(join(profileDir(PROFILE), 'b.json'));
    const vectorless = plant.warnings.filter((w) => w.includes("feeds no pump's vector"));
    expect(vectorless).toHaveLength(12);
    expect(vectorless.map((w) => /channel (\S+)/.exec(w)?.[1])).toEqual(VECTORLESS_CHANNELS);
    expect(plant.warnings).toHaveLength(13);
    for (const w of plant.warnings) expect(w).not.toContain('\n');
  });
});

describe('the default wiring', () => {
  it('stays pumps/a.json and pumps/b.json: 20 and 15 sensors, every one in the vector, no warnings', () => {
    const defaults = loadDefinitions();
    expect(defaults.pumps.map((p) => [p.id, p.sensors.length, p.minFields])).toEqual([
      ['A', 20, 15],
      ['B', 15, 15],
    ]);
    for (const p of defaults.pumps) {
      expect(p.kind).toBe('pump');
      expect(p.vectorFields).toEqual(p.sensors.map((s) => s.field));
    }
    expect(defaults.logbooks).toEqual([]);
    expect(defaults.warnings).toEqual([]);
    expect(loadPumpDefinitions()).toEqual(defaults.pumps);
  });
});

// ---- The linter, on folders written for each case --------------------------------------------------

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

interface SensorSpec {
  channel: string;
  table?: string;
  field?: string;
  endpoint?: string;
  inVector?: boolean;
}

function pumpFile(id: string, sensors: SensorSpec[], extra: Record<string, unknown> = {}) {
  return {
    id,
    name: `Bomba ${id}`,
    baseUrlEnv: id === 'A' ? 'BASE_URL' : `BASE_URL_${id.toUpperCase()}`,
    pathPrefix: id === 'A' ? '/sensores' : `/sensores_${id.toLowerCase()}`,
    unifiedPath: '/predecir-bomba',
    minFields: 1,
    sensors: sensors.map((s) => ({
      channel: s.channel,
      table: s.table ?? s.channel.replace(/^canal_/, ''),
      field: s.field ?? s.channel.replace(/^canal_/, ''),
      endpoint: s.endpoint ?? `/prediccion_${s.channel.replace(/^canal_/, '')}`,
      ...(s.inVector === undefined ? {} : { inVector: s.inVector }),
    })),
    ...extra,
  };
}

function folder(files: Record<string, unknown>): string {
  const dir = mkdtempSync(join(tmpdir(), 'pumps-lint-'));
  dirs.push(dir);
  for (const [name, content] of Object.entries(files)) {
    writeFileSync(join(dir, name), typeof content === 'string' ? content : JSON.stringify(content));
  }
  return dir;
}

/** The loader's error for a folder: one line, naming the file. */
function rejection(files: Record<string, unknown>, file: string): string {
  const dir = folder(files);
  let message = '';
  try {
    loadDefinitions(dir);
  } catch (err) {
    message = (err as Error).message;
  }
  expect(message, 'the folder should be rejected').not.toBe('');
  expect(message).not.toContain('\n');
  expect(message).toContain(join(dir, file));
  return message;
}

describe('the definitions linter: errors', () => {
  it('rejects one pump listing a channel twice, for different fields or endpoints, or verbatim', () => {
    const fields = rejection(
      { 'a.json': pumpFile('A', [{ channel: 'canal_x' }, { channel: 'canal_x', field: 'otro' }]) },
      'a.json',
    );
    expect(fields).toMatch(/pump A lists channel canal_x for field x → \/prediccion_x and for field otro/);
    const endpoints = rejection(
      { 'a.json': pumpFile('A', [{ channel: 'canal_x' }, { channel: 'canal_x', endpoint: '/otro' }]) },
      'a.json',
    );
    expect(endpoints).toContain('→ /otro');
    const verbatim = rejection(
      { 'a.json': pumpFile('A', [{ channel: 'canal_x' }, { channel: 'canal_x' }]) },
      'a.json',
    );
    expect(verbatim).toContain('twice with the same field and endpoint');
  });

  it('rejects a field that is in the vector on one sensor and not on another', () => {
    const message = rejection(
      {
        'a.json': pumpFile('A', [
          { channel: 'canal_x', field: 'f' },
          { channel: 'canal_y', field: 'f', inVector: false },
        ]),
      },
      'a.json',
    );
    expect(message).toContain('field f is inVector on one sensor and not on another');
  });

  it('rejects a channel that fires for two tables, across files', () => {
    const message = rejection(
      {
        'a.json': pumpFile('A', [{ channel: 'canal_x', table: 't1' }]),
        'b.json': pumpFile('B', [{ channel: 'canal_x', table: 't2' }]),
      },
      'b.json',
    );
    expect(message).toContain('channel canal_x fires for table t2 in pump B but for table t1 in pump A');
    expect(message).toContain('a.json');
  });

  it('rejects a table notified on two channels, and one pump reading one table twice', () => {
    const across = rejection(
      {
        'a.json': pumpFile('A', [{ channel: 'canal_x', table: 't' }]),
        'b.json': pumpFile('B', [{ channel: 'canal_y', table: 't' }]),
      },
      'b.json',
    );
    expect(across).toContain('table t notifies channel canal_y in pump B but channel canal_x in pump A');
    const within = rejection(
      {
        'a.json': pumpFile('A', [
          { channel: 'canal_x', table: 't' },
          { channel: 'canal_y', table: 't' },
        ]),
      },
      'a.json',
    );
    expect(within).toContain('pump A reads table t on two channels (canal_x, canal_y)');
  });

  it('counts minFields, defaults and optionalFields in vector fields', () => {
    const sensors = [{ channel: 'canal_x' }, { channel: 'canal_y', inVector: false }];
    expect(rejection({ 'a.json': pumpFile('A', sensors, { minFields: 2 }) }, 'a.json')).toContain(
      'minFields 2 exceeds its 1 vector fields',
    );
    expect(rejection({ 'a.json': pumpFile('A', sensors, { defaults: { y: 1 } }) }, 'a.json')).toContain(
      'defaults names y, a field with inVector false',
    );
    expect(rejection({ 'a.json': pumpFile('A', sensors, { optionalFields: { z: 0 } }) }, 'a.json')).toContain(
      'optionalFields names z, not a field of its sensors',
    );
    expect(
      rejection({ 'a.json': pumpFile('A', [{ channel: 'canal_y', inVector: false }]) }, 'a.json'),
    ).toContain('no sensor with inVector true');
  });

  it('rejects a logbook table or channel that is also a sensor table, ids defined twice, unknown kinds', () => {
    const logbook = {
      kind: 'logbook',
      id: 'bitacoras',
      name: 'Bitácoras',
      streams: [{ channel: 'canal_x', table: 'x', tabla: 'a', pump: 'A' }],
    };
    expect(
      rejection({ 'a.json': pumpFile('A', [{ channel: 'canal_x' }]), 'z.json': logbook }, 'z.json'),
    ).toContain('table x (channel canal_x) is both a sensor table and a logbook table');
    expect(
      rejection(
        {
          'a.json': pumpFile('A', [{ channel: 'canal_x' }]),
          'b.json': pumpFile('a', [{ channel: 'canal_y' }]),
        },
        'b.json',
      ),
    ).toContain('id a is already defined by');
    expect(rejection({ 'a.json': { ...logbook, kind: 'valve' } }, 'a.json')).toContain(
      'kind: got "valve", expected "pump" (the default) or "logbook"',
    );
    const twice = {
      ...logbook,
      streams: [...logbook.streams, { ...logbook.streams[0], channel: 'canal_y' }],
    };
    expect(rejection({ 'l.json': twice }, 'l.json')).toContain('lists tabla "a" twice');
  });

  it('allows a table shared by two pumps on one channel, each with its own field and endpoint', () => {
    const dir = folder({
      'a.json': pumpFile('A', [{ channel: 'canal_x', table: 't', field: 'fa', endpoint: '/pa' }]),
      'b.json': pumpFile('B', [{ channel: 'canal_x', table: 't', field: 'fb', endpoint: '/pb' }]),
    });
    const loaded = loadDefinitions(dir);
    expect(loaded.warnings).toEqual([]);
    expect(distinctSensorTables(loaded.pumps)).toEqual([{ table: 't', channel: 'canal_x' }]);
  });
});

describe('the definitions linter: warnings', () => {
  it('warns when two tables post to one endpoint and when a channel feeds no vector', () => {
    const dir = folder({
      'a.json': pumpFile('A', [
        { channel: 'canal_x', field: 'f', endpoint: '/p' },
        { channel: 'canal_y', field: 'f', endpoint: '/p' },
        { channel: 'canal_z', inVector: false },
      ]),
    });
    const { warnings, pumps } = loadDefinitions(dir);
    expect(pumps[0]?.vectorFields).toEqual(['f']);
    expect(warnings).toHaveLength(2);
    expect(warnings[0]).toBe(
      `pump definition ${join(dir, 'a.json')}: /sensores/p (on BASE_URL) receives rows of 2 tables (x, y, from A canal_x, A canal_y), so its id_sensor no longer names one row`,
    );
    expect(warnings[1]).toContain("channel canal_z feeds no pump's vector");
  });

  it("does not warn about a channel another pump's vector uses", () => {
    const dir = folder({
      'a.json': pumpFile('A', [{ channel: 'canal_x' }]),
      'b.json': pumpFile('B', [{ channel: 'canal_w' }, { channel: 'canal_x', inVector: false }]),
    });
    expect(loadDefinitions(dir).warnings).toEqual([]);
  });
});

// ---- Selection: PUMPS, PUMPS_PROFILE, PUMPS_DIR ----------------------------------------------------

describe('selecting definitions in the environment', () => {
  it('loads a built-in profile by name, with its logbooks and warnings', () => {
    const config = loadConfig({ PUMPS_PROFILE: PROFILE, BASE_URL: 'http://plant:8000/sensores' });
    expect(config.profile).toBe(PROFILE);
    expect(config.pumps.map((p) => p.id)).toEqual(['A', 'B']);
    expect(config.pumps[0]?.vectorFields).toEqual(VECTOR_A);
    expect(config.warnings).toHaveLength(13);
    expect(config.logbooks).toHaveLength(1);
    expect(config.logbooks[0]).toMatchObject({
      id: 'bitacoras',
      baseUrl: 'http://plant:8000',
      url: 'http://plant:8000/gm-bitacoras/clasificar',
      timeoutMs: 120_000,
    });
  });

  it('removes a trailing /sensores or /sensores_b from BASE_URL for the logbook, and nothing else', () => {
    const urlFor = (BASE_URL: string) =>
      loadConfig({ PUMPS_PROFILE: PROFILE, PUMPS: 'bitacoras', BASE_URL }).logbooks[0]?.url;
    expect(urlFor('http://plant:8000')).toBe('http://plant:8000/gm-bitacoras/clasificar');
    expect(urlFor('http://plant:8000/sensores/')).toBe('http://plant:8000/gm-bitacoras/clasificar');
    expect(urlFor('https://plant/api/sensores_b')).toBe('https://plant/api/gm-bitacoras/clasificar');
    expect(urlFor('http://plant:8000/sensoresx')).toBe('http://plant:8000/sensoresx/gm-bitacoras/clasificar');
    expect(() => urlFor('plant:8000?x=1')).toThrow(ConfigError);
  });

  it('selects by id with PUMPS, ignoring case, pumps and logbooks alike', () => {
    const select = (PUMPS: string) => {
      const c = loadConfig({ PUMPS_PROFILE: PROFILE, PUMPS });
      return [c.pumps.map((p) => p.id), c.logbooks.map((l) => l.id)];
    };
    expect(select('A,B')).toEqual([['A', 'B'], []]);
    expect(select('b, BITACORAS')).toEqual([['B'], ['bitacoras']]);
    expect(select('bitacoras')).toEqual([[], ['bitacoras']]);
    expect(() => select('A,C')).toThrow(/PUMPS: unknown id "C"; expected one of A, B, bitacoras/);
  });

  it('names the built-in profiles for an unknown one, and refuses PUMPS_PROFILE with PUMPS_DIR', () => {
    expect(builtinProfiles()).toEqual(['default', PROFILE]);
    expect(() => loadConfig({ PUMPS_PROFILE: 'plant-2025' })).toThrow(
      'PUMPS_PROFILE: unknown profile "plant-2025"; the built-in profiles are default, plant-2026-03',
    );
    expect(() => loadConfig({ PUMPS_PROFILE: '../pumps' })).toThrow(ConfigError);
    expect(() => loadConfig({ PUMPS_PROFILE: PROFILE, PUMPS_DIR: profileDir(PROFILE) })).toThrow(
      /PUMPS_PROFILE: got "plant-2026-03", expected unset when PUMPS_DIR is set/,
    );
    const byDefault = loadConfig({ PUMPS_PROFILE: 'default' });
    expect(byDefault.pumps.map((p) => p.sensors.length)).toEqual([20, 15]);
  });

  it('takes any folder with PUMPS_DIR, and reports its problems under that name', () => {
    const viaDir = loadConfig({ PUMPS_DIR: profileDir(PROFILE), PUMPS: 'A' });
    expect(viaDir.pumps.map((p) => p.sensors.length)).toEqual([25]);
    expect(viaDir.profile).toBeUndefined();
    const bad = folder({ 'a.json': '{"id": ' });
    expect(() => loadConfig({ PUMPS_DIR: bad })).toThrow(
      /^PUMPS_DIR: pump definition .*a\.json: not valid JSON/,
    );
  });

  it('reads LOGBOOK_TIMEOUT_MS, and requires BASE_URL for a logbook when the backend is required', () => {
    const env = { PUMPS_PROFILE: PROFILE, PUMPS: 'bitacoras' };
    expect(loadConfig({ ...env, LOGBOOK_TIMEOUT_MS: '5000' }).logbooks[0]?.timeoutMs).toBe(5000);
    expect(() => loadConfig({ ...env, LOGBOOK_TIMEOUT_MS: '0' })).toThrow(/LOGBOOK_TIMEOUT_MS: got "0"/);
    expect(() => loadConfig({ ...env, API_KEY: 'k' }, { requireBackend: true })).toThrow(
      /BASE_URL: got nothing, expected the backend base URL for Bitácoras de operación/,
    );
  });

  it('keeps the default wiring without PUMPS_PROFILE: no logbooks, no warnings', () => {
    const config = loadConfig({});
    expect(config.pumps.map((p) => p.id)).toEqual(['A', 'B']);
    expect(config.logbooks).toEqual([]);
    expect(config.warnings).toEqual([]);
    expect(config.profile).toBeUndefined();
  });
});
