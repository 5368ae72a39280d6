/**
 * A group's member rows are stored as one number each: `table_no * 2^40 + id`, where `table_no` numbers the
 * sensor table in the engine schema's checkpoints. Ids below 2^40 and table numbers below 2^13 stay exact
 * in a JavaScript number and in a bigint.
 */
export const MEMBER_SHIFT = 40;
export const MEMBER_ID_LIMIT = 2 ** MEMBER_SHIFT;
export const MEMBER_BITS_MASK = String(MEMBER_ID_LIMIT - 1);
export const MAX_TABLE_NO = 2 ** 13;

export function member(tableNo: number, id: number): number {
  return tableNo * MEMBER_ID_LIMIT + id;
}
