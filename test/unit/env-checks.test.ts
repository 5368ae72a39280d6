import { describe, expect, it } from 'vitest';
import { ConfigError, hideUrlCredentials, loadConfig } from '../../src/config/env.js';

const DB = { DB_HOST: '127.0.0.1', DB_NAME: 'd', DB_USER: 'u', DB_PASSWORD: 'db-pw-not-shown' };

/** The one-line message loadConfig throws for an environment, or '' when it accepts it. */
function refusal(env: Record<string, string>, opts = {}): string {
  try {
    loadConfig(env, opts);
    return '';
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return (err as Error).message;
  }
}

describe('ports are integers 1..65535', () => {
  it.each([
    ['DB_PORT', '99999'],
    ['DB_PORT', '0'],
    ['DB_PORT', '-1'],
    ['DB_PORT', '5432.5'],
    ['DB_PORT', '1e3'],
    ['PORT', '65536'],
    ['PORT', '99999'],
  ])('%s=%s is refused in one line naming the variable', (name, value) => {
    const message = refusal({ ...DB, [name]: value });
    expect(message.startsWith(`${name}: got "${value}", expected a port`)).toBe(true);
    expect(message.split('\n')).toHaveLength(1);
  });

  it('the bounds themselves are accepted; PORT=0 still asks the system for a free port', () => {
    expect(loadConfig({ ...DB, DB_PORT: '1' }).database?.port).toBe(1);
    expect(loadConfig({ ...DB, DB_PORT: '65535' }).database?.port).toBe(65535);
    expect(loadConfig({ ...DB, PORT: '0' }).port).toBe(0);
    expect(loadConfig({ ...DB, PORT: '65535' }).port).toBe(65535);
  });

  it('DATABASE_URL with port 0 or 99999 is refused, its password hidden', () => {
    for (const port of ['0', '99999']) {
      const message = refusal({ DATABASE_URL: `postgres://u:url-pw-not-shown@127.0.0.1:${port}/d` });
      expect(message.startsWith('DATABASE_URL: got (hidden)')).toBe(true);
      expect(message).not.toContain('url-pw-not-shown');
    }
  });
});

describe('a backend URL with a user or password is refused, its secret hidden', () => {
  it.each([
    ['BASE_URL', 'http://alice:s3cret-pw@127.0.0.1:8000/sensores'],
    ['BASE_URL_B', 'https://alice:s3cret-pw@127.0.0.1:8000'],
    ['BASE_URL', 'http://s3cret-pw@127.0.0.1:8000'],
    // Other faults of a URL with credentials: shown hidden too.
    ['BASE_URL', 'http://alice:s3cret-pw@127.0.0.1:8000/sensores?x=1'],
    ['BASE_URL', 'ftp://alice:s3cret-pw@127.0.0.1/'],
    ['BASE_URL', 'http://alice:s3cret-pw@127.0.0.1:99999/'],
  ])('%s=%s', (name, value) => {
    const message = refusal({ ...DB, [name]: value });
    expect(message.startsWith(`${name}: got "`)).toBe(true);
    expect(message).not.toContain('s3cret-pw');
    expect(message).not.toContain('alice');
    expect(message).toContain('(hidden)@127.0.0.1');
    expect(message.split('\n')).toHaveLength(1);
  });

  it('the logbook streams read the same variable and refuse it the same way', () => {
    const message = refusal({
      ...DB,
      PUMPS_PROFILE: 'plant-2026-03',
      BASE_URL: 'http://alice:s3cret-pw@127.0.0.1:8000/sensores',
    });
    expect(message).toMatch(/^BASE_URL: got "http:\/\/\(hidden\)@127\.0\.0\.1:8000\/sensores"/);
    expect(message).not.toContain('s3cret-pw');
  });

  it('hideUrlCredentials works on text that is no URL at all', () => {
    expect(hideUrlCredentials('http://a:b@[bad/x')).toBe('http://(hidden)@[bad/x');
    expect(hideUrlCredentials('http://host/a@b')).toBe('http://host/a@b');
  });
});
