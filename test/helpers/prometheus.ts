/** The Prometheus text format as the trap serves it, parsed for assertions, and the scrapes tests repeat. */
import { httpGet } from './http';
import { waitFor } from './waiting';

export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** Parses the Prometheus text format (as prom-client writes it) into samples. */
export function parseExposition(text: string): Sample[] {
  const out: Sample[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m) throw new Error(`unparsable exposition line: ${JSON.stringify(line)}`);
    const labels: Record<string, string> = {};
    if (m[2]) {
      for (const lm of m[2].matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[lm[1]!] = lm[2]!;
    }
    const raw = m[3]!;
    out.push({ name: m[1]!, labels, value: raw === '+Inf' ? Infinity : raw === '-Inf' ? -Infinity : Number(raw) });
  }
  return out;
}

/** The single sample named `name` whose labels equal `labels` exactly; undefined if absent. */
export function sampleValue(samples: Sample[], name: string, labels: Record<string, string> = {}): number | undefined {
  const want = Object.entries(labels).sort();
  const hits = samples.filter((s) => {
    if (s.name !== name) return false;
    const have = Object.entries(s.labels).sort();
    return have.length === want.length && have.every(([k, v], i) => want[i]![0] === k && want[i]![1] === v);
  });
  if (hits.length > 1) throw new Error(`${name} ${JSON.stringify(labels)} appears ${hits.length} times`);
  return hits[0]?.value;
}

/** `name{labels}` -> value for every sample line of an exposition, the labels as it writes them. */
export function samplesByKey(body: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of body.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const i = line.lastIndexOf(' ');
    out.set(line.slice(0, i), Number(line.slice(i + 1)));
  }
  return out;
}

/** samplesByKey() of one scrape of /metrics. */
export async function scrape(metricsPort: number): Promise<Map<string, number>> {
  return samplesByKey(await httpGet(metricsPort));
}

/** spamtrapd_rejections_total by reason, as scraped now. */
export async function rejections(metricsPort: number): Promise<Record<string, number>> {
  const text = await httpGet(metricsPort);
  const out: Record<string, number> = {};
  for (const m of text.matchAll(/^spamtrapd_rejections_total\{reason="([^"]*)"\} (\S+)$/gm)) out[m[1]] = Number(m[2]);
  return out;
}

/** Waits until the scraped counter for `reason` reaches `atLeast` (workers push once per interval). */
export async function waitRejections(metricsPort: number, reason: string, atLeast: number, timeoutMs = 5000): Promise<number> {
  let last = 0;
  await waitFor(
    `spamtrapd_rejections_total{reason="${reason}"} >= ${atLeast} (last ${last})`,
    async () => (last = (await rejections(metricsPort))[reason] ?? 0) >= atLeast,
    timeoutMs,
    100,
  );
  return last;
}
