/** A test's clean-up step; `label` names it (and where it is) if it does not finish. */
export type Cleanup = (() => Promise<unknown>) & { label?: () => string };

/**
 * Runs a test's clean-ups, the last pushed first. A step that fails is let go (a process already gone,
 * a socket already closed); a step still running after `boundMs` is left behind and named, and the hook
 * fails with every such name once the others have run, instead of timing out without saying which.
 */
export async function runCleanups(cleanups: Cleanup[], boundMs = 45_000): Promise<void> {
  const stuck: string[] = [];
  for (const c of cleanups.splice(0).reverse()) {
    let timer: NodeJS.Timeout | undefined;
    const outcome = await Promise.race([
      c().then(
        () => 'done',
        () => 'done',
      ),
      new Promise<string>((resolve) => {
        timer = setTimeout(() => resolve('stuck'), boundMs);
      }),
    ]);
    clearTimeout(timer);
    if (outcome === 'stuck') stuck.push(c.label?.() ?? c.toString().slice(0, 120));
  }
  if (stuck.length > 0) throw new Error(`clean-up steps unfinished after ${boundMs} ms: ${stuck.join('; ')}`);
}
