/**
 * The reference backend's logbook classifier: a keyword matcher, and nothing more.
 *
 * The real backend sends each logbook entry to a large language model. This one does not, and does not
 * pretend to: it looks for fixed Spanish phrases, class by class in a fixed order of precedence, and says
 * so in every answer (`metodo: "palabras clave"`). It is there so that development and demos exercise the
 * logbook path end to end with answers a person can predict and check.
 *
 * - The text is compared without case or accents ("Vibración" and "vibracion" are the same).
 * - A phrase is ignored when one of the three words before it, in the same clause, is a negation
 *   ("sin fugas", "no se observa fuga", "ni ruidos anormales").
 * - The first class with a phrase left wins: Falla de bomba, Alarma, Mantenimiento, Rutina; none:
 *   Sin clasificar.
 * - Only Falla de bomba gets an alerta_aviso, naming the pump and the phrases found; the others get null.
 */

export const CLASSIFIER_METHOD = 'palabras clave';

export type LogbookClass = 'Falla de bomba' | 'Alarma' | 'Mantenimiento' | 'Rutina' | 'Sin clasificar';

export interface LogbookClassification {
  clasificacion: LogbookClass;
  /** The warning text for a suspected pump failure; null for every other class. */
  alerta_aviso: string | null;
  /** The phrases that decided the class, as they appear in the normalized text. */
  palabras_clave: string[];
}

interface Rule {
  clase: Exclude<LogbookClass, 'Sin clasificar'>;
  phrases: RegExp[];
}

/** In order of precedence. Patterns match the normalized text: lower case, no accents. */
const RULES: readonly Rule[] = [
  {
    clase: 'Falla de bomba',
    phrases: [
      /\bvibraci\w*(?: axial| radial)? (?:alta|elevada|excesiva|anormal|en aumento)\b/g,
      /\b(?:alta|elevada|excesiva) vibracion\b/g,
      /\bruidos? anormal(?:es)?\b/g,
      /\bfugas?\b/g,
      /\bgoteo\b/g,
      /\bcavitacion\b/g,
      /\bsobrecalentamiento\b/g,
      /\btemperatura(?: de descanso)? en aumento\b/g,
      /\b(?:rodamiento|sello) (?:danado|roto|con falla)\b/g,
      /\bdisparo de (?:la )?bomba\b/g,
    ],
  },
  {
    clase: 'Alarma',
    phrases: [/\balarmas?\b/g, /\bdisparo\b/g, /\btrip\b/g, /\bemergencia\b/g, /\bfalla\b/g],
  },
  {
    clase: 'Mantenimiento',
    phrases: [
      /\bmantenimiento\b/g,
      /\blubricacion\b/g,
      /\bengrase\b/g,
      /\bot \d+\b/g,
      /\borden de trabajo\b/g,
      /\bse cambia\b/g,
      /\bcambio de\b/g,
      /\bcalibracion\b/g,
      /\blimpieza\b/g,
    ],
  },
  {
    clase: 'Rutina',
    phrases: [
      /\bronda\b/g,
      /\brecorrido\b/g,
      /\bsin novedad\b/g,
      /\bentrega de turno\b/g,
      /\brecibo turno\b/g,
      /\bdentro de rango\b/g,
      /\boperando normal\b/g,
      /\binspeccion visual\b/g,
    ],
  },
];

const NEGATIONS = new Set(['sin', 'no', 'ni', 'nunca']);
const NEGATION_WINDOW = 3;

/** Lower case without accents (NFD, combining marks removed), so that keywords match either spelling. */
export function normalize(text: string): string {
  return text.normalize('NFD').replace(/\p{M}/gu, '').toLowerCase();
}

/** True when a negation is among the few words before `index`, within the same clause. */
function negated(text: string, index: number): boolean {
  const clause =
    text
      .slice(0, index)
      .split(/[.;:,()!?\n]/)
      .pop() ?? '';
  const words = clause.split(/\s+/).filter(Boolean).slice(-NEGATION_WINDOW);
  return words.some((w) => NEGATIONS.has(w));
}

function phrasesFound(text: string, rule: Rule): string[] {
  const found: string[] = [];
  for (const pattern of rule.phrases) {
    for (const m of text.matchAll(pattern)) {
      if (!negated(text, m.index) && !found.includes(m[0])) found.push(m[0]);
    }
  }
  return found;
}

/** Classifies one entry; `pump` ("A", "B") names the pump in the alert. */
export function classifyLogbookEntry(bitacora: string, pump?: string): LogbookClassification {
  const text = normalize(bitacora);
  for (const rule of RULES) {
    const palabras_clave = phrasesFound(text, rule);
    if (palabras_clave.length === 0) continue;
    const alerta_aviso =
      rule.clase === 'Falla de bomba'
        ? `Posible falla en la bomba${pump ? ` ${pump}` : ''}: ${palabras_clave.join(', ')}. ` +
          'Revisar en terreno y avisar a mantenimiento. (Aviso por palabras clave, no por un modelo de lenguaje.)'
        : null;
    return { clasificacion: rule.clase, alerta_aviso, palabras_clave };
  }
  return { clasificacion: 'Sin clasificar', alerta_aviso: null, palabras_clave: [] };
}
