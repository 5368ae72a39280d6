/**
 * Operator logbook entries for the simulator: short Spanish notes of the kinds a control-room logbook
 * holds (rounds, shift hand-overs, maintenance, alarms, a pump's vibration). Invented text, plausible in
 * tone and numbers; every value is drawn around the nominal points of src/tools/nominal.ts.
 */
import { nominalFor } from './nominal.js';

export type EntryKind = 'ronda' | 'turno' | 'mantenimiento' | 'alarma' | 'vibracion';

export interface EntryContext {
  /** The pump the logbook belongs to ("A", "B"). */
  pump: string;
  /** The simulated time of the entry. */
  at: Date;
  /** 0..1: how far pump A's bearing has failed in the bearing-failure scenario (0 otherwise). */
  bearingWear: number;
  random: () => number;
}

export interface LogbookEntry {
  kind: EntryKind;
  text: string;
}

/** Relative weights of the kinds in normal operation. */
const WEIGHTS: Record<EntryKind, number> = {
  ronda: 45,
  turno: 15,
  mantenimiento: 20,
  alarma: 12,
  vibracion: 8,
};
/** With a failing bearing, vibration notes become this many times likelier at full wear. */
const WEAR_VIBRATION_FACTOR = 8;

type Template = (v: Values) => string;

interface Values {
  bomba: string;
  otra: string;
  hora: string;
  turno: string;
  ot: string;
  num: (field: string, extraStds?: number) => string;
  pick: <T>(items: readonly T[]) => T;
}

const TEMPLATES: Record<EntryKind, readonly Template[]> = {
  ronda: [
    (v) =>
      `Ronda de las ${v.hora}: bomba ${v.bomba} en servicio, presión de succión ${v.num('presion_succion_baa')} barg, ` +
      `corriente ${v.num('corriente_motor')} A. Sin fugas ni ruidos anormales. Sin novedad.`,
    (v) =>
      `Recorrido de planta, turno ${v.turno}. BAA ${v.bomba} operando normal, temperatura de descanso ` +
      `${v.num('temp_bomba')} °C, nivel de aceite correcto. Sin novedad.`,
    (v) =>
      `${v.hora} inspección visual de la bomba ${v.bomba}: sellos secos, sin goteo, ` +
      `${v.pick(['acoplamiento sin holgura', 'guardas en su lugar', 'drenajes cerrados'])}. Parámetros dentro de rango.`,
  ],
  turno: [
    (v) =>
      `Entrega de turno ${v.turno}: bomba ${v.bomba} en servicio, bomba ${v.otra} en reserva disponible. ` +
      `Generación ${v.num('mw_brutos_gas')} MW. Parámetros dentro de rango.`,
    (v) =>
      `Recibo turno ${v.turno} a las ${v.hora}. Bomba ${v.bomba} con flujo de descarga estable ` +
      `(${v.num('flujo_descarga_ap')} kg/h). Sin pendientes.`,
  ],
  mantenimiento: [
    (v) =>
      `Mantenimiento preventivo: lubricación de descansos de la bomba ${v.bomba} según OT ${v.ot}. ` +
      'Equipo queda disponible.',
    (v) =>
      `Se cambia filtro de aceite de la bomba ${v.bomba} (OT ${v.ot}). Prueba de funcionamiento satisfactoria.`,
    (v) =>
      `Calibración del transmisor de flujo de descarga de la bomba ${v.bomba} con instrumentista; ` +
      `lectura verificada en ${v.num('flujo_descarga_ap')} kg/h.`,
    (v) =>
      `Limpieza del filtro de succión de la BAA ${v.bomba} durante su reserva (OT ${v.ot}). ` +
      'Se normaliza el equipo.',
  ],
  alarma: [
    (v) =>
      `${v.hora} alarma de alta temperatura de estator en bomba ${v.bomba} (${v.num('temperatura_estator', 4)} °C). ` +
      `Se verifica en terreno; se normaliza tras ${v.pick(['5', '8', '12'])} min.`,
    (v) =>
      `Alarma de baja presión de succión BAA ${v.bomba} (${v.num('presion_succion_baa', -4)} barg). ` +
      `Se revisa válvula de recirculación, posición ${v.num('posicion_valvula_recirc')} %.`,
    (v) =>
      `${v.hora} alarma de bajo flujo de agua al domo AP. Bomba ${v.bomba} sigue en servicio, ` +
      'se ajusta la recirculación y la alarma se repone.',
  ],
  vibracion: [
    (v) =>
      `Bomba ${v.bomba}: vibración axial elevada en descanso de empuje (${v.num('vibracion_axial', 5)} mm/s) ` +
      'y ruido anormal en el rodamiento. Se informa a mantenimiento y se solicita análisis de vibraciones.',
    (v) =>
      `Se percibe vibración alta en la bomba ${v.bomba} y temperatura de descanso en aumento ` +
      `(${v.num('temp_bomba', 5)} °C). Queda en observación; se avisa al jefe de turno.`,
  ],
};

/** One entry: a kind drawn by weight (vibration likelier as pump A's bearing wears), then a template. */
export function logbookEntry(ctx: EntryContext): LogbookEntry {
  const wear = ctx.pump === 'A' ? Math.max(0, Math.min(1, ctx.bearingWear)) : 0;
  const weights = { ...WEIGHTS, vibracion: WEIGHTS.vibracion * (1 + wear * (WEAR_VIBRATION_FACTOR - 1)) };
  const kind = drawKind(weights, ctx.random);
  const pick = <T>(items: readonly T[]): T => items[Math.floor(ctx.random() * items.length)] as T;
  const template = pick(TEMPLATES[kind]);
  const hour = ctx.at.getUTCHours();
  const values: Values = {
    bomba: ctx.pump,
    otra: ctx.pump === 'A' ? 'B' : 'A',
    hora: ctx.at.toISOString().slice(11, 16),
    turno: hour < 8 ? 'noche' : hour < 16 ? 'mañana' : 'tarde',
    ot: String(40_000 + Math.floor(ctx.random() * 9_000)),
    num: (field, extraStds = 0) => {
      const n = nominalFor(field);
      return formatValue(n.mean + n.std * (extraStds + (ctx.random() - 0.5)), n.std);
    },
    pick,
  };
  return { kind, text: template(values) };
}

function drawKind(weights: Record<EntryKind, number>, random: () => number): EntryKind {
  const kinds = Object.keys(weights) as EntryKind[];
  const total = kinds.reduce((sum, k) => sum + weights[k], 0);
  let r = random() * total;
  for (const k of kinds) {
    r -= weights[k];
    if (r < 0) return k;
  }
  return kinds[kinds.length - 1] as EntryKind;
}

/** Spanish decimal comma, with as many decimals as the spread calls for. */
function formatValue(value: number, std: number): string {
  const decimals = std >= 5 ? 0 : std >= 0.5 ? 1 : 2;
  return value.toFixed(decimals).replace('.', ',');
}

/** Every template of a kind, filled with fixed values: for tests and docs. */
export function templatesOf(kind: EntryKind): string[] {
  const fixed: Values = {
    bomba: 'A',
    otra: 'B',
    hora: '08:00',
    turno: 'mañana',
    ot: '41234',
    num: (field, extraStds = 0) => formatValue(nominalFor(field).mean + extraStds * nominalFor(field).std, 1),
    pick: (items) => items[0] as never,
  };
  return TEMPLATES[kind].map((t) => t(fixed));
}

export const ENTRY_KINDS = Object.keys(WEIGHTS) as EntryKind[];
