import { createServer, type Server, Socket } from 'node:net';

/**
 * A TCP proxy of the test's own between the engine and PostgreSQL, to break the network for real:
 * `blackhole()` stops forwarding on every open connection without closing it (a half-open socket),
 * `refuse()` closes everything and refuses new connections, `restore()` accepts again.
 */
export class TcpProxy {
  private server: Server | undefined;
  private readonly live = new Set<[Socket, Socket]>();
  private readonly silenced = new Set<[Socket, Socket]>();
  /** Held connections, each with what the server sent past the point where it was held. */
  private readonly held = new Map<[Socket, Socket], Buffer>();
  private holdNext = false;
  /** Connections accepted while the proxy swallows: never forwarded, never answered. */
  private readonly swallowed = new Set<Socket>();
  private swallowing = false;
  port = 0;

  constructor(
    private readonly targetPort: number,
    private readonly targetHost = '127.0.0.1',
  ) {}

  async start(port = 0): Promise<this> {
    const server = createServer((client) => this.accept(client));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, '127.0.0.1', () => resolve());
    });
    this.server = server;
    this.port = (server.address() as { port: number }).port;
    return this;
  }

  get connections(): number {
    return this.live.size;
  }

  /** Stops forwarding on the open connections; they stay open and silent. New connections still work. */
  blackhole(): void {
    for (const pair of this.live) {
      const [a, b] = pair;
      a.unpipe(b);
      b.unpipe(a);
      a.pause();
      b.pause();
      this.live.delete(pair);
      this.silenced.add(pair);
    }
  }

  /**
   * The database host is gone: the open connections go silent (`blackhole`) and new ones are accepted but
   * never forwarded nor answered, as a connection to a host that drops every packet hangs until the
   * client's own timeout. `restore()` forwards new connections again.
   */
  vanish(): void {
    this.blackhole();
    this.swallowing = true;
  }

  /**
   * Holds what the server sends on one connection, the one whose server side sees our end at `localPort`
   * (`pg_stat_activity.client_port`): the session stays up, its messages wait here until released.
   * Returns false when there is no such connection.
   */
  holdReplies(localPort: number): boolean {
    for (const pair of this.live) {
      const [client, upstream] = pair;
      if (upstream.localPort !== localPort) continue;
      upstream.unpipe(client);
      upstream.pause();
      this.held.set(pair, Buffer.alloc(0));
      return true;
    }
    return false;
  }

  /**
   * The next connection opened: what the server sends passes until the session is ready (its first
   * ReadyForQuery: logged in, no query answered yet) and is held from there on, as behind a network that
   * goes silent right after the log-in. The plain protocol only (no TLS).
   */
  holdAfterReady(): void {
    this.holdNext = true;
  }

  /** Forwards what the held connections received meanwhile, and goes on. */
  releaseReplies(): void {
    for (const [[client, upstream], rest] of this.held) {
      client.write(rest);
      upstream.pipe(client);
      upstream.resume();
    }
    this.held.clear();
  }

  /** Closes every connection and stops accepting new ones. */
  async refuse(): Promise<void> {
    for (const [a, b] of [...this.live, ...this.silenced]) {
      a.destroy();
      b.destroy();
    }
    for (const s of this.swallowed) s.destroy();
    this.live.clear();
    this.silenced.clear();
    this.swallowed.clear();
    const server = this.server;
    this.server = undefined;
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  /** Accepts connections again on the same port. */
  async restore(): Promise<void> {
    this.swallowing = false;
    if (!this.server) await this.start(this.port);
  }

  async stop(): Promise<void> {
    await this.refuse();
  }

  private accept(client: Socket): void {
    if (this.swallowing) {
      this.swallowed.add(client);
      client.on('error', () => {});
      client.on('close', () => this.swallowed.delete(client));
      client.pause();
      return;
    }
    const upstream = new Socket();
    const pair: [Socket, Socket] = [client, upstream];
    this.live.add(pair);
    const drop = () => {
      this.live.delete(pair);
      if (this.silenced.has(pair)) return; // a silenced pair stays half-open until the test ends
      client.destroy();
      upstream.destroy();
    };
    for (const s of pair) {
      s.on('error', drop);
      s.on('close', drop);
    }
    const holdAfterReady = this.holdNext;
    this.holdNext = false;
    upstream.connect(this.targetPort, this.targetHost, () => {
      client.pipe(upstream);
      if (holdAfterReady) this.passUntilReady(pair);
      else upstream.pipe(client);
    });
  }

  /** Forwards the server's messages (a type byte, then a length that counts itself) up to the first 'Z'. */
  private passUntilReady(pair: [Socket, Socket]): void {
    const [client, upstream] = pair;
    let seen = Buffer.alloc(0);
    let at = 0;
    const onData = (chunk: Buffer) => {
      seen = Buffer.concat([seen, chunk]);
      while (seen.length >= at + 5) {
        const type = seen[at];
        const end = at + 1 + seen.readUInt32BE(at + 1);
        if (seen.length < end) return;
        client.write(seen.subarray(at, end));
        at = end;
        if (type === 0x5a) {
          upstream.off('data', onData);
          upstream.pause();
          this.held.set(pair, seen.subarray(end));
          return;
        }
      }
    };
    upstream.on('data', onData);
  }
}
