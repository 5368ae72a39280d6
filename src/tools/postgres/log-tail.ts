import type { ChildProcess } from 'node:child_process';

const LOG_TAIL_LINES = 40;

/** Forwards PostgreSQL output line by line and keeps the last lines for error messages. */
export class LogTail {
  private lines: string[] = [];

  constructor(private readonly sink: (line: string) => void) {}

  readonly push = (chunk: unknown): void => {
    const text = chunk instanceof Error ? chunk.message : String(chunk);
    for (const line of text.split(/\r?\n/)) {
      if (line.trim() !== '') this.note(line);
    }
  };

  note(line: string): void {
    this.lines.push(line);
    if (this.lines.length > LOG_TAIL_LINES) this.lines.shift();
    try {
      this.sink(line);
    } catch {
      // A failing log sink must not break the server's stderr handling.
    }
  }

  reset(): void {
    this.lines = [];
  }

  mentionsPortInUse(): boolean {
    return this.lines.some((line) => line.includes('Address already in use'));
  }

  recent(): string {
    return this.lines.join('\n');
  }
}
/** Collects a child's output into the log tail, and resolves once `marker` has appeared on stderr. */
export function watchOutput(child: ChildProcess, log: LogTail, marker?: string): Promise<void> {
  return new Promise((resolve, reject) => {
    let recent = '';
    child.stdout?.on('data', log.push);
    child.stderr?.on('data', (chunk: Buffer) => {
      log.push(chunk);
      if (marker === undefined) return;
      // The marker may arrive split across two chunks.
      recent = (recent + chunk.toString('utf8')).slice(-4 * marker.length);
      if (recent.includes(marker)) resolve();
    });
    child.once('error', reject);
    child.once('close', (code, signal) => {
      if (marker === undefined && code === 0) resolve();
      else reject(new Error(`exited (code ${code ?? 'none'}, signal ${signal ?? 'none'})`));
    });
  });
}
