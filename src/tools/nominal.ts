/**
 * Nominal operating points of the feed-water pumps, for the simulator and the reference backend only.
 * They are plausible values for a combined-cycle plant's boiler feed pumps, not measurements: the
 * reference backend scores deviation from them, and the simulator draws readings around them.
 */
export interface Nominal {
  mean: number;
  /** Typical spread (one standard deviation) in normal operation. */
  std: number;
}

const byField: Record<string, Nominal> = {
  corriente_motor: { mean: 245, std: 6 },
  flujo_salida_12fpmfc: { mean: 410, std: 12 },
  temperatura_estator: { mean: 72, std: 1.5 },
  presion_succion_baa: { mean: 5.2, std: 0.15 },
  presion_agua_mp: { mean: 31, std: 0.8 },
  posicion_valvula_recirc: { mean: 48, std: 2.5 },
  voltaje_barra: { mean: 6600, std: 35 },
  vibracion_axial: { mean: 2.1, std: 0.15 },
  vibracion_x_descanso: { mean: 1.8, std: 0.12 },
  vibracion_y_descanso: { mean: 1.9, std: 0.12 },
  temp_bomba: { mean: 58, std: 1.2 },
  temp_motor: { mean: 61, std: 1.2 },
  temp_empuje: { mean: 63, std: 1.3 },
  flujo_agua: { mean: 520, std: 15 },
  flujo_agua_vapor_alta: { mean: 520, std: 15 },
  flujo_agua_recalentador: { mean: 305, std: 10 },
  flujo_agua_domo_mp: { mean: 495, std: 14 },
  flujo_agua_domo_ap: { mean: 505, std: 14 },
  flujo_descarga_ap: { mean: 980, std: 25 },
  excentricidad_bomba: { mean: 0.05, std: 0.004 },
  salida_bomba: { mean: 1000, std: 20 },
  presion_agua: { mean: 128, std: 2 },
  presion_agua_ap: { mean: 128, std: 2 },
  mw_brutos_gas: { mean: 102, std: 3 },
  temp_ambiental: { mean: 26, std: 1 },
  temperatura_ambiental: { mean: 26, std: 1 },
  temperatura_agua_alim_ap: { mean: 152, std: 2 },
  // Sensors of the plant-2026-03 profile. A table both pumps read holds one measurement, so the fields
  // the two pumps give it share a nominal point (mw_brutos_gas and mw_brutos_generacion_gas, ...).
  mw_brutos_generacion_gas: { mean: 102, std: 3 },
  vibracion_x_interno: { mean: 1.8, std: 0.12 },
  vibracion_y_interno: { mean: 1.9, std: 0.12 },
  vibracion_x_externo: { mean: 1.6, std: 0.12 },
  vibracion_y_externo: { mean: 1.7, std: 0.12 },
  temp_agua_alim_domo_mp: { mean: 152, std: 2 },
  presion_agua_alimentacion_econ_ap: { mean: 131, std: 2 },
  presion_agua_econ_ap: { mean: 131, std: 2 },
  temp_descanso_bomba: { mean: 58, std: 1.2 },
  temp_descanso_empuje: { mean: 63, std: 1.3 },
  temp_descanso_motor: { mean: 61, std: 1.2 },
};

/**
 * Tables whose measurement two pumps name differently enough for their field nominals to disagree.
 * presion_agua_b is pump B's AP economiser pressure (presion_agua_ap); since cfeea47 pump A reads it as
 * presion_agua_mp, whose own nominal (31 barg, the MP pressure) it does not have.
 */
const byTable: Record<string, Nominal> = {
  presion_agua_b: { mean: 128, std: 2 },
};

/** The nominal point of a field; unknown fields (a new pump's) get a generic one. */
export function nominalFor(field: string): Nominal {
  return byField[field] ?? { mean: 100, std: 5 };
}

/** The nominal point of a sensor: its table's when the table has one of its own, else its field's. */
export function nominalOf(sensor: { table: string; field: string }): Nominal {
  return byTable[sensor.table] ?? nominalFor(sensor.field);
}
