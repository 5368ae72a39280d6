/**
 * One unit's mode, with the transitions it allows: a transition not in the table is a fault of the
 * engine and throws, instead of leaving two flags that disagree. graphile-worker's LocalQueue holds its
 * mode the same way.
 */
export class Mode<M extends string> {
  constructor(
    private readonly name: string,
    private current: M,
    private readonly allowed: { readonly [K in M]: readonly M[] },
  ) {}

  get value(): M {
    return this.current;
  }

  is(...modes: M[]): boolean {
    return modes.includes(this.current);
  }

  /** Moves to `next`; staying in the same mode is always allowed and does nothing. */
  to(next: M): void {
    if (next === this.current) return;
    if (!this.allowed[this.current].includes(next)) {
      throw new Error(`${this.name}: no transition from ${this.current} to ${next}`);
    }
    this.current = next;
  }
}
