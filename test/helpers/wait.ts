/**
 * Polls until `check` returns true; fails with `what` after `timeoutMs` (generous: machines are loaded),
 * and with what `explain` says of the state then, if given.
 */
export async function waitFor(
  what: string,
  check: () => boolean | Promise<boolean>,
  timeoutMs = 20_000,
  explain?: () => unknown,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 25));
  }
  const state = explain ? `; then: ${JSON.stringify(await explain())}` : '';
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${state}`);
}

export const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));
