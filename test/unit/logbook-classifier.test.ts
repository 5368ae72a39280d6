import { describe, expect, it } from 'vitest';
import {
  CLASSIFIER_METHOD,
  classifyLogbookEntry,
  normalize,
} from '../../src/tools/backend/logbook-classifier.js';
import { ENTRY_KINDS, type EntryKind, templatesOf } from '../../src/tools/logbook-entries.js';

describe('the keyword classifier of logbook entries', () => {
  it('says what it is', () => {
    expect(CLASSIFIER_METHOD).toBe('palabras clave');
  });

  it('puts every simulator template in the class its kind stands for', () => {
    const expected: Record<EntryKind, string> = {
      ronda: 'Rutina',
      turno: 'Rutina',
      mantenimiento: 'Mantenimiento',
      alarma: 'Alarma',
      vibracion: 'Falla de bomba',
    };
    for (const kind of ENTRY_KINDS) {
      for (const text of templatesOf(kind)) {
        expect(classifyLogbookEntry(text, 'A').clasificacion, text).toBe(expected[kind]);
      }
    }
  });

  it('gives an alert, naming the pump and the phrases, only for a suspected pump failure', () => {
    const failure = classifyLogbookEntry('Se detecta fuga en el sello y cavitación en la BAA.', 'B');
    expect(failure).toEqual({
      clasificacion: 'Falla de bomba',
      alerta_aviso:
        'Posible falla en la bomba B: fuga, cavitacion. Revisar en terreno y avisar a mantenimiento. ' +
        '(Aviso por palabras clave, no por un modelo de lenguaje.)',
      palabras_clave: ['fuga', 'cavitacion'],
    });
    expect(classifyLogbookEntry('Alarma de alto nivel en el desaireador.').alerta_aviso).toBeNull();
  });

  it('ignores a phrase negated within its clause, and compares without case or accents', () => {
    expect(classifyLogbookEntry('Sin fugas ni ruidos anormales. Sin novedad.').clasificacion).toBe('Rutina');
    expect(classifyLogbookEntry('No se observa fuga en la bomba. Ronda completa.').clasificacion).toBe(
      'Rutina',
    );
    // The negation does not reach past a comma into the next clause.
    expect(classifyLogbookEntry('Sin alarmas, fuga en la brida de descarga').clasificacion).toBe(
      'Falla de bomba',
    );
    expect(classifyLogbookEntry('VIBRACIÓN ELEVADA en descanso').clasificacion).toBe('Falla de bomba');
    expect(normalize('Calibración Árbol ÑANDÚ')).toBe('calibracion arbol nandu');
  });

  it('ranks failure over alarm over maintenance over routine, and leaves the rest unclassified', () => {
    expect(
      classifyLogbookEntry('Ronda: alarma de vibración alta, se avisa a mantenimiento').clasificacion,
    ).toBe('Falla de bomba');
    expect(classifyLogbookEntry('Ronda: alarma repuesta tras mantenimiento').clasificacion).toBe('Alarma');
    expect(classifyLogbookEntry('Ronda y lubricación de descansos').clasificacion).toBe('Mantenimiento');
    expect(classifyLogbookEntry('Visita de auditores a la sala de control.')).toEqual({
      clasificacion: 'Sin clasificar',
      alerta_aviso: null,
      palabras_clave: [],
    });
  });
});
