/**
 * The physical limit of the source: a bare `pg` client that LISTENs on every sensor channel and only
 * counts notifications. Runs in its own process, like the engine, so both are measured the same way.
 *
 * Parent → child: {type:'expect', n} | {type:'stop'}
 * Child → parent: ready, done {count, firstAt, lastAt}, error
 */
import pg from 'pg';
import { loadConfig } from '../src/config/env.js';
import { clientConfig, quoteIdent } from '../src/store/db.js';
import { now } from './stats.js';

export type ListenerCommand = { type: 'expect'; n: number } | { type: 'stop' };
export type ListenerMessage =
  | { type: 'ready' }
  | { type: 'done'; count: number; firstAt: number; lastAt: number }
  | { type: 'error'; message: string };

function send(m: ListenerMessage): void {
  if (process.connected) process.send?.(m);
}

async function main(): Promise<void> {
  const config = loadConfig(process.env, { requireDatabase: true });
  if (!config.database) throw new Error('DATABASE_URL is required');
  const channels = config.pumps.flatMap((p) => p.sensors.map((s) => s.channel));
  const client = new pg.Client(clientConfig(config.database, 'bench-bare-listener'));
  client.on('error', (err) => send({ type: 'error', message: err.message }));
  await client.connect();
  let count = 0;
  let firstAt = 0;
  let lastAt = 0;
  let expected = Number.POSITIVE_INFINITY;
  let reported = false;
  client.on('notification', () => {
    const t = now();
    if (count === 0) firstAt = t;
    count += 1;
    lastAt = t;
    if (!reported && count >= expected) {
      reported = true;
      send({ type: 'done', count, firstAt, lastAt });
    }
  });
  await client.query(channels.map((c) => `LISTEN ${quoteIdent(c)}`).join(';'));
  const lifetime = setTimeout(() => process.exit(3), 30 * 60_000);
  const stop = async () => {
    clearTimeout(lifetime);
    await client.end().catch(() => {});
    setTimeout(() => process.exit(0), 20);
  };
  process.on('disconnect', () => void stop());
  process.on('message', (m: ListenerCommand) => {
    if (m.type === 'expect') {
      expected = m.n;
      if (!reported && count >= expected) {
        reported = true;
        send({ type: 'done', count, firstAt, lastAt });
      }
    } else if (m.type === 'stop') void stop();
  });
  send({ type: 'ready' });
}

main().catch((err: Error) => {
  send({ type: 'error', message: err.message });
  setTimeout(() => process.exit(1), 50);
});
