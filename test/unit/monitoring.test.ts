import { execFile, execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import pino from 'pino';
import { afterAll, describe, expect, it } from 'vitest';
import { type Config, type DatabaseConfig, loadConfig } from '../../src/config/env.js';
import { Monitor } from '../../src/engine/monitor.js';

const dir = resolve(import.meta.dirname, '../../deploy/monitoring');
const rules = readFileSync(join(dir, 'alerts.yml'), 'utf8');
const dashboard = JSON.parse(readFileSync(join(dir, 'dashboard.json'), 'utf8')) as Dashboard;
const execFileAsync = promisify(execFile);
const scratch = mkdtempSync(join(tmpdir(), 'pm-monitoring-'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

interface Panel {
  type: string;
  title: string;
  targets?: { expr: string }[];
}
interface Dashboard {
  uid: string;
  panels: Panel[];
}

/**
 * The metric names a Monitor registers, on either source (SOURCE=replication adds the slot's): it is
 * built, not started, so nothing connects anywhere.
 */
function registeredMetrics(): Set<string> {
  const names = new Set<string>();
  for (const source of ['notify', 'replication']) {
    const config = loadConfig(
      { DATABASE_URL: 'postgres://nobody:nothing@127.0.0.1:1/none', SOURCE: source },
      { requireDatabase: true },
    ) as Config & { database: DatabaseConfig };
    const monitor = new Monitor({ config, logger: pino({ level: 'silent' }) });
    for (const m of monitor.units.telemetry.registry.getMetricsAsArray()) names.add(m.name);
  }
  return names;
}

/** pump_monitor_* names in a text; a histogram's series name its family (…_bucket, …_sum, …_count). */
function metricNames(text: string): string[] {
  const names = text.match(/\bpump_monitor_[a-z0-9_]+/g) ?? [];
  return [...new Set(names.map((n) => n.replace(/_(bucket|sum|count)$/, '')))];
}

function dashboardExprs(): string[] {
  return dashboard.panels.flatMap((p) => (p.targets ?? []).map((t) => t.expr));
}

function hasPromtool(): boolean {
  try {
    execFileSync('promtool', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

describe('deploy/monitoring', () => {
  const registered = registeredMetrics();

  it('alerts on what was asked for, with metrics the engine exports', () => {
    const alerts = [...rules.matchAll(/^\s+- alert: (\w+)$/gm)].map((m) => m[1]);
    expect(alerts).toEqual(
      expect.arrayContaining([
        'PumpMonitorBreakerOpen',
        'PumpMonitorBackendRouteRefused',
        'PumpMonitorOutboxBacklogGrowing',
        'PumpMonitorDeadLettersRising',
        'PumpMonitorNotReady',
        'PumpMonitorNotificationQueueFilling',
        'PumpMonitorCatchUpLong',
        'PumpMonitorReplicationSlotBehind',
        'PumpFailureProbabilityHigh',
        'PumpSensorSilent',
        'PumpPredictionStale',
      ]),
    );
    const used = metricNames(rules);
    expect(used.length).toBeGreaterThan(5);
    for (const name of used) expect(registered.has(name), name).toBe(true);
    // The health metrics of issue 23 are what the health rules are written on.
    for (const name of [
      'pump_monitor_failure_probability',
      'pump_monitor_pump_health',
      'pump_monitor_channel_silent',
    ]) {
      expect(used, name).toContain(name);
    }
    // The failure-probability alert keeps firing past a dip (keep_firing_for) after its pending period.
    const high = rules.slice(rules.indexOf('alert: PumpFailureProbabilityHigh')).split('- alert:')[0] ?? '';
    expect(high).toMatch(/\n\s+for: \d+m\n/);
    expect(high).toMatch(/\n\s+keep_firing_for: \d+m\n/);
  });

  it('the dashboard queries only metrics the engine exports', () => {
    expect(dashboard.uid).toBe('pump-monitor');
    const exprs = dashboardExprs();
    expect(exprs.length).toBeGreaterThan(15);
    const used = metricNames(exprs.join('\n'));
    for (const name of used) expect(registered.has(name), name).toBe(true);
    // Every exported metric has a panel.
    for (const name of registered) expect(used, name).toContain(name);
  });

  it.runIf(hasPromtool())(
    'promtool accepts the rules, their unit tests and the dashboard queries',
    async () => {
      await execFileAsync('promtool', ['check', 'rules', join(dir, 'alerts.yml')]);
      await execFileAsync('promtool', ['test', 'rules', join(dir, 'alerts.test.yml')]);
      // The dashboard's queries as recording rules, Grafana's variables replaced: promtool parses each.
      const recorded = dashboardExprs().map((expr, i) => {
        const promql = expr
          .replaceAll('$__rate_interval', '5m')
          .replaceAll('$instance', '.*')
          .replaceAll('$pump', '.*');
        return `      - record: dashboard:query_${i}\n        expr: ${JSON.stringify(promql)}\n`;
      });
      const file = join(scratch, 'dashboard-queries.yml');
      writeFileSync(file, `groups:\n  - name: dashboard\n    rules:\n${recorded.join('')}`);
      await execFileAsync('promtool', ['check', 'rules', file]);
    },
  );
});
