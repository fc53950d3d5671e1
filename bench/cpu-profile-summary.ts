/**
 * Where a process's CPU went, from a V8 .cpuprofile (`node --cpu-prof`): self time rolled up by where the code lives
 * (our modules by file, smtp-server, Node's internals by module, the garbage collector, the rest of the program) and
 * the hottest functions, per message when told how many messages the profile covers.
 *
 *   node dist/bench/cpu-profile-summary.js PROFILE.cpuprofile [--messages N] [--top 25]
 *
 * bench/README.md says how the profiles in bench/RESULTS.md were taken.
 */
import fs from 'node:fs';
import { parseArgs } from 'node:util';

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
}

interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  children?: number[];
}

interface Profile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
  startTime: number;
  endTime: number;
}

/** Where a frame's code lives, as a reader of the profile asks it. */
export function categoryOf(frame: CallFrame): string {
  const { url, functionName } = frame;
  if (functionName === '(garbage collector)') return 'GC';
  if (functionName === '(idle)') return 'idle';
  if (functionName === '(program)' || functionName === '(root)') return 'program (native, not attributed)';
  if (url.includes('/node_modules/smtp-server/')) return 'smtp-server';
  if (url.includes('/node_modules/')) return `dependency ${/node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url)?.[1] ?? '?'}`;
  const ours = /\/dist\/(src|workers)\/(.+)\.js$/.exec(url);
  if (ours) return `ours ${ours[2]}`;
  const internal = /^node:(?:internal\/)?(.+)$/.exec(url);
  if (internal) return `node ${internal[1].split('/').slice(0, 2).join('/')}`;
  if (url === '') return `native ${functionName || '(anonymous)'}`;
  return `other ${url}`;
}

export interface Summary {
  totalUs: number;
  byCategory: Array<{ name: string; us: number }>;
  byFunction: Array<{ name: string; us: number }>;
}

export function summarize(p: Profile): Summary {
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const selfUs = new Map<number, number>();
  for (let i = 0; i < p.samples.length; i++) {
    // A sample's time is the delta to the next sample (V8 records the delta before each one).
    const us = p.timeDeltas[i + 1] ?? 0;
    selfUs.set(p.samples[i], (selfUs.get(p.samples[i]) ?? 0) + us);
  }
  const cat = new Map<string, number>();
  const fn = new Map<string, number>();
  let totalUs = 0;
  for (const [id, us] of selfUs) {
    const f = byId.get(id)!.callFrame;
    const c = categoryOf(f);
    if (c === 'idle') continue;
    totalUs += us;
    cat.set(c, (cat.get(c) ?? 0) + us);
    const key = `${f.functionName || '(anonymous)'} ${f.url.replace(/^.*\/(dist|node_modules)\//, '$1/')}:${f.lineNumber + 1}`;
    fn.set(key, (fn.get(key) ?? 0) + us);
  }
  const sorted = (m: Map<string, number>) => [...m].map(([name, us]) => ({ name, us })).sort((a, b) => b.us - a.us);
  return { totalUs, byCategory: sorted(cat), byFunction: sorted(fn) };
}

function main(): void {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: { messages: { type: 'string' }, top: { type: 'string' }, json: { type: 'boolean' } },
  });
  if (positionals.length !== 1) {
    process.stderr.write('usage: node dist/bench/cpu-profile-summary.js PROFILE.cpuprofile [--messages N] [--top 25] [--json]\n');
    process.exit(2);
  }
  const s = summarize(JSON.parse(fs.readFileSync(positionals[0], 'utf8')) as Profile);
  const n = values.messages ? Number(values.messages) : 0;
  const top = Number(values.top ?? 25);
  if (values.json) {
    process.stdout.write(JSON.stringify({ ...s, messages: n || null }, null, 2) + '\n');
    return;
  }
  const show = (us: number) => (n > 0 ? `${(us / n).toFixed(1).padStart(7)} us/msg` : `${(us / 1000).toFixed(0).padStart(7)} ms`);
  const pct = (us: number) => `${((100 * us) / s.totalUs).toFixed(1).padStart(5)} %`;
  process.stdout.write(`busy ${show(s.totalUs)}${n > 0 ? ` over ${n} messages` : ''}\n\nby where the code lives:\n`);
  for (const c of s.byCategory.slice(0, top)) process.stdout.write(`  ${show(c.us)} ${pct(c.us)}  ${c.name}\n`);
  process.stdout.write('\nhottest functions (self time):\n');
  for (const f of s.byFunction.slice(0, top)) process.stdout.write(`  ${show(f.us)} ${pct(f.us)}  ${f.name}\n`);
}

if (require.main === module) main();
