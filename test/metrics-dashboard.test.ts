import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { before, describe, it } from 'node:test';
import { MetricsAggregator, SERIES, startWorkerMetrics } from '../src/metrics';
import { repoRoot } from './helpers/paths';

interface Target {
  expr: string;
  datasource?: { uid?: string };
}
interface Panel {
  title: string;
  datasource?: { uid?: string };
  targets?: Target[];
}

/** Every panel the dashboard must have: a title pattern and the series its queries must use. */
const REQUIRED: Array<{ title: RegExp; series: string[] }> = [
  { title: /accepted messages/i, series: [SERIES.messagesAccepted] },
  { title: /connections/i, series: [SERIES.connectionsTotal, SERIES.connectionsActive] },
  { title: /rejections/i, series: [SERIES.rejections] },
  { title: /queue depth/i, series: [SERIES.queueJobs] },
  { title: /oldest/i, series: [SERIES.queueOldestSeconds] },
  { title: /spool write/i, series: [`${SERIES.spoolWriteSeconds}_bucket`] },
  { title: /cpu per worker/i, series: ['spamtrapd_process_cpu_seconds_total'] },
  { title: /memory per worker/i, series: ['spamtrapd_process_resident_memory_bytes'] },
];

describe('Grafana dashboard', () => {
  let panels: Panel[];
  let dash: { panels: Panel[]; __inputs?: Array<{ name: string }> };
  /** Sample names the merged exposition really contains, histogram suffixes included. */
  const exposed = new Set<string>();

  before(async () => {
    dash = JSON.parse(fs.readFileSync(path.join(repoRoot(), 'docs', 'grafana-dashboard.json'), 'utf8'));
    panels = dash.panels;
    const agg = new MetricsAggregator({ queues: { scan: async () => ({ jobs: 0, oldestSeconds: null }), queues: ['incoming'] } });
    const msgs: unknown[] = [];
    const w = startWorkerMetrics({ slot: 0, send: (m) => void msgs.push(m) });
    w.stop();
    await w.pushNow();
    for (const m of msgs) agg.handleMessage(m);
    for (const m of (await agg.metrics()).body.matchAll(/^# TYPE (\S+) (\S+)$/gm)) {
      exposed.add(m[1]!);
      if (m[2] === 'histogram') for (const s of ['_bucket', '_sum', '_count']) exposed.add(m[1]! + s);
    }
  });

  it('declares the Prometheus datasource input and uses it in every panel and query', () => {
    assert.ok(dash.__inputs?.some((i) => i.name === 'DS_PROMETHEUS'));
    for (const p of panels) {
      assert.equal(p.datasource?.uid, '${DS_PROMETHEUS}', p.title);
      for (const t of p.targets ?? []) assert.equal(t.datasource?.uid, '${DS_PROMETHEUS}', p.title);
    }
  });

  it('has every required panel, each querying its series', () => {
    for (const req of REQUIRED) {
      const p = panels.find((x) => req.title.test(x.title));
      assert.ok(p, `no panel titled like ${req.title}`);
      const exprs = (p.targets ?? []).map((t) => t.expr).join('\n');
      for (const s of req.series) assert.match(exprs, new RegExp(`\\b${s}\\b`), `${p.title} must query ${s}`);
    }
  });

  it('queries only series the trap exposes', () => {
    assert.ok(exposed.has(SERIES.queueJobs) && exposed.has('spamtrapd_process_cpu_seconds_total'));
    for (const p of panels) {
      for (const t of p.targets ?? []) {
        const names = t.expr.match(/\bspamtrapd_[a-zA-Z0-9_]+/g) ?? [];
        assert.ok(names.length > 0, `${p.title}: ${t.expr} queries no spamtrapd series`);
        for (const n of names) assert.ok(exposed.has(n), `${p.title}: ${n} is not exposed`);
      }
    }
  });
});
