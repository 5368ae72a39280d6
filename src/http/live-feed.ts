import type { ServerResponse } from 'node:http';

export interface LiveFeedOptions {
  /** Builds the model every client is sent; called once per tick, whatever the number of clients. */
  build: () => unknown;
  /** Most clients at once. */
  maxClients: number;
  tickMs?: number;
}

/**
 * The status page's Server-Sent Events: one model built and serialized per tick, the same frame written
 * to every client. The clock runs only while someone listens.
 */
export class LiveFeed {
  readonly maxClients: number;
  /** Models built so far: one per tick while there are clients, never one per client. */
  modelsBuilt = 0;
  private readonly build: () => unknown;
  private readonly tickMs: number;
  private readonly clients = new Set<ServerResponse>();
  private timer: NodeJS.Timeout | undefined;
  /** The last tick's frame; a client that joins between ticks is sent it at once. */
  private latest: string | undefined;

  constructor(o: LiveFeedOptions) {
    this.build = o.build;
    this.maxClients = o.maxClients;
    this.tickMs = o.tickMs ?? 1_000;
  }

  get clientCount(): number {
    return this.clients.size;
  }

  get full(): boolean {
    return this.clients.size >= this.maxClients;
  }

  /** Starts the event stream on `res`. False, with nothing written, when the feed is full. */
  add(res: ServerResponse): boolean {
    if (this.full) return false;
    res.writeHead(200, {
      'content-type': 'text/event-stream',
      'cache-control': 'no-cache',
      connection: 'keep-alive',
    });
    this.clients.add(res);
    const leave = () => this.remove(res);
    res.once('close', leave);
    res.once('error', leave);
    if (this.latest === undefined) this.tick();
    else this.write(res, this.latest);
    this.timer ??= setInterval(() => this.tick(), this.tickMs);
    return true;
  }

  /** Builds the model once and sends it to every client. Public so tests can drive the clock. */
  tick(): void {
    if (this.clients.size === 0) return;
    this.latest = `data: ${JSON.stringify(this.build())}\n\n`;
    this.modelsBuilt += 1;
    for (const res of this.clients) this.write(res, this.latest);
  }

  /** Ends every stream (server shutdown). */
  close(): void {
    for (const res of this.clients) res.end();
    this.clients.clear();
    this.stopClock();
  }

  private write(res: ServerResponse, frame: string): void {
    // A client that has not read the last frame skips this one: its buffer stays one frame deep.
    if (res.destroyed || res.writableEnded || res.writableNeedDrain) return;
    res.write(frame);
  }

  private remove(res: ServerResponse): void {
    this.clients.delete(res);
    if (this.clients.size === 0) this.stopClock();
  }

  private stopClock(): void {
    clearInterval(this.timer);
    this.timer = undefined;
    this.latest = undefined;
  }
}
