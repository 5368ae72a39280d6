import { EventEmitter } from 'node:events';
import pg from 'pg';
import type { Logger } from 'pino';
import type { DatabaseConfig } from '../config/env.js';
import { CONNECT_TIMEOUT_MS, describePgError, engineSessionConfig } from '../store/db.js';
import {
  abortSession,
  destroySession,
  endSession,
  endStaleSessions,
  listeningChannels,
  listenOn,
  streamHorizon,
} from '../store/sessions.js';
import { sleep } from '../util/clock.js';

export interface ReconnectLimits {
  /** `MAX_INTENTOS_INICIAL`: connection attempts at start-up before giving up. */
  maxInitialAttempts: number;
  /** `MAX_RECONEXIONES`: consecutive failed attempts after a good connection before giving up. */
  maxReconnects: number;
  /** `TIEMPO_ESPERA_BASE`: the first wait; it doubles per failed attempt up to maxDelayMs. */
  baseDelayMs: number;
  maxDelayMs: number;
}

export interface ListenerOptions {
  db: DatabaseConfig;
  channels: string[];
  reconnect: ReconnectLimits;
  heartbeat: { intervalMs: number; timeoutMs: number };
  logger: Logger;
  /** This replica's own application_name for the LISTEN session (unique per process). */
  sessionName: string;
  /**
   * How long a session may take to open, from the connection to its LISTEN answered; past it the session
   * is torn down and counted as a failed attempt. Default: CONNECT_TIMEOUT_MS plus the heartbeat's timeout.
   */
  openTimeoutMs?: number;
  /** Injectable for tests of the backoff schedule. */
  sleep?: (ms: number, signal: AbortSignal) => Promise<boolean>;
}

export type ListenerState = 'idle' | 'connecting' | 'listening' | 'backoff' | 'closed' | 'failed';

/** The original's schedule: base, doubling, capped (5, 10, 20, 40, 60 s by default). */
export function backoffSchedule(failures: number, baseMs: number, maxMs: number): number {
  return Math.min(maxMs, baseMs * 2 ** Math.max(0, failures - 1));
}

export interface ListenerEvents {
  notification: [channel: string, payload: string];
  /** After every (re)connect, once every channel is LISTENed: the moment to catch up from the tables. */
  listening: [info: { reconnect: boolean }];
  disconnected: [reason: string];
  /** The limits are exhausted: the process should exit non-zero so the orchestrator restarts it. */
  fatal: [error: Error];
  heartbeat: [latencyMs: number];
}

/** The supervisor's counters as /status, /metrics and the page read them. */
export interface ListenerCounters {
  readonly state: ListenerState;
  /** `intentos_conexion`: failed tries in the current attempt to connect. */
  readonly intentosConexion: number;
  /** `reconexiones_consecutivas`: consecutive failures since the last good connection. */
  readonly reconexionesConsecutivas: number;
  /** Connections lost and made again since start. */
  readonly reconnects: number;
  readonly connectedSince: number | undefined;
  readonly lastHeartbeatAt: number | undefined;
  readonly lastHeartbeatMs: number | undefined;
  readonly lastError: string | undefined;
  /** Heartbeats sent so far, over every connection (answered or not). */
  readonly heartbeatsSent: number;
}

/** A read-only view of the listener: its counters, whether it listens, and on how many channels. */
export interface ListenerView {
  readonly state: ListenerState;
  readonly listening: boolean;
  readonly channelCount: number;
  counters(): ListenerCounters;
}

/**
 * One dedicated LISTEN connection, supervised: it LISTENs on every channel, checks with a heartbeat that the
 * session is alive and still listening, and reconnects with the original's counters and backoff.
 */
export class Listener extends EventEmitter<ListenerEvents> implements ListenerView {
  /** The supervisor's counters: written here only, read through `counters()`. */
  private readonly c: { -readonly [K in keyof ListenerCounters]: ListenerCounters[K] } = {
    state: 'idle',
    intentosConexion: 0,
    reconexionesConsecutivas: 0,
    reconnects: 0,
    connectedSince: undefined,
    lastHeartbeatAt: undefined,
    lastHeartbeatMs: undefined,
    lastError: undefined,
    heartbeatsSent: 0,
  };

  get state(): ListenerState {
    return this.c.state;
  }

  /** A copy of the counters: read, never written, from outside. */
  counters(): ListenerCounters {
    return { ...this.c };
  }

  private client: pg.Client | undefined;
  private everConnected = false;
  private readonly closing = new AbortController();
  private heartbeatTimer: NodeJS.Timeout | undefined;
  /** A heartbeat is waiting for its answer. */
  private beating = false;
  private supervisor: Promise<void> | undefined;
  private lost: (() => void) | undefined;
  private readonly sleep: (ms: number, signal: AbortSignal) => Promise<boolean>;

  constructor(private readonly o: ListenerOptions) {
    super();
    this.sleep = o.sleep ?? sleep;
  }

  get listening(): boolean {
    return this.c.state === 'listening';
  }

  /** Resolves once listening for the first time; rejects when the start-up attempts are exhausted. */
  start(): Promise<void> {
    return new Promise((resolve, reject) => {
      const onListening = () => {
        this.off('fatal', onFatal);
        resolve();
      };
      const onFatal = (err: Error) => {
        this.off('listening', onListening);
        reject(err);
      };
      this.once('listening', onListening);
      this.once('fatal', onFatal);
      this.supervisor = this.supervise();
    });
  }

  get channelCount(): number {
    return this.o.channels.length;
  }

  /** Stops listening, cancels any backoff and closes the connection. */
  async close(): Promise<void> {
    this.closing.abort();
    this.stopHeartbeat();
    this.lost?.();
    const c = this.client;
    this.client = undefined;
    if (c) await endQuietly(c);
    await this.supervisor;
    if (this.c.state !== 'failed') this.c.state = 'closed';
  }

  private async supervise(): Promise<void> {
    const { reconnect, logger } = this.o;
    while (!this.closing.signal.aborted) {
      this.c.state = 'connecting';
      try {
        await this.connectAndListen();
      } catch (err) {
        if (this.closing.signal.aborted) return;
        this.c.lastError = describePgError(err);
        this.c.intentosConexion += 1;
        if (this.everConnected) this.c.reconexionesConsecutivas += 1;
        const limit = this.everConnected ? reconnect.maxReconnects : reconnect.maxInitialAttempts;
        const count = this.everConnected ? this.c.reconexionesConsecutivas : this.c.intentosConexion;
        if (count >= limit) {
          this.c.state = 'failed';
          const what = this.everConnected ? 'MAX_RECONEXIONES' : 'MAX_INTENTOS_INICIAL';
          const fatal = new Error(
            `gave up connecting to PostgreSQL after ${count} consecutive failures (${what}=${limit}): ${this.c.lastError}`,
          );
          this.emit('fatal', fatal);
          return;
        }
        const delay = backoffSchedule(this.c.intentosConexion, reconnect.baseDelayMs, reconnect.maxDelayMs);
        logger.warn(
          {
            attempt: count,
            // Bounded: each attempt is written (util/logger.ts, RepeatLimiter); unbounded, repeats are counted.
            ...(Number.isFinite(limit) ? { of: limit } : {}),
            intentos_conexion: this.c.intentosConexion,
            reconexiones_consecutivas: this.c.reconexionesConsecutivas,
            delay_ms: delay,
            err: this.c.lastError,
          },
          'connection to PostgreSQL failed; retrying',
        );
        this.c.state = 'backoff';
        await this.sleep(delay, this.closing.signal);
        continue;
      }
      // Listening: wait until the connection is lost or closed.
      await new Promise<void>((resolve) => {
        this.lost = resolve;
      });
      this.lost = undefined;
      this.stopHeartbeat();
      this.c.connectedSince = undefined;
      if (this.closing.signal.aborted) return;
      this.c.reconnects += 1;
      this.emit('disconnected', this.c.lastError ?? 'connection lost');
      logger.warn({ err: this.c.lastError }, 'LISTEN connection lost; reconnecting');
    }
  }

  private async connectAndListen(): Promise<void> {
    const client = new pg.Client(engineSessionConfig(this.o.db, this.o.sessionName));
    const onGone = (reason: string) => {
      if (this.client !== client) return;
      this.client = undefined;
      this.c.lastError = reason;
      if (this.c.state === 'listening') this.c.state = 'connecting';
      client.removeAllListeners('notification');
      destroySession(client);
      this.lost?.();
    };
    client.on('error', (err) => onGone(describePgError(err)));
    client.on('end', () => onGone('connection ended'));
    client.on('notification', (msg) => {
      if (msg.payload !== undefined) this.emit('notification', msg.channel, msg.payload);
    });
    // The opening is bounded as a whole: a server that logs in and then goes silent (a network dropping
    // packets) would otherwise hold it until TCP gives up. A close ends it at once.
    const bound = this.o.openTimeoutMs ?? CONNECT_TIMEOUT_MS + this.o.heartbeat.timeoutMs;
    const timer = setTimeout(
      () => abortSession(client, `the LISTEN session did not open within ${bound} ms`),
      bound,
    );
    const onClose = () => abortSession(client, 'the listener is closing');
    this.closing.signal.addEventListener('abort', onClose, { once: true });
    try {
      await client.connect();
      // A previous session of ours that died half-open may still be LISTENing at the server; it would
      // hold back the notification queue until the server noticed. End it.
      await endStaleSessions(client, this.o.sessionName);
      // Quoted: channels are identifiers and may need quoting (case, punctuation).
      await listenOn(client, this.o.channels);
    } catch (err) {
      client.removeAllListeners('notification');
      destroySession(client);
      throw err;
    } finally {
      clearTimeout(timer);
      this.closing.signal.removeEventListener('abort', onClose);
    }
    if (this.closing.signal.aborted) {
      await endQuietly(client);
      return;
    }
    this.client = client;
    const reconnect = this.everConnected;
    this.everConnected = true;
    this.c.intentosConexion = 0;
    this.c.reconexionesConsecutivas = 0;
    this.c.connectedSince = Date.now();
    this.c.state = 'listening';
    this.startHeartbeat(client);
    this.o.logger.info({ channels: this.o.channels.length, reconnect }, 'listening');
    this.emit('listening', { reconnect });
  }

  private startHeartbeat(client: pg.Client): void {
    this.stopHeartbeat();
    this.heartbeatTimer = setInterval(() => void this.beat(client), this.o.heartbeat.intervalMs);
  }

  private stopHeartbeat(): void {
    if (this.heartbeatTimer) clearInterval(this.heartbeatTimer);
    this.heartbeatTimer = undefined;
  }

  /**
   * The horizon checkpoints are bounded by (see stableBounds): a transaction older than it has finished,
   * and its notifications have been handled. Undefined while not listening or when the session does not
   * answer within the heartbeat's timeout.
   */
  async horizon(): Promise<number | undefined> {
    const client = this.client;
    if (!client || !this.listening) return undefined;
    let timer: NodeJS.Timeout | undefined;
    try {
      const timeout = new Promise<undefined>((resolve) => {
        timer = setTimeout(() => resolve(undefined), this.o.heartbeat.timeoutMs);
      });
      const x = await Promise.race([streamHorizon(client), timeout]);
      return this.client === client ? x : undefined;
    } catch {
      return undefined; // the supervisor sees the broken session itself
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * Checks that the session answers within the timeout and still listens on every channel. While one
   * heartbeat waits for its answer no other is sent (an interval shorter than the timeout would pile them
   * up on a silent socket); the waiting one's timeout decides.
   */
  private async beat(client: pg.Client | undefined = this.client): Promise<boolean> {
    if (!client || this.client !== client || this.beating) return false;
    this.beating = true;
    this.c.heartbeatsSent += 1;
    const started = performance.now();
    let timer: NodeJS.Timeout | undefined;
    try {
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new Error(`heartbeat got no answer within ${this.o.heartbeat.timeoutMs} ms`)),
          this.o.heartbeat.timeoutMs,
        );
      });
      const listening = await Promise.race([listeningChannels(client), timeout]);
      const missing = this.o.channels.filter((c) => !listening.has(c));
      if (missing.length > 0) throw new Error(`no longer listening on ${missing.join(', ')}`);
      this.c.lastHeartbeatMs = performance.now() - started;
      this.c.lastHeartbeatAt = Date.now();
      this.emit('heartbeat', this.c.lastHeartbeatMs);
      return true;
    } catch (err) {
      if (this.client !== client) return false;
      this.o.logger.warn({ err: describePgError(err) }, 'heartbeat failed; reconnecting');
      // A half-open socket never errors by itself: tear it down so the supervisor reconnects.
      client.emit('error', err as Error);
      return false;
    } finally {
      clearTimeout(timer);
      this.beating = false;
    }
  }
}

async function endQuietly(client: pg.Client): Promise<void> {
  client.removeAllListeners('notification');
  await endSession(client, 2_000);
}
