/**
 * Pure: no I/O, no timers. What the engine knows about one sensor table's rows: which are in flight, which were settled recently,
 * and the checkpoint, the id at or below which every row is settled (delivered, or dropped and recorded).
 *
 * The in-flight map and the recent ring also deduplicate by (table, id): the same row may arrive from two
 * triggers, or from a notification and the catch-up that overlaps it.
 */
export class TableProgress {
  /** id → parts still pending (group resolution, per-sensor post). */
  private readonly inflight = new Map<number, number>();
  /**
   * Ids a notification named, whose rows are being read (id → claims): not yet rows, so they do not
   * deduplicate, but the checkpoint stays below them until the read answers.
   */
  private readonly claims = new Map<number, number>();
  private readonly recent = new Set<number>();
  /** The last settled ids, oldest at ringPos once full; grown as rows settle, up to recentCapacity. */
  private readonly ring: number[] = [];
  private ringPos = 0;
  private maxSeen: number;
  /**
   * Rows from this id up may have been missed (the process just started, or the LISTEN connection was
   * lost): the checkpoint stays below it until a catch-up that began after the hold has read the table to
   * its end.
   */
  private holdAt = Number.POSITIVE_INFINITY;
  private holdSeq = 0;
  private static seq = 0;
  /** The checkpoint a catch-up under way began from: it may still read every row above it. */
  private catchUpFrom = Number.POSITIVE_INFINITY;
  /** The checkpoint as last written to the database (`saved`): catch-up reads from here. */
  private savedAt: number;

  constructor(
    readonly table: string,
    checkpoint: number,
    /** The table's number in the engine schema, for encoding members (`no << 40 | id`). */
    readonly no: number,
    private readonly recentCapacity = 8192,
  ) {
    this.maxSeen = checkpoint;
    this.savedAt = checkpoint;
  }

  /** The checkpoint as last written to the database: catch-up reads from here. */
  get persisted(): number {
    return this.savedAt;
  }

  /** Registers a row; false when it is already in flight or was settled recently (a duplicate). */
  begin(id: number, parts: number): boolean {
    if (this.inflight.has(id) || this.recent.has(id)) return false;
    this.inflight.set(id, parts);
    if (id > this.maxSeen) this.maxSeen = id;
    return true;
  }

  /** Rows may have been missed and a catch-up has not yet read the table to its end. */
  get held(): boolean {
    return this.holdAt !== Number.POSITIVE_INFINITY;
  }

  /** Whether `id` is at or below the saved checkpoint: settled, so a notification naming it repeats one. */
  passed(id: number): boolean {
    return id <= this.persisted;
  }

  /** A notification names `id`: the checkpoint stays below it until `unclaim` (its row was read, or not). */
  claim(id: number): void {
    this.claims.set(id, (this.claims.get(id) ?? 0) + 1);
  }

  unclaim(id: number): void {
    const n = this.claims.get(id);
    if (n === undefined) return;
    if (n > 1) this.claims.set(id, n - 1);
    else this.claims.delete(id);
  }

  /** Marks one part of a row done; the row is settled when no part is left. */
  settle(id: number): void {
    const left = this.inflight.get(id);
    if (left === undefined) return;
    if (left > 1) {
      this.inflight.set(id, left - 1);
      return;
    }
    this.inflight.delete(id);
    // Not allocated up front: 64 KB per reader, and a replica reads one table per sensor of every pump.
    if (this.ring.length < this.recentCapacity) this.ring.push(id);
    else {
      this.recent.delete(this.ring[this.ringPos] as number);
      this.ring[this.ringPos] = id;
      this.ringPos = (this.ringPos + 1) % this.recentCapacity;
    }
    this.recent.add(id);
  }

  /**
   * Holds rows above everything seen so far: notifications may be lost from here on. The checkpoint stays
   * below them until a catch-up started after this call has finished the table.
   */
  holdFromLatest(): void {
    this.holdFrom(this.maxSeen + 1);
  }

  /**
   * Holds rows from `id` up: one of them may have been missed (a notification whose row could not be
   * read). Lifted like holdFromLatest, by a catch-up begun after it that read the table to its end.
   */
  holdFrom(id: number): void {
    if (id < this.holdAt) this.holdAt = id;
    TableProgress.seq += 1;
    this.holdSeq = TableProgress.seq;
  }

  /**
   * A catch-up begins, from `persisted`. Returns a token to hand back to release() once it has read the
   * table to its end.
   */
  catchUpToken(): number {
    this.catchUpFrom = Math.min(this.catchUpFrom, this.persisted);
    return TableProgress.seq;
  }

  /** Lifts the hold unless a newer one was set after the catch-up began (a later catch-up lifts that). */
  release(token: number): void {
    if (this.holdSeq <= token) this.holdAt = Number.POSITIVE_INFINITY;
    this.catchUpFrom = Number.POSITIVE_INFINITY;
  }

  /**
   * The checkpoint `id` is written. Settled ids at or below it, and below where a catch-up under way began,
   * are forgotten: no catch-up reads them again, so only a notification could repeat them, and a repeated
   * notification comes right after its first (two triggers on one row). Without this, every reader kept
   * its last 8,192 settled ids: about 1 GB of heap for 4,000 readers (200 pumps of 20 sensors).
   */
  saved(id: number): void {
    if (id <= this.savedAt) return;
    this.savedAt = id;
    const upTo = Math.min(id, this.catchUpFrom);
    if (this.ring.length === 0 || !this.ring.some((x) => x <= upTo)) return;
    const oldestFirst =
      this.ringPos === 0
        ? this.ring
        : [...this.ring.slice(this.ringPos), ...this.ring.slice(0, this.ringPos)];
    const kept: number[] = [];
    for (const x of oldestFirst) {
      if (x > upTo) kept.push(x);
      else this.recent.delete(x);
    }
    this.ring.length = 0;
    this.ring.push(...kept);
    this.ringPos = 0;
  }

  /**
   * The highest id such that every row at or below it that the engine has seen is settled. Only rows read
   * from the table are seen, so it never passes the largest id read; a claim still being read holds it.
   */
  checkpoint(): number {
    let safe = Math.min(this.maxSeen, this.holdAt - 1);
    for (const id of this.inflight.keys()) if (id <= safe) safe = id - 1;
    for (const id of this.claims.keys()) if (id <= safe) safe = id - 1;
    return Math.max(safe, this.persisted);
  }
}
