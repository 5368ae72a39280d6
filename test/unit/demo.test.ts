import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  type DemoState,
  demoFiles,
  processStartTime,
  removeDemoState,
  resolveDemoTarget,
  writeDemoState,
  writeSecretFile,
} from '../../src/cli/demo.js';
import { ConfigError, loadConfig } from '../../src/config/env.js';

const dir = mkdtempSync(join(tmpdir(), 'pm-demo-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function stateFor(pid: number, files = demoFiles({ PGDATA_DIR: join(dir, 'pg') })): DemoState {
  return {
    pid,
    ...(processStartTime(pid) ? { pidStartTime: processStartTime(pid) } : {}),
    startedAt: new Date().toISOString(),
    database: { host: '127.0.0.1', port: 54321, database: 'pump_monitor', user: 'postgres' },
    passwordFile: files.passwordFile,
    backendUrl: 'http://127.0.0.1:18000',
    apiKeyFile: files.apiKeyFile,
    statusUrl: 'http://127.0.0.1:8080/',
    dataDir: files.dataDir,
  };
}

describe('resolveDemoTarget', () => {
  const env = { PGDATA_DIR: join(dir, 'pg') };
  const files = demoFiles(env);

  it('leaves a configured environment as it is', () => {
    const configured = { DB_HOST: 'plant-db', BASE_URL: 'http://backend:8000' };
    expect(resolveDemoTarget(configured)).toEqual({ kind: 'configured', env: configured });
  });

  it('says that nothing is configured and nothing runs when there is no state file', () => {
    expect(() => resolveDemoTarget(env)).toThrow(ConfigError);
    expect(() => resolveDemoTarget(env)).toThrow(
      /nothing is configured .* no npm start is running .*does not exist/,
    );
  });

  it('uses the running npm start: its database, backend, password and API key from their files', async () => {
    await writeSecretFile(files.passwordFile, 'pw-0123456789');
    await writeSecretFile(files.apiKeyFile, 'key-0123456789');
    await writeDemoState(files, stateFor(process.pid));
    expect(statSync(files.apiKeyFile).mode & 0o777).toBe(0o600);

    const target = resolveDemoTarget(env);
    expect(target.kind).toBe('demo');
    const config = loadConfig(target.env, { requireDatabase: true, requireBackend: true });
    expect(config.database).toMatchObject({
      host: '127.0.0.1',
      port: 54321,
      database: 'pump_monitor',
      user: 'postgres',
      password: 'pw-0123456789',
    });
    expect(config.apiKey).toBe('key-0123456789');
    expect(config.pumps.map((p) => p.baseUrl)).toEqual([
      'http://127.0.0.1:18000/sensores',
      'http://127.0.0.1:18000/sensores_b',
    ]);
  });

  it('does not take a stopped run, or a process that reused its pid, for a running one', async () => {
    await writeDemoState(files, stateFor(2 ** 22 + 17));
    expect(() => resolveDemoTarget(env)).toThrow(/names process \d+, which is no longer running/);
    await writeDemoState(files, { ...stateFor(process.pid), pidStartTime: '1' });
    expect(() => resolveDemoTarget(env)).toThrow(/no longer running/);
  });

  it('removes only its own state on stop', async () => {
    await writeDemoState(files, stateFor(process.pid + 1));
    await removeDemoState(files, process.pid);
    expect(() => statSync(files.stateFile)).not.toThrow();
    await removeDemoState(files, process.pid + 1);
    expect(() => statSync(files.stateFile)).toThrow();
    writeFileSync(files.stateFile, 'not json');
    expect(() => resolveDemoTarget(env)).toThrow(/is not a state file written by npm start/);
  });
});
