/**
 * End-to-end SMTP benchmark: Postfix's smtp-source floods Postfix's smtp-sink (the reference: a C sink that stores
 * nothing), two floor receivers (bench/floor-receiver.ts: a bare Node cluster that discards, or writes each message
 * with one fs.writeFile) and the real spamtrapd in turns, in the same run, so their ratios survive a noisy shared
 * machine better than any absolute number. Modes:
 *   throughput  rounds x (smtp-sink, floor-discard, floor-write, spamtrapd[fsync off|on]): msgs/s, server CPU ms/msg,
 *               ratios to the sink and both floors, p50/p99 latency, stored/sent
 *   storm       thousands of idle connections held open while a flood runs: refusals, greeting latency, RSS per idle
 *   soak        one long flood, every process's RSS sampled every N messages, growth from 10% to 100%; the queue
 *               consumed as it fills, or (--no-consume) left to grow
 *   hostile     pathological DATA shapes (all-dot lines, 1-byte lines, bare LF/CR, one huge line, NULs, 4 at once),
 *               one message each: wait for the reply, acceptor CPU, peak RSS growth, stored exactly as sent
 *   footprint   every trap process's RSS idle, and after a flood
 * Usage and the meaning of every number: bench/README.md. Compiled to dist/bench/smtp-bench.js.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { parseControl } from '../src/dirqueue/control';
import { dataLocation, dirqueueHash, name0 } from '../src/dirqueue/names';
import { freePort } from '../test/helpers/sockets';
import { builtRoot, repoRoot } from '../test/helpers/paths';

// ---------------------------------------------------------------- options

type Mode = 'throughput' | 'storm' | 'soak' | 'hostile' | 'footprint' | 'all';

interface Options {
  mode: Mode;
  rounds: number;
  messages: number;
  sessions: number;
  size: number;
  workers: number;
  fsync: boolean[];
  json: boolean;
  smoke: boolean;
  probeLanes: number;
  stormIdle: number;
  stormMessages: number;
  soakMessages: number;
  soakSampleEvery: number;
  /** Soak variants to run: true consumes the queue as it fills, false leaves it to grow (--no-consume). */
  soakConsume: boolean[];
  spoolBase: string;
  warmup: number;
  /** Messages per connection of the throughput floods; each value is a variant of its own in every round. */
  perConnection: number[];
  /** Files created and removed in every directory a message writes to, before each throughput turn. */
  warmSpool: number;
  /** Bytes of each pathological message in hostile mode (on the wire, before the final dot). */
  hostileSize: number;
  hostileShapes: string[];
  /** Every hostile shape to one daemon instead of a fresh one each (the smoke's shortcut). */
  hostileShared: boolean;
  footprintMessages: number;
  /** Seconds of quiet before each footprint reading. */
  footprintSettle: number;
  /** Another compiled tree of spamtrapd (its dist/), run as one more server in every throughput round. */
  baselineBuild: string | null;
}

const usage = () => `usage: node dist/bench/smtp-bench.js [options]
  --mode throughput|storm|soak|hostile|footprint|all   (default throughput)
  --rounds N            throughput rounds, each runs smtp-sink and spamtrapd once (default 3)
  --messages N          smtp-source messages per throughput turn (default 5000)
  --sessions N          smtp-source parallel sessions (default 50)
  --size BYTES          message body length, smtp-source -l (default 4096)
  --baseline-build DIR  another compiled spamtrapd (its dist/, e.g. an older commit's) run beside this one in every
                        throughput round, for a before/after measured in one run
  --per-connection N[,N...]  messages per connection in throughput mode (default 1: a fresh connection per
                        message); N > 1 runs smtp-source -d; a list runs each value as a variant in every round
  --workers N           spamtrapd acceptors (default 2)
  --fsync off|on|both   SPOOL_FSYNC for the spamtrapd turns (default off)
  --probe-lanes N       sequential latency-probe clients beside the flood, 0 = none (default 1)
  --storm-idle N        idle connections held open in storm mode (default 4000)
  --storm-messages N    flood size during the storm (default 2000)
  --soak-messages N     soak flood size (default 200000)
  --soak-sample-every N RSS sample interval in messages (default soak-messages/20)
  --no-consume          soak: leave the queue to grow (nobody reads it) instead of consuming it as it fills; keep
                        the spool on tmpfs with --spool-base /dev/shm (1M jobs of 4 KB take ~12 GB there). Smoke
                        runs both variants
  --hostile-size BYTES  size of each pathological message in hostile mode (default 8388608; smoke: 65536)
  --hostile-shapes A,B  which hostile shapes to send (default all: ${HOSTILE_SHAPES.map((h) => h.name).join(',')})
  --hostile-shared      send every shape to one daemon instead of a fresh one each (smoke does: a daemon start
                        costs ~2 s of CPU); RSS growth then includes what earlier shapes left behind
  --footprint-messages N  flood between the two footprint readings (default 20000; smoke: 100)
  --footprint-settle S  seconds of quiet before each footprint reading (default 5; smoke: 1)
  --spool-base DIR      where the temporary spools and the floor-write directory go: pick the disk to measure
                        (default os.tmpdir(); /dev/shm for tmpfs)
  --warm-spool N        before each throughput turn, create and remove N files in every directory a message
                        writes to (the trap's incoming/tmp, incoming/queue, each acceptor's incoming/data/H1/H2;
                        the floor-write directory), default 0 (smoke: 100). On ext4 the first few thousand
                        creations in a fresh directory cost far more than the later ones
  --json                print one JSON document on stdout (the human report goes to stderr)
  --warmup N            unmeasured messages before each measured turn (default 3000; smoke: 30). A trap runs
                        for days: V8 needs a few thousand transactions to optimise the hot path, and a turn
                        measured cold reports about twice the steady-state CPU per message
  --smoke               tiny counts, every mode and variant, ~40 s of CPU (about 30 s on 2 idle cores): proves
                        the script still works, measures nothing`;

function parseOptions(argv: string[]): Options {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    options: {
      mode: { type: 'string' },
      rounds: { type: 'string' },
      messages: { type: 'string' },
      sessions: { type: 'string' },
      size: { type: 'string' },
      'per-connection': { type: 'string' },
      'baseline-build': { type: 'string' },
      'warm-spool': { type: 'string' },
      'hostile-size': { type: 'string' },
      'hostile-shapes': { type: 'string' },
      'hostile-shared': { type: 'boolean' },
      'footprint-messages': { type: 'string' },
      'footprint-settle': { type: 'string' },
      workers: { type: 'string' },
      fsync: { type: 'string' },
      'probe-lanes': { type: 'string' },
      'storm-idle': { type: 'string' },
      'storm-messages': { type: 'string' },
      'soak-messages': { type: 'string' },
      'soak-sample-every': { type: 'string' },
      'no-consume': { type: 'boolean' },
      'spool-base': { type: 'string' },
      warmup: { type: 'string' },
      json: { type: 'boolean' },
      smoke: { type: 'boolean' },
      help: { type: 'boolean' },
    },
  });
  if (values.help) {
    console.log(usage());
    process.exit(0);
  }
  const smoke = values.smoke === true;
  const int = (name: keyof typeof values, dflt: number, min: number): number => {
    const raw = values[name];
    if (raw === undefined) return dflt;
    const n = Number(raw);
    if (!Number.isInteger(n) || n < min) throw new UsageError(`--${name} must be an integer >= ${min}, not '${String(raw)}'`);
    return n;
  };
  const mode = (values.mode ?? (smoke ? 'all' : 'throughput')) as Mode;
  if (!['throughput', 'storm', 'soak', 'hostile', 'footprint', 'all'].includes(mode)) throw new UsageError(`--mode: unknown '${mode}'`);
  const fsyncArg = values.fsync ?? (smoke ? 'both' : 'off');
  const fsync = ({ off: [false], on: [true], both: [false, true] } as Record<string, boolean[]>)[fsyncArg];
  if (!fsync) throw new UsageError(`--fsync must be off, on or both, not '${fsyncArg}'`);
  const soakMessages = int('soak-messages', smoke ? 150 : 200_000, 10);
  const perConnection = (values['per-connection'] ?? (smoke ? '1,5' : '1')).split(',').map((x) => Number(x.trim()));
  if (!perConnection.every((n) => Number.isInteger(n) && n >= 1) || new Set(perConnection).size !== perConnection.length) {
    throw new UsageError(`--per-connection must be distinct integers >= 1, comma-separated, not '${values['per-connection']}'`);
  }
  const hostileShapes = values['hostile-shapes']?.split(',').map((x) => x.trim()) ?? HOSTILE_SHAPES.map((h) => h.name);
  const unknownShape = hostileShapes.find((n) => !HOSTILE_SHAPES.some((h) => h.name === n));
  if (unknownShape !== undefined) throw new UsageError(`--hostile-shapes: unknown '${unknownShape}'`);
  return {
    mode,
    rounds: int('rounds', smoke ? 1 : 3, 1),
    messages: int('messages', smoke ? 100 : 5000, 1),
    warmup: int('warmup', smoke ? 30 : 3000, 0),
    sessions: int('sessions', smoke ? 10 : 50, 1),
    size: int('size', 4096, 1),
    workers: int('workers', 2, 1),
    fsync,
    json: values.json === true,
    smoke,
    probeLanes: int('probe-lanes', 1, 0),
    stormIdle: int('storm-idle', smoke ? 200 : 4000, 1),
    stormMessages: int('storm-messages', smoke ? 100 : 2000, 1),
    soakMessages,
    soakSampleEvery: int('soak-sample-every', Math.max(1, Math.floor(soakMessages / 20)), 1),
    soakConsume: values['no-consume'] ? [false] : smoke ? [true, false] : [true],
    spoolBase: path.resolve(values['spool-base'] ?? os.tmpdir()),
    perConnection,
    warmSpool: int('warm-spool', smoke ? 100 : 0, 0),
    hostileSize: int('hostile-size', smoke ? 64 * 1024 : 8 * 1024 * 1024, 1024),
    hostileShapes,
    hostileShared: values['hostile-shared'] === true || smoke,
    footprintMessages: int('footprint-messages', smoke ? 100 : 20_000, 1),
    footprintSettle: int('footprint-settle', smoke ? 1 : 5, 0),
    baselineBuild: values['baseline-build'] ? path.resolve(values['baseline-build']) : null,
  };
}

class UsageError extends Error {}

type OneMode = Exclude<Mode, 'all'>;

const fsyncArg = (fsync: boolean[]) => (fsync.length > 1 ? 'both' : fsync[0] ? 'on' : 'off');
const shellWord = (w: string) => (/^[\w@%+=:,./-]+$/.test(w) ? w : `'${w.replace(/'/g, `'\\''`)}'`);

/**
 * The command line that reruns one mode exactly as this run did: every option the mode reads, spelled out, so a
 * --smoke or --mode all run can be repeated one mode at a time and with the smoke's tiny counts.
 */
function reproduce(o: Options, mode: OneMode, variant: string[]): string {
  const flood = ['--sessions', o.sessions, '--size', o.size];
  // Storm and soak run with the first --fsync value only.
  const firstFsync = ['--fsync', fsyncArg(o.fsync.slice(0, 1))];
  const perMode: Record<OneMode, Array<string | number>> = {
    throughput: ['--rounds', o.rounds, '--messages', o.messages, ...flood, '--per-connection', o.perConnection.join(','), '--fsync', fsyncArg(o.fsync), '--warmup', o.warmup, '--warm-spool', o.warmSpool, '--probe-lanes', o.probeLanes, ...(o.baselineBuild ? ['--baseline-build', o.baselineBuild] : [])],
    storm: ['--storm-idle', o.stormIdle, '--storm-messages', o.stormMessages, ...flood, ...firstFsync, '--warmup', o.warmup],
    soak: ['--soak-messages', o.soakMessages, '--soak-sample-every', o.soakSampleEvery, ...flood, ...firstFsync],
    hostile: ['--hostile-size', o.hostileSize, '--hostile-shapes', o.hostileShapes.join(','), ...(o.hostileShared ? ['--hostile-shared'] : [])],
    footprint: ['--footprint-messages', o.footprintMessages, '--footprint-settle', o.footprintSettle, ...flood, ...firstFsync],
  };
  const words = ['node', __filename, '--mode', mode, ...perMode[mode], ...variant, '--workers', o.workers, '--spool-base', o.spoolBase];
  return words.map((w) => shellWord(String(w))).join(' ');
}

/**
 * Every mode's report starts with what it does and the command that reproduces it (with `variant`, the flags that
 * pick this run of the mode when one invocation runs several); returns that command.
 */
function modeHeader(o: Options, mode: OneMode, what: string, variant: string[] = []): string {
  const command = reproduce(o, mode, variant);
  say(what);
  say(`  reproduce: ${command}`);
  return command;
}

// ---------------------------------------------------------------- output

let jsonMode = false;
/** The human report; on stderr under --json so stdout stays one parseable document. */
function say(line = ''): void {
  (jsonMode ? process.stderr : process.stdout).write(line + '\n');
}

// ---------------------------------------------------------------- locations and tools

interface Tools {
  source: string;
  sink: string;
}

function ensureTools(root: string): Tools {
  const bin = path.join(root, '.tools', 'bin');
  const tools = { source: path.join(bin, 'smtp-source'), sink: path.join(bin, 'smtp-sink') };
  // Always run: the script keeps working copies (about a second) and repairs a stale .tools/bin entry, which a
  // mere existence check would take for installed.
  const script = path.join(root, 'scripts', 'install-test-deps.sh');
  const r = spawnSync('bash', [script, 'smtp-source', 'smtp-sink'], { stdio: ['ignore', 'ignore', 'inherit'] });
  if (r.status !== 0) {
    throw new Error('scripts/install-test-deps.sh could not provide smtp-source/smtp-sink (installing needs root and apt-get)');
  }
  return tools;
}

// ---------------------------------------------------------------- processes we start, and their cleanup

const children = new Set<ChildProcess>();
const tempDirs = new Set<string>();

/** Everything is spawned detached, so the whole process group (a daemon and its acceptors) dies with one kill. */
function startChild(cmd: string, args: string[], opts: { env?: NodeJS.ProcessEnv; cwd?: string; stdio?: Array<'ignore' | 'pipe' | number> }): ChildProcess {
  const child = spawn(cmd, args, { detached: true, cwd: opts.cwd, env: opts.env ?? process.env, stdio: opts.stdio ?? ['ignore', 'ignore', 'pipe'] });
  children.add(child);
  child.once('exit', () => children.delete(child));
  return child;
}

function killGroup(child: ChildProcess): void {
  if (child.pid === undefined) return;
  try {
    process.kill(-child.pid, 'SIGKILL');
  } catch {
    try {
      child.kill('SIGKILL');
    } catch {
      // already gone
    }
  }
}

function cleanupSync(): void {
  for (const c of children) killGroup(c);
  children.clear();
  for (const d of tempDirs) fs.rmSync(d, { recursive: true, force: true });
  tempDirs.clear();
}

function exited(child: ChildProcess): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve({ code: child.exitCode, signal: child.signalCode });
  return new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let t: NodeJS.Timeout | undefined;
  return Promise.race([
    p,
    new Promise<never>((_, reject) => {
      t = setTimeout(() => reject(new Error(`${what}: no result within ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(t));
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));


// ---------------------------------------------------------------- /proc readings

const CLK_TCK = (() => {
  const r = spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' });
  const n = Number(r.stdout?.trim());
  return Number.isInteger(n) && n > 0 ? n : 100;
})();

interface CpuTicks {
  user: number;
  sys: number;
  /** Of reaped children: how the bench learns what smtp-source spent, since it is gone before we could read it. */
  childUser: number;
  childSys: number;
}

/** The fields of /proc/PID/stat from the state on (field 3), or null when the process is gone. */
function statFields(pid: number | 'self'): string[] | null {
  let stat: string;
  try {
    stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return null;
  }
  // The command name may contain spaces and parentheses; the fields after the last ')' are unambiguous.
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
}

/** A process that is gone reads as zero; the turn then reports the worker's death as a problem instead of crashing. */
function readCpu(pid: number | 'self'): CpuTicks {
  const f = statFields(pid);
  if (!f) return { user: 0, sys: 0, childUser: 0, childSys: 0 };
  return { user: Number(f[11]), sys: Number(f[12]), childUser: Number(f[13]), childSys: Number(f[14]) };
}

/** `root` and every live descendant, found by walking parent pids (field 4 of /proc/PID/stat); zombies left out. */
function processTree(root: number): number[] {
  const parents = new Map<number, number>();
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const f = statFields(Number(entry));
    if (f && f[0] !== 'Z') parents.set(Number(entry), Number(f[1]));
  }
  const tree = new Set<number>(parents.has(root) ? [root] : []);
  // /proc lists a child before its parent when pids wrapped, so repeat until nobody joins.
  for (let grew = true; grew; ) {
    grew = false;
    for (const [pid, ppid] of parents) {
      if (!tree.has(pid) && tree.has(ppid)) {
        tree.add(pid);
        grew = true;
      }
    }
  }
  return [...tree];
}

const ticksToMs = (t: number) => (t * 1000) / CLK_TCK;

/** A `kB` line of /proc/PID/status: VmRSS (resident now) or VmHWM (the most it has ever been); 0 when gone. */
function readStatusKb(pid: number, field: 'VmRSS' | 'VmHWM'): number {
  try {
    const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}

const readRssKb = (pid: number) => readStatusKb(pid, 'VmRSS');

function openFileLimit(): number {
  const line = fs.readFileSync('/proc/self/limits', 'utf8').split('\n').find((l) => l.startsWith('Max open files'));
  const soft = line?.split(/\s{2,}/)[1];
  return soft === undefined || soft === 'unlimited' ? Infinity : Number(soft);
}

// ---------------------------------------------------------------- statistics

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(p * sorted.length) - 1))] as number;
}

interface Spread {
  median: number;
  min: number;
  max: number;
}

function spread(xs: number[]): Spread {
  const s = [...xs].sort((a, b) => a - b);
  return { median: percentile(s, 0.5), min: s[0] ?? NaN, max: s[s.length - 1] ?? NaN };
}

const round2 = (n: number) => Math.round(n * 100) / 100;
const fmt = (n: number, digits = 0) => (Number.isFinite(n) ? n.toFixed(digits) : 'n/a');

// ---------------------------------------------------------------- a minimal SMTP client (probes, idle holders)

interface Reply {
  code: number;
  text: string;
}

/** Only what the probes need: every wait is bounded, so a stuck server shows up as a failure, not a hang. */
class SmtpConn {
  private buf = '';
  private wake: (() => void) | null = null;
  closed = false;
  error: Error | null = null;

  private constructor(readonly socket: net.Socket) {
    socket.setEncoding('latin1');
    socket.setNoDelay(true);
    socket.on('data', (d: string) => {
      this.buf += d;
      this.notify();
    });
    socket.on('error', (e) => {
      this.error = e;
    });
    socket.on('close', () => {
      this.closed = true;
      this.notify();
    });
  }

  private notify(): void {
    const w = this.wake;
    this.wake = null;
    w?.();
  }

  static connect(port: number, timeoutMs: number): Promise<SmtpConn> {
    return new Promise((resolve, reject) => {
      const s = net.connect({ port, host: '127.0.0.1' });
      const t = setTimeout(() => {
        s.destroy();
        reject(new Error('connect timeout'));
      }, timeoutMs);
      s.once('connect', () => {
        clearTimeout(t);
        s.removeAllListeners('error');
        resolve(new SmtpConn(s));
      });
      s.once('error', (e) => {
        clearTimeout(t);
        reject(e);
      });
    });
  }

  async reply(timeoutMs: number): Promise<Reply> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      // A reply ends with the first line whose code is followed by a space (or nothing): "250 ok", not "250-SIZE".
      let start = 0;
      for (let nl = this.buf.indexOf('\n'); nl >= 0; nl = this.buf.indexOf('\n', start)) {
        const line = this.buf.slice(start, nl).replace(/\r$/, '');
        start = nl + 1;
        if (/^\d{3}(?: |$)/.test(line)) {
          this.buf = this.buf.slice(start);
          return { code: Number(line.slice(0, 3)), text: line };
        }
      }
      if (this.closed) throw new Error(`connection closed${this.error ? ` (${this.error.message})` : ''} before a reply`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error('reply timeout');
      let t: NodeJS.Timeout | undefined;
      await new Promise<void>((r) => {
        this.wake = r;
        t = setTimeout(r, left);
      });
      clearTimeout(t);
    }
  }

  async command(line: string, expect: number, timeoutMs: number): Promise<Reply> {
    this.socket.write(line + '\r\n');
    const r = await this.reply(timeoutMs);
    if (r.code !== expect) throw new Error(`'${line.split(' ')[0]}' got '${r.text}'`);
    return r;
  }

  destroy(): void {
    this.socket.destroy();
  }
}

/** A body like smtp-source's: `size` bytes of 78-column lines, dot-stuffing never needed. */
function probeBody(size: number): string {
  const lines: string[] = [];
  for (let left = size; left > 0; left -= 80) lines.push('X'.repeat(Math.max(1, Math.min(78, left - 2))));
  return lines.join('\r\n') + '\r\n';
}

/**
 * Sequential full transactions beside the flood; each is timed from connect() to the 250 after DATA, which is what
 * a sender waits for. smtp-source reports no per-message timing, hence this probe.
 */
async function latencyProbe(port: number, size: number, lanes: number, stop: { now: boolean }): Promise<{ samples: number[]; ok: number; errors: string[] }> {
  const body = `From: <probe@bench.example>\r\nTo: <trap@bait.example>\r\nSubject: latency probe\r\n\r\n${probeBody(size)}.\r\n`;
  const samples: number[] = [];
  const errors: string[] = [];
  let ok = 0;
  const lane = async () => {
    while (!stop.now && errors.length < 100) {
      const t0 = process.hrtime.bigint();
      let c: SmtpConn | null = null;
      try {
        c = await SmtpConn.connect(port, 10_000);
        const g = await c.reply(10_000);
        if (g.code !== 220) throw new Error(`greeting '${g.text}'`);
        await c.command('EHLO probe.bench.example', 250, 10_000);
        await c.command('MAIL FROM:<probe@bench.example>', 250, 10_000);
        await c.command('RCPT TO:<trap@bait.example>', 250, 10_000);
        await c.command('DATA', 354, 10_000);
        c.socket.write(body);
        const r = await c.reply(30_000);
        if (r.code !== 250) throw new Error(`end of DATA got '${r.text}'`);
        samples.push(Number(process.hrtime.bigint() - t0) / 1e6);
        ok++;
        await c.command('QUIT', 221, 5_000).catch(() => undefined);
      } catch (e) {
        errors.push((e as Error).message);
      } finally {
        c?.destroy();
      }
    }
  };
  await Promise.all(Array.from({ length: lanes }, lane));
  return { samples, ok, errors };
}

// ---------------------------------------------------------------- smtp-source and smtp-sink

interface SourceRun {
  wallMs: number;
  clientCpuMs: number;
  errors: string[];
  /** The last smtp-source command line of the flood (they differ only in -m and -s). */
  argv: string[];
}

interface SourceOpts {
  /** Messages per connection; above 1 smtp-source runs with -d. */
  perConnection?: number;
  /** Called with the messages sent so far (smtp-source -c counts each final dot), as they go. */
  onProgress?: (sent: number) => void;
}

function sourceArgs(port: number, messages: number, sessions: number, size: number, perConnection = 1, counter = false): string[] {
  // One message per connection (smtp-source's default), like spam bots that reconnect for every message; -d keeps
  // the connection for the session's next message instead; -c prints a running count of final dots sent.
  return [
    ...(perConnection > 1 ? ['-d'] : []),
    ...(counter ? ['-c'] : []),
    ...['-s', String(sessions), '-l', String(size), '-m', String(messages), '-f', 'flood@spam.example', '-t', 'trap@bait.example', `127.0.0.1:${port}`],
  ];
}

/**
 * The smtp-source runs of one flood. With -d a session keeps its connection until the run's -m is used up, so a run
 * opens `sessions` connections that share its messages: runs of sessions x N messages send N per connection on
 * average (a faster session takes a few more).
 */
function sourceBatches(messages: number, sessions: number, perConnection: number): Array<{ messages: number; sessions: number }> {
  if (perConnection <= 1) return [{ messages, sessions }];
  const out: Array<{ messages: number; sessions: number }> = [];
  for (let left = messages; left > 0; ) {
    const m = Math.min(left, sessions * perConnection);
    out.push({ messages: m, sessions: Math.min(sessions, Math.ceil(m / perConnection)) });
    left -= m;
  }
  return out;
}

async function runSource(tools: Tools, port: number, messages: number, sessions: number, size: number, opts: SourceOpts = {}): Promise<SourceRun> {
  const perConnection = opts.perConnection ?? 1;
  const batches = sourceBatches(messages, sessions, perConnection);
  const before = readCpu('self');
  const t0 = process.hrtime.bigint();
  const errors: string[] = [];
  let argv: string[] = [];
  let sent = 0;
  for (const b of batches) {
    argv = sourceArgs(port, b.messages, b.sessions, size, perConnection, opts.onProgress !== undefined);
    const base = sent;
    errors.push(...(await runSourceOnce(tools.source, argv, b.messages, opts.onProgress && ((n) => opts.onProgress?.(base + n)))));
    sent += b.messages;
  }
  const wallMs = Number(process.hrtime.bigint() - t0) / 1e6;
  const after = readCpu('self');
  return { wallMs, clientCpuMs: ticksToMs(after.childUser + after.childSys - before.childUser - before.childSys), errors, argv };
}

/** One smtp-source process to its exit; its stderr lines (and a bad exit) are the errors. */
async function runSourceOnce(source: string, argv: string[], messages: number, onProgress?: (sent: number) => void): Promise<string[]> {
  const child = startChild(source, argv, { stdio: ['ignore', onProgress ? 'pipe' : 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr?.setEncoding('utf8').on('data', (d: string) => {
    if (stderr.length < 64 * 1024) stderr += d;
  });
  // -c writes "N\r" after each final dot; only the last complete number matters.
  let partial = '';
  child.stdout?.setEncoding('latin1').on('data', (d: string) => {
    const parts = (partial + d).split('\r');
    partial = parts.pop() as string;
    const last = parts.length ? Number(parts[parts.length - 1]) : NaN;
    if (Number.isInteger(last)) onProgress?.(last);
  });
  // Bounded: even 20 msgs/s finishes; a wedged server must end the run, not hang it.
  const limitMs = 120_000 + messages * 50;
  const { code, signal } = await withTimeout(exited(child), limitMs, 'smtp-source').catch((e: Error) => {
    killGroup(child);
    throw e;
  });
  const errors = stderr.split('\n').filter((l) => l.trim() !== '');
  if (code !== 0) errors.push(`smtp-source exited ${code ?? signal}`);
  return errors;
}

async function waitForGreeting(port: number, timeoutMs: number, alive: () => boolean): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const c = await SmtpConn.connect(port, 2000);
      try {
        const g = await c.reply(2000);
        if (g.code === 220) return;
      } finally {
        c.destroy();
      }
    } catch {
      // not listening yet
    }
    if (!alive()) throw new Error(`server on port ${port} exited before greeting`);
    if (Date.now() > deadline) throw new Error(`no SMTP greeting on port ${port} within ${timeoutMs} ms`);
    await sleep(50);
  }
}

interface Sink {
  child: ChildProcess;
  port: number;
  pid: number;
  argv: string[];
}

async function startSink(tools: Tools): Promise<Sink> {
  const port = await freePort();
  // smtp-sink refuses to run as root without dropping privileges; backlog like the trap's SMTP_BACKLOG.
  const argv = ['-u', 'nobody', `127.0.0.1:${port}`, '4096'];
  const child = startChild(tools.sink, argv, { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  child.stderr?.setEncoding('utf8').on('data', (d: string) => {
    if (err.length < 8192) err += d;
  });
  await waitForGreeting(port, 10_000, () => child.exitCode === null && child.signalCode === null).catch((e: Error) => {
    killGroup(child);
    throw new Error(`${e.message}\n${err}`);
  });
  // The wrapper script execs, so the pid we spawned is smtp-sink itself: its /proc/PID/stat is the sink's CPU.
  return { child, port, pid: child.pid as number, argv };
}

async function stopSink(s: Sink): Promise<void> {
  killGroup(s.child);
  await withTimeout(exited(s.child), 10_000, 'smtp-sink exit').catch(() => undefined);
}

// ---------------------------------------------------------------- servers under test: the daemon and the floors

/**
 * A server under test that runs as a process tree and logs `TIME info EVENT proc=NAME pid=N ...` lines (src/log.ts)
 * to a file in its own temporary directory: the trap, and the floor receivers, which log the same way so that both
 * are started, found, named and measured alike.
 */
abstract class ClusterServer {
  private procs: Array<{ name: string; pid: number }> = [];

  protected constructor(
    readonly child: ChildProcess,
    readonly port: number,
    readonly dir: string,
    readonly logFile: string,
  ) {}

  /** Logs go to a file, not a pipe: reading a pipe would put the bench process in the server's data path. */
  protected static spawnLogged(dir: string, args: string[], env: NodeJS.ProcessEnv): { child: ChildProcess; logFile: string } {
    const logFile = path.join(dir, 'server.log');
    const fd = fs.openSync(logFile, 'a');
    const child = startChild(process.execPath, args, { cwd: dir, env, stdio: ['ignore', fd, fd] });
    fs.closeSync(fd);
    return { child, logFile };
  }

  logs(): string {
    try {
      return fs.readFileSync(this.logFile, 'utf8');
    } catch {
      return '';
    }
  }

  logTail(bytes = 3000): string {
    const l = this.logs();
    return l.slice(Math.max(0, l.length - bytes));
  }

  alive(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  protected async waitListening(workers: number, what: string): Promise<void> {
    const deadline = Date.now() + 30_000;
    for (;;) {
      const logs = this.logs();
      if (/ info starting proc=primary /.test(logs) && (logs.match(/ info listening proc=acceptor\d+ /g) ?? []).length >= workers) {
        this.procs = this.discover();
        return;
      }
      if (!this.alive()) throw new Error(`${what} exited (${this.child.exitCode ?? this.child.signalCode}) before listening:\n${this.logTail()}`);
      if (Date.now() > deadline) throw new Error(`${what} did not listen within 30 s:\n${this.logTail()}`);
      await sleep(50);
    }
  }

  /**
   * Every live process of the server's tree (primary, acceptors, the forward relay, whatever it forks in future),
   * named by the `proc=` field of its log lines. Found in /proc rather than only in the logs so that a process that
   * does not log at start is still counted in the CPU and RSS sums.
   */
  discover(): Array<{ name: string; pid: number }> {
    const names = new Map<number, string>();
    for (const m of this.logs().matchAll(/ proc=([A-Za-z0-9_-]+) pid=(\d+)/g)) if (!names.has(Number(m[2]))) names.set(Number(m[2]), m[1] as string);
    const found = processTree(this.child.pid as number).map((pid) => ({ name: names.get(pid) ?? `pid${pid}`, pid }));
    const rank = (n: string) => (n === 'primary' ? 0 : n.startsWith('acceptor') ? 1 : 2);
    return found.sort((a, b) => rank(a.name) - rank(b.name) || a.name.localeCompare(b.name, 'en', { numeric: true }));
  }

  /** The processes found when the server started listening. */
  pids(): Array<{ name: string; pid: number }> {
    return this.procs;
  }

  acceptors(): Array<{ name: string; pid: number }> {
    return this.procs.filter((p) => p.name.startsWith('acceptor'));
  }

  /** A worker restarted mid-turn would make the CPU and RSS sums of this turn meaningless. */
  workerDeaths(): number {
    return (this.logs().match(/ (?:acceptor|worker)_died /g) ?? []).length;
  }

  /** SIGTERM first when `graceful` (the trap drains); then nothing of this server may outlive its turn. */
  protected async stopAndRemove(graceful: boolean): Promise<void> {
    if (graceful && this.alive()) {
      this.child.kill('SIGTERM');
      await withTimeout(exited(this.child), 30_000, 'server shutdown').catch(() => undefined);
    }
    killGroup(this.child);
    await withTimeout(exited(this.child), 10_000, 'server exit').catch(() => undefined);
    fs.rmSync(this.dir, { recursive: true, force: true });
    tempDirs.delete(this.dir);
  }
}

/**
 * The STARTTLS pair the first daemon of the run generated. Later daemons find it in their fresh spool's .tls/ as a
 * restarted trap finds its own (src/smtp/tls.ts), which spares each start an RSA key generation (~0.4 s of CPU):
 * a run starts over a dozen daemons, and the smoke run must stay short.
 */
let tlsSeed: { key: Buffer; cert: Buffer } | null = null;

function seedTls(spoolDir: string): void {
  if (!tlsSeed) return;
  const dir = path.join(spoolDir, '.tls');
  fs.mkdirSync(dir, { mode: 0o700 });
  fs.writeFileSync(path.join(dir, 'key.pem'), tlsSeed.key, { mode: 0o600 });
  fs.writeFileSync(path.join(dir, 'cert.pem'), tlsSeed.cert, { mode: 0o644 });
}

function keepTls(spoolDir: string): void {
  if (tlsSeed) return;
  const dir = path.join(spoolDir, '.tls');
  tlsSeed = { key: fs.readFileSync(path.join(dir, 'key.pem')), cert: fs.readFileSync(path.join(dir, 'cert.pem')) };
}

interface DaemonOpts {
  workers: number;
  fsync: boolean;
  env?: Record<string, string>;
}

/**
 * The V8 flags a build's launchers start its primary with (package.json start: src/primary/node-flags.ts), so the
 * bench runs each build as an operator would; none for a build older than that module.
 */
function primaryNodeFlags(built: string): string[] {
  const file = path.join(built, 'src', 'primary', 'node-flags.js');
  return fs.existsSync(file) ? [...(require(file) as { NODE_FLAGS: readonly string[] }).NODE_FLAGS] : [];
}

class Daemon extends ClusterServer {
  private constructor(
    child: ChildProcess,
    port: number,
    dir: string,
    logFile: string,
    readonly spoolDir: string,
    readonly env: Record<string, string>,
  ) {
    super(child, port, dir, logFile);
  }

  static async start(built: string, base: string, o: DaemonOpts): Promise<Daemon> {
    const dir = fs.mkdtempSync(path.join(base, 'spamtrapd-bench-'));
    tempDirs.add(dir);
    const spoolDir = path.join(dir, 'spool');
    const configDir = path.join(dir, 'config');
    fs.mkdirSync(spoolDir);
    fs.mkdirSync(configDir);
    seedTls(spoolDir);
    const port = await freePort();
    const env: Record<string, string> = {
      SMTP_HOST: '127.0.0.1',
      SMTP_PORT: String(port),
      METRICS_HOST: '127.0.0.1',
      METRICS_PORT: String(await freePort()),
      WORKERS: String(o.workers),
      SPOOL_DIR: spoolDir,
      CONFIG_DIR: configDir,
      ME: 'trap.bench',
      // Reverse DNS of 127.0.0.1 would measure the resolver of whatever machine runs the bench.
      RDNS_TIMEOUT_MS: '0',
      // The default: one `transaction` line per message is part of the real per-message cost.
      LOG_LEVEL: 'info',
      SPOOL_FSYNC: String(o.fsync),
      ...o.env,
    };
    const { child, logFile } = ClusterServer.spawnLogged(dir, [...primaryNodeFlags(built), path.join(built, 'workers', 'cli.js'), 'start'], { PATH: process.env.PATH, HOME: process.env.HOME, ...env });
    const d = new Daemon(child, port, dir, logFile, spoolDir, env);
    await d.waitListening(o.workers, 'spamtrapd');
    keepTls(spoolDir);
    return d;
  }

  queueDir(): string {
    return path.join(this.spoolDir, 'incoming', 'queue');
  }

  /** Jobs in incoming/queue/: one control file per stored message (consumers take every name starting with a digit). */
  queued(): number {
    try {
      return fs.readdirSync(this.queueDir()).filter((n) => /^\d/.test(n)).length;
    } catch {
      return 0;
    }
  }

  /**
   * Every directory a message creates a file in: incoming/tmp and incoming/queue, and each acceptor's data directory
   * data/H1/H2, named by the last two characters of its job names: the HASH of the host name and its pid
   * (src/dirqueue/names.ts; src/acceptor.ts gives its Spool no host name, so the writer takes os.hostname()).
   */
  jobDirs(): string[] {
    const incoming = path.join(this.spoolDir, 'incoming');
    const data = this.acceptors().map((a) => {
      const loc = dataLocation(name0(50, { sec: 0, usec: 0 }, dirqueueHash(os.hostname(), a.pid)));
      return path.join(incoming, 'data', loc.h1, loc.h2);
    });
    return [path.join(incoming, 'tmp'), path.join(incoming, 'queue'), ...new Set(data)];
  }

  /** The data directories that hold files now, to check that jobDirs() named the ones really used. */
  dataDirsInUse(): string[] {
    const data = path.join(this.spoolDir, 'incoming', 'data');
    const out: string[] = [];
    for (const h1 of fs.existsSync(data) ? fs.readdirSync(data) : []) {
      for (const h2 of fs.readdirSync(path.join(data, h1))) {
        const dir = path.join(data, h1, h2);
        if (fs.readdirSync(dir).length > 0) out.push(dir);
      }
    }
    return out;
  }

  stop(): Promise<void> {
    return this.stopAndRemove(true);
  }
}

/**
 * Creates and removes `count` files in each directory, so that a measured flood meets directories that have grown
 * already, as a trap's have after its first hours. Names start with a letter: consumers take names starting with a
 * digit. Returns the milliseconds it took.
 */
function warmDirs(dirs: string[], count: number): number {
  if (count === 0) return 0;
  const t0 = Date.now();
  for (const dir of dirs) {
    fs.mkdirSync(dir, { recursive: true });
    const names = Array.from({ length: count }, (_, i) => path.join(dir, `warm-spool.${String(i).padStart(8, '0')}.${process.pid}`));
    for (const n of names) fs.closeSync(fs.openSync(n, 'wx'));
    for (const n of names) fs.unlinkSync(n);
  }
  return Date.now() - t0;
}

type FloorMode = 'discard' | 'write';

/** bench/floor-receiver.ts, started from the same compiled tree as this script. */
class Floor extends ClusterServer {
  private constructor(
    child: ChildProcess,
    port: number,
    dir: string,
    logFile: string,
    readonly mode: FloorMode,
    readonly messagesDir: string,
  ) {
    super(child, port, dir, logFile);
  }

  static async start(base: string, mode: FloorMode, workers: number): Promise<Floor> {
    // Under --spool-base like the trap's spool, so floor-write and spamtrapd write to the same disk.
    const dir = fs.mkdtempSync(path.join(base, `floor-${mode}-bench-`));
    tempDirs.add(dir);
    const messagesDir = path.join(dir, 'messages');
    fs.mkdirSync(messagesDir);
    const port = await freePort();
    const args = [path.join(__dirname, 'floor-receiver.js'), mode, '127.0.0.1', String(port), String(workers), messagesDir];
    const { child, logFile } = ClusterServer.spawnLogged(dir, args, { PATH: process.env.PATH, HOME: process.env.HOME });
    const f = new Floor(child, port, dir, logFile, mode, messagesDir);
    await f.waitListening(workers, `floor-${mode}`);
    return f;
  }

  /** Messages written so far (write mode): one file each. */
  written(): number {
    return fs.readdirSync(this.messagesDir).length;
  }

  stop(): Promise<void> {
    return this.stopAndRemove(false);
  }
}

function cpuOf(pids: number[]): { user: number; sys: number } {
  let user = 0;
  let sys = 0;
  for (const pid of pids) {
    const c = readCpu(pid);
    user += c.user;
    sys += c.sys;
  }
  return { user, sys };
}

// ---------------------------------------------------------------- throughput

interface Latency {
  samples: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  errors: string[];
}

type ServerKind = 'smtp-sink' | 'floor-discard' | 'floor-write' | 'spamtrapd' | 'spamtrapd-baseline';

/** Every variant's msgs/s and CPU ms/msg are divided by each of these, measured in the same round. */
const REFERENCES: Array<[ServerKind, keyof Ratios]> = [
  ['smtp-sink', 'vsSink'],
  ['floor-discard', 'vsFloorDiscard'],
  ['floor-write', 'vsFloorWrite'],
];

/** This turn's figure over the reference's of the same round; null against itself. */
interface Ratios {
  vsSink: number | null;
  vsFloorDiscard: number | null;
  vsFloorWrite: number | null;
}

/** Where a turn stands in the run: its round, and how many messages each of its connections carries. */
interface TurnAt {
  round: number;
  perConnection: number;
}

interface Turn {
  server: ServerKind;
  fsync: boolean | null;
  round: number;
  perConnection: number;
  /** smtp-source messages plus probe messages that got 250. */
  sent: number;
  /**
   * Jobs that appeared in incoming/queue/ (spamtrapd) or files in the floor's directory (floor-write) during the
   * measured flood; null for smtp-sink and floor-discard, which store nothing.
   */
  stored: number | null;
  wallMs: number;
  msgsPerSec: number;
  serverCpuMs: number;
  serverUserMs: number;
  serverSysMs: number;
  serverCpuMsPerMsg: number;
  perProcessCpuMs: Record<string, number>;
  clientCpuMsPerMsg: number;
  benchCpuMs: number;
  latency: Latency;
  latencyRaw: number[];
  sourceErrors: string[];
  workerDeaths: number;
  /** Time spent on --warm-spool before the turn's warm-up flood (0 when off or nothing to warm). */
  warmSpoolMs: number;
  /** msgs/s over each reference's; filled in once the round is over. */
  ratios: Ratios;
  /** Server CPU ms/msg over each reference's. */
  cpuRatios: Ratios;
}

const noRatios = (): Ratios => ({ vsSink: null, vsFloorDiscard: null, vsFloorWrite: null });

function latencyOf(samples: number[], errors: string[]): Latency {
  const s = [...samples].sort((a, b) => a - b);
  return { samples: s.length, p50Ms: round2(percentile(s, 0.5)), p99Ms: round2(percentile(s, 0.99)), maxMs: round2(s[s.length - 1] ?? NaN), errors: errors.slice(0, 10) };
}

/** The measured part of a turn: the flood, the probe beside it, and CPU of the server processes around both. */
async function measuredFlood(tools: Tools, o: Options, at: TurnAt, port: number, pids: Array<{ name: string; pid: number }>) {
  const before = pids.map((p) => readCpu(p.pid));
  const benchBefore = process.cpuUsage();
  const stop = { now: false };
  const probe = o.probeLanes > 0 ? latencyProbe(port, o.size, o.probeLanes, stop) : Promise.resolve({ samples: [], ok: 0, errors: [] });
  let src: SourceRun;
  try {
    src = await runSource(tools, port, o.messages, o.sessions, o.size, { perConnection: at.perConnection });
  } finally {
    stop.now = true;
  }
  const pr = await withTimeout(probe, 60_000, 'latency probe');
  const benchCpu = process.cpuUsage(benchBefore);
  const after = pids.map((p) => readCpu(p.pid));
  const perProcessCpuMs: Record<string, number> = {};
  let user = 0;
  let sys = 0;
  pids.forEach((p, i) => {
    const b = before[i] as CpuTicks;
    const a = after[i] as CpuTicks;
    user += a.user - b.user;
    sys += a.sys - b.sys;
    perProcessCpuMs[p.name] = ticksToMs(a.user + a.sys - b.user - b.sys);
  });
  return { src, pr, user, sys, perProcessCpuMs, benchCpuMs: (benchCpu.user + benchCpu.system) / 1000 };
}

function makeTurn(server: ServerKind, fsync: boolean | null, at: TurnAt, o: Options, m: Awaited<ReturnType<typeof measuredFlood>>, stored: number | null, deaths: number): Turn {
  const sent = o.messages + m.pr.ok;
  const handled = stored ?? sent;
  return {
    server,
    fsync,
    round: at.round,
    perConnection: at.perConnection,
    sent,
    stored,
    wallMs: Math.round(m.src.wallMs),
    msgsPerSec: Math.round(o.messages / (m.src.wallMs / 1000)),
    serverCpuMs: ticksToMs(m.user + m.sys),
    serverUserMs: ticksToMs(m.user),
    serverSysMs: ticksToMs(m.sys),
    serverCpuMsPerMsg: round2(ticksToMs(m.user + m.sys) / Math.max(1, handled)),
    perProcessCpuMs: m.perProcessCpuMs,
    clientCpuMsPerMsg: round2(m.src.clientCpuMs / o.messages),
    benchCpuMs: Math.round(m.benchCpuMs),
    latency: latencyOf(m.pr.samples, m.pr.errors),
    latencyRaw: m.pr.samples,
    sourceErrors: m.src.errors.slice(0, 10),
    workerDeaths: deaths,
    warmSpoolMs: 0,
    ratios: noRatios(),
    cpuRatios: noRatios(),
  };
}

/** Enough messages to get the JIT and the page cache past their first-request costs before measuring. */
const warmupCount = (o: Options) => o.warmup;

async function sinkTurn(tools: Tools, o: Options, at: TurnAt): Promise<Turn> {
  const sink = await startSink(tools);
  try {
    await runSource(tools, sink.port, warmupCount(o), o.sessions, o.size, { perConnection: at.perConnection });
    const m = await measuredFlood(tools, o, at, sink.port, [{ name: 'smtp-sink', pid: sink.pid }]);
    return makeTurn('smtp-sink', null, at, o, m, null, 0);
  } finally {
    await stopSink(sink);
  }
}

async function floorTurn(tools: Tools, o: Options, at: TurnAt, mode: FloorMode): Promise<Turn> {
  const f = await Floor.start(o.spoolBase, mode, o.workers);
  try {
    const warmSpoolMs = mode === 'write' ? warmDirs([f.messagesDir], o.warmSpool) : 0;
    const warm = await runSource(tools, f.port, warmupCount(o), o.sessions, o.size, { perConnection: at.perConnection });
    if (warm.errors.length) throw new Error(`floor-${mode} warm-up flood failed: ${warm.errors.slice(0, 3).join('; ')}\n${f.logTail()}`);
    const w0 = f.written();
    const m = await measuredFlood(tools, o, at, f.port, f.pids());
    return { ...makeTurn(`floor-${mode}`, null, at, o, m, mode === 'write' ? f.written() - w0 : null, f.workerDeaths()), warmSpoolMs };
  } finally {
    await f.stop();
  }
}

async function trapTurn(tools: Tools, built: string, o: Options, at: TurnAt, fsync: boolean, server: ServerKind = 'spamtrapd'): Promise<Turn> {
  const d = await Daemon.start(built, o.spoolBase, { workers: o.workers, fsync });
  try {
    const warmed = d.jobDirs();
    const warmSpoolMs = warmDirs(warmed, o.warmSpool);
    const warm = await runSource(tools, d.port, warmupCount(o), o.sessions, o.size, { perConnection: at.perConnection });
    if (warm.errors.length) throw new Error(`warm-up flood failed: ${warm.errors.slice(0, 3).join('; ')}\n${d.logTail()}`);
    const q0 = d.queued();
    const m = await measuredFlood(tools, o, at, d.port, d.pids());
    // Were the warmed data directories the ones the acceptors wrote to? A naming change would make the warm-up moot.
    const missed = o.warmSpool > 0 ? d.dataDirsInUse().filter((dir) => !warmed.includes(dir)) : [];
    if (missed.length) throw new Error(`--warm-spool warmed ${warmed.join(', ')} but the trap wrote to ${missed.join(', ')}`);
    return { ...makeTurn(server, fsync, at, o, m, d.queued() - q0, d.workerDeaths()), warmSpoolMs };
  } finally {
    await d.stop();
  }
}

/** Wide enough for 'spamtrapd-baseline fsync=off 100/conn'. */
const LABEL_WIDTH = 37;

function turnLabel(t: Turn): string {
  const server = t.server === 'spamtrapd' || t.server === 'spamtrapd-baseline' ? `${t.server} fsync=${t.fsync ? 'on' : 'off'}` : t.server;
  return t.perConnection === 1 ? server : `${server} ${t.perConnection}/conn`;
}

/** Fills in every turn's ratios to the references that ran in the same round with as many messages per connection. */
function rateRound(roundTurns: Turn[]): void {
  const against = (t: Turn, metric: (x: Turn) => number): Ratios => {
    const out = noRatios();
    for (const [server, key] of REFERENCES) {
      const ref = roundTurns.find((x) => x.server === server && x.perConnection === t.perConnection);
      if (ref && ref !== t && metric(ref) > 0) out[key] = metric(t) / metric(ref);
    }
    return out;
  };
  for (const t of roundTurns) {
    t.ratios = against(t, (x) => x.msgsPerSec);
    t.cpuRatios = against(t, (x) => x.serverCpuMsPerMsg);
  }
}

function printRoundRatios(round: number, roundTurns: Turn[]): void {
  say(`  round ${round} ratios (msgs/s, then server CPU ms/msg, over the reference's in this round):`);
  for (const t of roundTurns) {
    const parts = REFERENCES.filter(([, k]) => t.ratios[k] !== null).map(([server, k]) => `${fmt(t.ratios[k] as number, 2)}x ${server} (CPU ${fmt(t.cpuRatios[k] as number, 1)}x)`);
    say(`    ${turnLabel(t).padEnd(LABEL_WIDTH)} ${parts.join(', ')}`);
  }
}

const roundRatios = (r: Ratios): Ratios => ({
  vsSink: r.vsSink === null ? null : round2(r.vsSink),
  vsFloorDiscard: r.vsFloorDiscard === null ? null : round2(r.vsFloorDiscard),
  vsFloorWrite: r.vsFloorWrite === null ? null : round2(r.vsFloorWrite),
});

function printTurn(t: Turn): void {
  const procs = Object.entries(t.perProcessCpuMs)
    .map(([k, v]) => `${k} ${fmt(v)}`)
    .join(', ');
  say(
    `  round ${t.round}  ${turnLabel(t).padEnd(LABEL_WIDTH)} ${fmt(t.msgsPerSec).padStart(6)} msg/s  server ${fmt(t.serverCpuMsPerMsg, 2)} ms/msg ` +
      `(user ${fmt(t.serverUserMs)} + sys ${fmt(t.serverSysMs)} ms: ${procs})  smtp-source ${fmt(t.clientCpuMsPerMsg, 2)} ms/msg  ` +
      `latency p50 ${fmt(t.latency.p50Ms, 1)} p99 ${fmt(t.latency.p99Ms, 1)} ms (${t.latency.samples})  ` +
      `${t.stored === null ? `accepted ${t.sent - t.sourceErrors.length}` : `stored ${t.stored}`}/${t.sent} sent` +
      (t.sourceErrors.length ? `  ERRORS: ${t.sourceErrors.slice(0, 2).join(' | ')}` : '') +
      (t.latency.errors.length ? `  PROBE ERRORS: ${t.latency.errors.slice(0, 2).join(' | ')}` : '') +
      (t.workerDeaths ? `  WORKER DIED x${t.workerDeaths}` : ''),
  );
}

interface VariantSummary {
  variant: string;
  perConnection: number;
  turns: number;
  msgsPerSec: Spread;
  /** This variant's rate over smtp-sink's in the same round; the figure that survives machine noise. */
  ratioVsSink: Spread | null;
  /** Over the Node floor that receives and discards: what the trap costs beyond Node's sockets. */
  ratioVsFloorDiscard: Spread | null;
  /** Over the Node floor that also writes each message with one fs.writeFile. */
  ratioVsFloorWrite: Spread | null;
  serverCpuMsPerMsg: Spread;
  cpuRatioVsSink: Spread | null;
  cpuRatioVsFloorDiscard: Spread | null;
  cpuRatioVsFloorWrite: Spread | null;
  clientCpuMsPerMsg: Spread;
  /** Over the probe samples of every round together. */
  latency: Latency;
  sent: number;
  stored: number | null;
}

/** Median, min and max over rounds of one ratio; null when the reference never ran beside this variant. */
function ratioSpread(ts: Turn[], pick: (t: Turn) => number | null): Spread | null {
  const xs = ts.map(pick).filter((x): x is number => x !== null);
  return xs.length ? roundSpread(spread(xs)) : null;
}

function summarise(turns: Turn[]): VariantSummary[] {
  const variants = [...new Set(turns.map(turnLabel))];
  return variants.map((v) => {
    const ts = turns.filter((t) => turnLabel(t) === v);
    const stores = ts[0]?.stored !== null;
    return {
      variant: v,
      perConnection: ts[0]?.perConnection ?? 1,
      turns: ts.length,
      msgsPerSec: spread(ts.map((t) => t.msgsPerSec)),
      ratioVsSink: ratioSpread(ts, (t) => t.ratios.vsSink),
      ratioVsFloorDiscard: ratioSpread(ts, (t) => t.ratios.vsFloorDiscard),
      ratioVsFloorWrite: ratioSpread(ts, (t) => t.ratios.vsFloorWrite),
      serverCpuMsPerMsg: spread(ts.map((t) => t.serverCpuMsPerMsg)),
      cpuRatioVsSink: ratioSpread(ts, (t) => t.cpuRatios.vsSink),
      cpuRatioVsFloorDiscard: ratioSpread(ts, (t) => t.cpuRatios.vsFloorDiscard),
      cpuRatioVsFloorWrite: ratioSpread(ts, (t) => t.cpuRatios.vsFloorWrite),
      clientCpuMsPerMsg: spread(ts.map((t) => t.clientCpuMsPerMsg)),
      latency: latencyOf(
        ts.flatMap((t) => t.latencyRaw),
        ts.flatMap((t) => t.latency.errors),
      ),
      sent: ts.reduce((a, t) => a + t.sent, 0),
      stored: stores ? ts.reduce((a, t) => a + (t.stored ?? 0), 0) : null,
    };
  });
}

function roundSpread(s: Spread): Spread {
  return { median: round2(s.median), min: round2(s.min), max: round2(s.max) };
}

type TurnKind =
  | { server: 'smtp-sink' }
  | { server: 'floor'; mode: FloorMode }
  | { server: 'spamtrapd'; fsync: boolean }
  | { server: 'spamtrapd-baseline'; fsync: boolean; build: string };

function runTurn(tools: Tools, built: string, o: Options, at: TurnAt, k: TurnKind): Promise<Turn> {
  if (k.server === 'smtp-sink') return sinkTurn(tools, o, at);
  if (k.server === 'floor') return floorTurn(tools, o, at, k.mode);
  if (k.server === 'spamtrapd-baseline') return trapTurn(tools, k.build, o, at, k.fsync, 'spamtrapd-baseline');
  return trapTurn(tools, built, o, at, k.fsync);
}

function perConnectionText(o: Options): string {
  const one = (n: number) => (n === 1 ? 'one message per connection' : `${n} messages per connection (smtp-source -d, runs of sessions x ${n})`);
  return o.perConnection.map(one).join(' and ');
}

function printSummary(summary: VariantSummary[]): void {
  say('  summary (median, min-max over rounds):');
  const sp = (x: Spread, d = 0) => `${fmt(x.median, d)} (${fmt(x.min, d)}-${fmt(x.max, d)})`;
  for (const s of summary) {
    const ratios = [
      s.ratioVsSink && `${sp(s.ratioVsSink, 2)} x sink`,
      s.ratioVsFloorDiscard && `${sp(s.ratioVsFloorDiscard, 2)} x floor-discard`,
      s.ratioVsFloorWrite && `${sp(s.ratioVsFloorWrite, 2)} x floor-write`,
    ].filter(Boolean);
    say(
      `    ${s.variant.padEnd(LABEL_WIDTH)} ${sp(s.msgsPerSec).padEnd(18)} msg/s` +
        (ratios.length ? `  = ${ratios.join(', ')}` : '') +
        `  server ${sp(s.serverCpuMsPerMsg, 2)} ms/msg` +
        (s.cpuRatioVsSink ? ` (${fmt(s.cpuRatioVsSink.median, 1)} x sink)` : '') +
        `  latency p50 ${fmt(s.latency.p50Ms, 1)} / p99 ${fmt(s.latency.p99Ms, 1)} ms` +
        `  ${s.stored === null ? 'sent' : `stored ${s.stored} /`} ${s.sent}`,
    );
  }
}

async function throughputMode(tools: Tools, built: string, o: Options, problems: string[]) {
  const command = modeHeader(o, 'throughput', `throughput: ${o.rounds} rounds; per turn ${o.messages} messages of ${o.size} B, ${o.sessions} sessions, ${perConnectionText(o)}; ` +
    `floors and spamtrapd with ${o.workers} acceptors; ${o.probeLanes} latency probe lane(s); warm-up ${warmupCount(o)} messages per turn (not measured)`);
  say(o.warmSpool > 0
    ? `  spool warm-up: ${o.warmSpool} files created and removed in each of the trap's incoming/tmp, incoming/queue and acceptors' incoming/data/H1/H2, and in floor-write's directory, before each turn (under ${o.spoolBase})`
    : `  spool warm-up: none (--warm-spool 0): on a fresh ext4 directory the first few thousand file creations cost more than later ones`);
  const servers: TurnKind[] = [
    { server: 'smtp-sink' },
    { server: 'floor', mode: 'discard' },
    { server: 'floor', mode: 'write' },
    ...o.fsync.map((fsync) => ({ server: 'spamtrapd' as const, fsync })),
    ...(o.baselineBuild ? o.fsync.map((fsync) => ({ server: 'spamtrapd-baseline' as const, fsync, build: o.baselineBuild as string })) : []),
  ];
  const kinds = o.perConnection.flatMap((perConnection) => servers.map((k) => ({ k, perConnection })));
  const turns: Turn[] = [];
  for (let round = 1; round <= o.rounds; round++) {
    // Rotating who goes first spreads slow drifts of the shared machine over every variant.
    const shift = (round - 1) % kinds.length;
    const roundTurns: Turn[] = [];
    for (const { k, perConnection } of [...kinds.slice(shift), ...kinds.slice(0, shift)]) {
      const t = await runTurn(tools, built, o, { round, perConnection }, k);
      printTurn(t);
      roundTurns.push(t);
      if (t.sourceErrors.length) problems.push(`throughput round ${round} ${turnLabel(t)}: smtp-source errors: ${t.sourceErrors[0]}`);
      if (t.latency.errors.length) problems.push(`throughput round ${round} ${turnLabel(t)}: probe errors: ${t.latency.errors[0]}`);
      if (t.stored !== null && t.stored !== t.sent) problems.push(`throughput round ${round} ${turnLabel(t)}: stored ${t.stored} != sent ${t.sent}`);
      if (t.workerDeaths) problems.push(`throughput round ${round} ${turnLabel(t)}: ${t.workerDeaths} worker process(es) died`);
    }
    rateRound(roundTurns);
    printRoundRatios(round, roundTurns);
    turns.push(...roundTurns);
  }
  const summary = summarise(turns);
  printSummary(summary);
  return {
    reproduce: command,
    perConnection: o.perConnection,
    turns: turns.map(({ latencyRaw: _raw, ...t }) => ({ ...t, ratios: roundRatios(t.ratios), cpuRatios: roundRatios(t.cpuRatios) })),
    summary,
  };
}

// ---------------------------------------------------------------- storm

function rssOf(d: Daemon): Record<string, number> {
  const out: Record<string, number> = {};
  for (const p of d.pids()) out[p.name] = readRssKb(p.pid);
  return out;
}

const sumValues = (r: Record<string, number>) => Object.values(r).reduce((a, b) => a + b, 0);

/** Fails loudly (or re-executes under a raised limit as root) instead of letting the storm die on EMFILE midway. */
function ensureFdLimit(o: Options): void {
  if (o.mode !== 'storm' && o.mode !== 'all') return;
  const need = o.stormIdle * 2 + 2000;
  const have = openFileLimit();
  if (have >= need) return;
  const isRoot = process.getuid?.() === 0;
  if (isRoot && !process.env.SPAMTRAPD_BENCH_REEXEC) {
    const limit = Math.max(65536, need);
    say(`open-file limit ${have} < ${need} needed for ${o.stormIdle} idle connections: re-running under ulimit -n ${limit}`);
    const r = spawnSync(
      'sh',
      ['-c', `ulimit -n ${limit} 2>/dev/null || exit ${ULIMIT_FAILED}; exec "$@"`, 'smtp-bench', process.execPath, ...process.execArgv, __filename, ...process.argv.slice(2)],
      { stdio: 'inherit', env: { ...process.env, SPAMTRAPD_BENCH_REEXEC: '1' } },
    );
    if (r.status !== ULIMIT_FAILED) process.exit(r.status ?? 1);
    say(`could not raise the limit: the hard limit is below ${limit} and this root lacks CAP_SYS_RESOURCE`);
  }
  throw new UsageError(
    `open-file limit is ${have}, the storm needs >= ${need} (the bench holds ${o.stormIdle} sockets, an acceptor may hold them all).\n` +
      `Raise it and re-run, e.g. as root: sh -c 'ulimit -n 65536 && exec node ${path.relative(process.cwd(), __filename)} ${process.argv.slice(2).join(' ')}'\n` +
      `(in a container: docker run --ulimit nofile=65536:65536 ...), or lower --storm-idle.`,
  );
}

const ULIMIT_FAILED = 111;

async function openIdle(port: number, count: number, held: SmtpConn[], failures: string[]): Promise<void> {
  let next = 0;
  // 100 handshakes in flight at a time: fast, yet far below the listen backlog, so a refusal is the trap's doing.
  const lane = async () => {
    while (next < count) {
      next++;
      try {
        const c = await SmtpConn.connect(port, 10_000);
        try {
          const g = await c.reply(10_000);
          if (g.code !== 220) throw new Error(`greeting '${g.text}'`);
        } catch (e) {
          c.destroy();
          throw e;
        }
        held.push(c);
      } catch (e) {
        failures.push((e as Error).message);
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(100, count) }, lane));
}

async function greetingProbe(port: number, stop: { now: boolean }): Promise<{ latencies: number[]; failures: string[] }> {
  const latencies: number[] = [];
  const failures: string[] = [];
  const inflight: Array<Promise<void>> = [];
  while (!stop.now) {
    inflight.push(
      (async () => {
        const t0 = process.hrtime.bigint();
        let c: SmtpConn | null = null;
        try {
          c = await SmtpConn.connect(port, 10_000);
          const g = await c.reply(10_000);
          if (g.code !== 220) throw new Error(`greeting '${g.text}'`);
          latencies.push(Number(process.hrtime.bigint() - t0) / 1e6);
          c.socket.write('QUIT\r\n');
        } catch (e) {
          failures.push((e as Error).message);
        } finally {
          c?.socket.end();
          setTimeout(() => c?.destroy(), 1000).unref();
        }
      })(),
    );
    await sleep(100);
  }
  await Promise.all(inflight);
  return { latencies, failures };
}

async function stormMode(tools: Tools, built: string, o: Options, problems: string[]) {
  const fsync = o.fsync[0] as boolean;
  const command = modeHeader(o, 'storm', `storm: ${o.stormIdle} idle connections held open (greeting read, then silence) + a ${o.stormMessages}-message flood ` +
    `(${o.sessions} sessions, ${o.size} B); a fresh connection probes the greeting every 100 ms; fsync=${fsync ? 'on' : 'off'}`);
  const d = await Daemon.start(built, o.spoolBase, {
    workers: o.workers,
    fsync,
    env: {
      // The defaults (60 s idle timeout, 5000 connections per acceptor) would end or refuse the storm itself;
      // SCHED_NONE lets one acceptor take nearly all idle connections, so each must be able to hold them all.
      IDLE_TIMEOUT_MS: String(30 * 60_000),
      MAX_CONNECTIONS_PER_WORKER: String(o.stormIdle + o.sessions + 2000),
    },
  });
  const held: SmtpConn[] = [];
  try {
    // Memory per idle connection is measured on a fresh daemon, before any flood: after one, V8's heap has room to
    // spare and new connections fill it without growing RSS, which reads as (nearly) free connections.
    await sleep(1000);
    const rssBefore = rssOf(d);
    const openFailures: string[] = [];
    const t0 = Date.now();
    await openIdle(d.port, o.stormIdle, held, openFailures);
    const openMs = Date.now() - t0;
    await sleep(1000);
    const rssIdle = rssOf(d);
    // The warm-up runs with the idle connections held, so the measured flood meets a warm trap in a storm.
    const warm = await runSource(tools, d.port, warmupCount(o), o.sessions, o.size);
    if (warm.errors.length) throw new Error(`warm-up flood failed: ${warm.errors.slice(0, 3).join('; ')}`);
    const q0 = d.queued();
    const stop = { now: false };
    const probe = greetingProbe(d.port, stop);
    let src: SourceRun;
    try {
      src = await runSource(tools, d.port, o.stormMessages, o.sessions, o.size);
    } finally {
      stop.now = true;
    }
    const greet = await withTimeout(probe, 30_000, 'greeting probe');
    const stored = d.queued() - q0;
    const rssAfter = rssOf(d);
    const stillOpen = held.filter((c) => !c.closed).length;
    const g = [...greet.latencies].sort((a, b) => a - b);
    // Only the acceptors hold connections; the primary's and relay's RSS move with their own garbage collection.
    const acceptorsOnly = (r: Record<string, number>) => sumValues(Object.fromEntries(Object.entries(r).filter(([k]) => k.startsWith('acceptor'))));
    const perIdleKb = (acceptorsOnly(rssIdle) - acceptorsOnly(rssBefore)) / Math.max(1, held.length);
    const result = {
      reproduce: command,
      idleRequested: o.stormIdle,
      idleOpened: held.length,
      idleOpenMs: openMs,
      idleStillOpenAfterFlood: stillOpen,
      refused: openFailures.length + greet.failures.length + src.errors.length,
      refusalSamples: [...openFailures, ...greet.failures, ...src.errors].slice(0, 10),
      sent: o.stormMessages,
      stored,
      floodWallMs: Math.round(src.wallMs),
      floodMsgsPerSec: Math.round(o.stormMessages / (src.wallMs / 1000)),
      greetingProbes: g.length,
      greetingMaxMs: round2(g[g.length - 1] ?? NaN),
      greetingP50Ms: round2(percentile(g, 0.5)),
      greetingP99Ms: round2(percentile(g, 0.99)),
      rssKbBefore: rssBefore,
      rssKbIdle: rssIdle,
      rssKbAfterFlood: rssAfter,
      memoryPerIdleConnKb: round2(perIdleKb),
      workerDeaths: d.workerDeaths(),
      targets: {
        noRefusals: openFailures.length + greet.failures.length + src.errors.length === 0,
        everyMessageStored: stored === o.stormMessages,
        greetedWithin1s: g.length > 0 && (g[g.length - 1] as number) <= 1000 && greet.failures.length === 0,
        memoryPerIdleConnAtMost30Kb: perIdleKb <= 30,
      },
    };
    say(`  idle: ${held.length}/${o.stormIdle} opened in ${openMs} ms; ${stillOpen} still open after the flood`);
    say(`  flood: ${o.stormMessages} sent, ${stored} stored, ${result.floodMsgsPerSec} msg/s; refused/failed connections: ${result.refused}` +
      (result.refusalSamples.length ? ` (${result.refusalSamples.slice(0, 3).join(' | ')})` : ''));
    say(`  new-client greeting during the flood: ${g.length} probes, p50 ${fmt(result.greetingP50Ms, 1)} ms, p99 ${fmt(result.greetingP99Ms, 1)} ms, max ${fmt(result.greetingMaxMs, 1)} ms`);
    say(`  RSS KB before ${JSON.stringify(rssBefore)}, with idle ${JSON.stringify(rssIdle)}, after flood ${JSON.stringify(rssAfter)}`);
    say(`  memory per idle connection: ${fmt(perIdleKb, 1)} KB (target <= 30)`);
    if (result.refused) problems.push(`storm: ${result.refused} refused/failed connections: ${result.refusalSamples[0]}`);
    if (stored !== o.stormMessages) problems.push(`storm: stored ${stored} != sent ${o.stormMessages}`);
    if (stillOpen !== held.length) problems.push(`storm: ${held.length - stillOpen} idle connections were closed by the server`);
    if (result.workerDeaths) problems.push(`storm: ${result.workerDeaths} worker process(es) died`);
    return result;
  } finally {
    for (const c of held) c.destroy();
    await d.stop();
  }
}

// ---------------------------------------------------------------- soak

/**
 * Consumes the queue as a real consumer would, so a million-message soak does not fill the disk: unlinks each
 * control file and the data file its name points to (data/H1/H2/NAME-minus-H1H2, see dirqueue names.ts). A data file
 * linked under a collision name stays behind; the spool is removed after the run anyway.
 */
class Cleaner {
  removed = 0;
  private running: Promise<void> | null = null;

  constructor(private readonly incoming: string) {}

  private async pass(): Promise<void> {
    let names: string[];
    try {
      names = await fs.promises.readdir(path.join(this.incoming, 'queue'));
    } catch {
      return;
    }
    for (const name of names) {
      if (!/^\d/.test(name)) continue;
      try {
        await fs.promises.unlink(path.join(this.incoming, 'queue', name));
      } catch {
        continue;
      }
      this.removed++;
      const base = name.split('.').slice(0, 3).join('.');
      await fs.promises.unlink(path.join(this.incoming, 'data', base.charAt(base.length - 2), base.charAt(base.length - 1), base.slice(0, -2))).catch(() => undefined);
    }
  }

  /** Passes never overlap, so `removed` counts each job once. */
  run(): Promise<void> {
    if (!this.running) this.running = this.pass().finally(() => (this.running = null));
    return this.running;
  }
}

/**
 * What a queue that nobody reads needs for `messages` jobs: per job a data file (the body plus smtp-source's headers
 * and our Received header, ~600 B together) and a control file, each rounded up to the file system's block, and
 * ~400 B of log line. An estimate, to refuse a run that would fill the file system, not a measurement.
 */
function unconsumedSpoolBytes(o: Options): { need: number; free: number } {
  const st = fs.statfsSync(o.spoolBase);
  const perJob = (Math.ceil((o.size + 600) / st.bsize) + 1) * st.bsize + 400;
  return { need: perJob * o.soakMessages, free: st.bavail * st.bsize };
}

const gb = (bytes: number) => `${fmt(bytes / 2 ** 30, 1)} GB`;

async function soakMode(tools: Tools, built: string, o: Options, problems: string[], consume: boolean) {
  const fsync = o.fsync[0] as boolean;
  const space = consume ? null : unconsumedSpoolBytes(o);
  if (space && space.need > space.free) {
    throw new UsageError(`--no-consume: ${o.soakMessages} jobs need about ${gb(space.need)} under ${o.spoolBase}, which has ${gb(space.free)} free; ` +
      'lower --soak-messages or --size, or pick another --spool-base');
  }
  const command = modeHeader(o, 'soak', `soak: one ${o.soakMessages}-message flood (${o.sessions} sessions, ${o.size} B, fsync=${fsync ? 'on' : 'off'}); ` +
    `RSS of every trap process sampled every ${o.soakSampleEvery} messages; ` +
    (consume ? 'the queue is consumed as it fills' : `the queue is left to grow, nobody reads it (about ${gb(space?.need ?? 0)} under ${o.spoolBase}, removed at the end)`),
    consume ? [] : ['--no-consume']);
  const d = await Daemon.start(built, o.spoolBase, { workers: o.workers, fsync });
  const cleaner = consume ? new Cleaner(path.join(d.spoolDir, 'incoming')) : null;
  // Without a consumer, progress is what smtp-source reports sent (-c); the trap is at most `sessions` behind.
  let sentSoFar = 0;
  const progress = () => (cleaner ? cleaner.removed : sentSoFar);
  const samples: Array<{ messages: number; seconds: number; rssKb: Record<string, number> }> = [];
  const t0 = Date.now();
  const sample = () => samples.push({ messages: progress(), seconds: round2((Date.now() - t0) / 1000), rssKb: rssOf(d) });
  let nextSample = o.soakSampleEvery;
  const tick = async () => {
    await cleaner?.run();
    if (progress() >= nextSample && progress() < o.soakMessages) {
      sample();
      while (nextSample <= progress()) nextSample += o.soakSampleEvery;
      const last = samples[samples.length - 1]!;
      if (!o.smoke) say(`  ${last.messages} messages, ${last.seconds} s: RSS KB ${JSON.stringify(last.rssKb)}`);
    }
  };
  const timer = setInterval(() => void tick(), 200);
  try {
    sample();
    const cpu0 = cpuOf(d.pids().map((p) => p.pid));
    const src = await runSource(tools, d.port, o.soakMessages, o.sessions, o.size, consume ? {} : { onProgress: (n) => (sentSoFar = n) });
    const cpu1 = cpuOf(d.pids().map((p) => p.pid));
    clearInterval(timer);
    if (cleaner) {
      await cleaner.run();
      await cleaner.run();
    }
    sentSoFar = o.soakMessages;
    sample();
    const stored = cleaner ? cleaner.removed : d.queued();
    const final = samples[samples.length - 1]!;
    const at10 = samples.find((s) => s.messages >= o.soakMessages * 0.1) ?? samples[0]!;
    const growth: Record<string, { kb: number; percent: number }> = {};
    for (const [name, kb] of Object.entries(final.rssKb)) {
      const from = at10.rssKb[name] ?? 0;
      growth[name] = { kb: kb - from, percent: round2(from ? ((kb - from) / from) * 100 : NaN) };
    }
    const result = {
      reproduce: command,
      consume,
      sent: o.soakMessages,
      stored,
      wallMs: Math.round(src.wallMs),
      msgsPerSec: Math.round(o.soakMessages / (src.wallMs / 1000)),
      serverCpuMsPerMsg: round2(ticksToMs(cpu1.user + cpu1.sys - cpu0.user - cpu0.sys) / Math.max(1, stored)),
      sourceErrors: src.errors.slice(0, 10),
      samples,
      growthFrom10PercentKb: growth,
      growthFromMessages: at10.messages,
      maxRssKb: Object.fromEntries(Object.keys(final.rssKb).map((k) => [k, Math.max(...samples.map((s) => s.rssKb[k] ?? 0))])),
      workerDeaths: d.workerDeaths(),
    };
    const label = consume ? 'soak' : 'soak --no-consume';
    say(`  ${o.soakMessages} sent, ${stored} stored, ${result.msgsPerSec} msg/s, server ${fmt(result.serverCpuMsPerMsg, 2)} ms/msg, ${samples.length} RSS samples`);
    say(`  RSS growth from ${at10.messages} messages (~10%) to ${final.messages} (100%): ` +
      Object.entries(growth).map(([k, g]) => `${k} ${g.kb >= 0 ? '+' : ''}${g.kb} KB (${fmt(g.percent, 1)}%)`).join(', '));
    say(`  max RSS KB ${JSON.stringify(result.maxRssKb)}`);
    if (src.errors.length) problems.push(`${label}: smtp-source errors: ${src.errors[0]}`);
    if (stored !== o.soakMessages) problems.push(`${label}: stored ${stored} != sent ${o.soakMessages}`);
    if (result.workerDeaths) problems.push(`${label}: ${result.workerDeaths} worker process(es) died`);
    return result;
  } finally {
    clearInterval(timer);
    // Removes the spool: with --no-consume every job of the run is still in it.
    await d.stop();
  }
}

// ---------------------------------------------------------------- hostile

interface HostileShape {
  name: string;
  what: string;
  /** Sessions sending the message at once. */
  sessions: number;
  /** The message as it must be stored (after our Received header), and as it goes on the wire before the final dot. */
  build(size: number): { message: Buffer; wire: Buffer };
}

/** `line` repeated to about `size` bytes. */
const repeated = (line: string, size: number) => Buffer.alloc(Math.max(1, Math.floor(size / line.length)) * line.length, line, 'latin1');
/** The final dot must follow a CRLF: a message whose lines end otherwise gets one last CRLF, which is stored too. */
const crlfEnded = (b: Buffer) => Buffer.concat([b, Buffer.from('\r\n')]);
const asSent = (message: Buffer) => ({ message, wire: message });
/** Every line ".a"; on the wire "..a", dot-stuffed as every SMTP client sends a line that starts with a dot. */
function allDots(size: number): { message: Buffer; wire: Buffer } {
  const lines = Math.max(1, Math.floor(size / 5));
  return { message: Buffer.alloc(lines * 4, '.a\r\n', 'latin1'), wire: Buffer.alloc(lines * 5, '..a\r\n', 'latin1') };
}

const LINE76 = 'X'.repeat(76);

/** DATA shapes that cost a line-oriented parser the most per byte; issue 12's endurance list. */
const HOSTILE_SHAPES: HostileShape[] = [
  { name: 'plain', what: '76-character lines', sessions: 1, build: (n) => asSent(repeated(`${LINE76}\r\n`, n)) },
  { name: 'dots', what: 'every line ".a" (sent "..a")', sessions: 1, build: allDots },
  { name: 'one-byte-lines', what: 'every line 1 byte', sessions: 1, build: (n) => asSent(repeated('a\r\n', n)) },
  { name: 'bare-lf', what: '76-character lines ending in LF only', sessions: 1, build: (n) => asSent(crlfEnded(repeated(`${LINE76}\n`, n))) },
  { name: 'long-line', what: 'one line of 1.25 x size, no line break', sessions: 1, build: (n) => asSent(crlfEnded(Buffer.alloc(Math.round(n * 1.25), 'a'))) },
  { name: 'cr-only', what: '76-character lines ending in CR only', sessions: 1, build: (n) => asSent(crlfEnded(repeated(`${LINE76}\r`, n))) },
  { name: 'nul', what: '76-byte lines, every other byte NUL', sessions: 1, build: (n) => asSent(repeated(`${'X\0'.repeat(38)}\r\n`, n)) },
  { name: 'dots-x4', what: '4 concurrent sessions, each the dots message', sessions: 4, build: allDots },
];

/** The trap's default MAX_MESSAGE_SIZE (.env.example); a bigger shape gets twice its size so it is not refused. */
const DEFAULT_MAX_MESSAGE_SIZE = 10485760;

function maxMessageSizeFor(messageBytes: number): string | null {
  return messageBytes + 64 * 1024 > DEFAULT_MAX_MESSAGE_SIZE ? String(2 * messageBytes) : null;
}

/** The message after our Received header: the header ends at the first CRLF not followed by SP or TAB. */
function afterReceivedHeader(stored: Buffer): Buffer {
  for (let i = stored.indexOf('\r\n'); i >= 0; i = stored.indexOf('\r\n', i + 2)) {
    const next = stored[i + 2];
    if (next !== 0x20 && next !== 0x09) return stored.subarray(i + 2);
  }
  return Buffer.alloc(0);
}

/** Names of the jobs in incoming/queue/. */
function jobNames(d: Daemon): string[] {
  try {
    return fs.readdirSync(d.queueDir()).filter((n) => /^\d/.test(n));
  } catch {
    return [];
  }
}

/** Each of these jobs compared with the message: what differs, nothing when every one is equal. */
function storedDifference(d: Daemon, names: string[], message: Buffer): string[] {
  const out: string[] = [];
  for (const name of names) {
    const dataPath = parseControl(fs.readFileSync(path.join(d.queueDir(), name))).fields.QDFN;
    if (!dataPath) {
      out.push(`${name}: no QDFN in the control file`);
      continue;
    }
    const body = afterReceivedHeader(fs.readFileSync(dataPath));
    if (body.equals(message)) continue;
    let at = 0;
    while (at < body.length && at < message.length && body[at] === message[at]) at++;
    out.push(`${name}: ${body.length} bytes stored for ${message.length} sent, first difference at byte ${at}`);
  }
  return out;
}

/** One session's envelope up to the 354, on a raw socket: the bench writes DATA's bytes itself. */
async function openForData(port: number): Promise<SmtpConn> {
  const c = await SmtpConn.connect(port, 10_000);
  const g = await c.reply(10_000);
  if (g.code !== 220) throw new Error(`greeting '${g.text}'`);
  await c.command('EHLO hostile.bench.example', 250, 10_000);
  await c.command('MAIL FROM:<hostile@bench.example>', 250, 10_000);
  await c.command('RCPT TO:<trap@bait.example>', 250, 10_000);
  await c.command('DATA', 354, 10_000);
  return c;
}

/** Writes the message and the final dot; resolves with the times the last byte left for the kernel and the reply came. */
async function sendData(c: SmtpConn, wire: Buffer, replyTimeoutMs: number): Promise<{ writtenAt: bigint; repliedAt: bigint; reply: string }> {
  let writtenAt = 0n;
  c.socket.write(wire);
  c.socket.write('.\r\n', () => (writtenAt = process.hrtime.bigint()));
  const r = await c.reply(replyTimeoutMs).catch((e: Error) => ({ code: 0, text: e.message }));
  return { writtenAt: writtenAt || process.hrtime.bigint(), repliedAt: process.hrtime.bigint(), reply: r.text };
}

/** Peak VmRSS of each process, sampled every 20 ms until stopped: the acceptors' growth while they parse DATA. */
function rssPeaks(procs: Array<{ name: string; pid: number }>): { stop(): Record<string, number> } {
  const peaks: Record<string, number> = {};
  const sample = () => {
    for (const p of procs) peaks[p.name] = Math.max(peaks[p.name] ?? 0, readRssKb(p.pid));
  };
  sample();
  const timer = setInterval(sample, 20);
  return {
    stop() {
      clearInterval(timer);
      sample();
      return peaks;
    },
  };
}

/**
 * The acceptors that logged the transactions after the log's first `from` characters (src/smtp/session.ts logs one
 * `transaction` line per message; lines are batched, so they may come a moment after the reply).
 */
async function transactionTakers(d: Daemon, from: number, expected: number): Promise<string[]> {
  const deadline = Date.now() + 2000;
  for (;;) {
    const takers = [...d.logs().slice(from).matchAll(/ transaction proc=(acceptor\d+) /g)].map((m) => m[1] as string);
    if (takers.length >= expected || Date.now() > deadline) return takers;
    await sleep(50);
  }
}

/** A daemon for hostile shapes: fsync off as in the throughput default, MAX_MESSAGE_SIZE raised when a shape needs it. */
async function hostileDaemon(built: string, o: Options, maxMessageSize: string | null): Promise<Daemon> {
  const d = await Daemon.start(built, o.spoolBase, { workers: o.workers, fsync: false, env: maxMessageSize ? { MAX_MESSAGE_SIZE: maxMessageSize } : {} });
  // A fresh acceptor's RSS still moves for a moment after it listens (module loading, first GC).
  await sleep(o.smoke ? 200 : 1000);
  return d;
}

/** One shape on a running daemon: only the jobs, log lines and deaths that appear during it count. */
async function hostileShape(d: Daemon, shape: HostileShape, message: Buffer, wire: Buffer, maxMessageSize: string | null) {
  const jobsBefore = new Set(jobNames(d));
  const logFrom = d.logs().length;
  const deathsBefore = d.workerDeaths();
  const conns = await Promise.all(Array.from({ length: shape.sessions }, () => openForData(d.port)));
  const acceptors = d.acceptors();
  const cpu0 = acceptors.map((a) => readCpu(a.pid));
  const rss0 = Object.fromEntries(acceptors.map((a) => [a.name, readRssKb(a.pid)]));
  const peaks = rssPeaks(acceptors);
  const t0 = process.hrtime.bigint();
  // The reply wait is the bench's only bound: the trap's own DATA_TIMEOUT_MS (120 s by default) applies first.
  const sends = await Promise.all(conns.map((c) => sendData(c, wire, 600_000)));
  const peak = peaks.stop();
  const cpu1 = acceptors.map((a) => readCpu(a.pid));
  for (const c of conns) c.destroy();
  const perAcceptorCpuMs = Object.fromEntries(acceptors.map((a, i) => [a.name, ticksToMs(cpu1[i]!.user + cpu1[i]!.sys - cpu0[i]!.user - cpu0[i]!.sys)]));
  const takers = await transactionTakers(d, logFrom, shape.sessions);
  const growth = Object.fromEntries(acceptors.map((a) => [a.name, (peak[a.name] ?? 0) - (rss0[a.name] ?? 0)]));
  const jobs = jobNames(d).filter((n) => !jobsBefore.has(n));
  const stored = jobs.length;
  const differences = storedDifference(d, jobs, message);
  const ms = (a: bigint, b: bigint) => round2(Number(b - a) / 1e6);
  return {
    shape: shape.name,
    what: shape.what,
    sessions: shape.sessions,
    wireBytes: wire.length + 3,
    messageBytes: message.length,
    maxMessageSize,
    replies: sends.map((x) => x.reply),
    /** The slowest session's wait from its last byte handed to the kernel to its reply. */
    endOfDataToReplyMs: Math.max(...sends.map((x) => ms(x.writtenAt, x.repliedAt))),
    /** From the first DATA byte written to the last reply. */
    transferMs: ms(t0, sends.reduce((a, x) => (x.repliedAt > a ? x.repliedAt : a), t0)),
    acceptorCpuMs: sumValues(perAcceptorCpuMs),
    perAcceptorCpuMs,
    takers,
    rssBeforeKb: rss0,
    peakRssKb: peak,
    /** Peak minus before, of the acceptors that took the sessions (each counted once). */
    peakRssGrowthKb: [...new Set(takers)].reduce((a, name) => a + (growth[name] ?? 0), 0),
    perAcceptorPeakGrowthKb: growth,
    hwmAfterKb: Object.fromEntries(acceptors.map((a) => [a.name, readStatusKb(a.pid, 'VmHWM')])),
    stored,
    storedOk: stored === shape.sessions && differences.length === 0 && sends.every((x) => x.reply.startsWith('250')),
    differences: differences.slice(0, 4),
    workerDeaths: d.workerDeaths() - deathsBefore,
  };
}

const mb = (kb: number) => `${kb >= 0 ? '+' : ''}${fmt(kb / 1024, 1)} MB`;

async function hostileMode(built: string, o: Options, problems: string[]) {
  const command = modeHeader(o, 'hostile', `hostile: one message per shape, ${o.hostileSize} B each (long-line 1.25x), each sent to ` +
    `${o.hostileShared ? 'ONE SHARED spamtrapd (--hostile-shared: RSS growth includes earlier shapes)' : 'a fresh spamtrapd'} ` +
    `(${o.workers} acceptors, rDNS off, fsync off) over a raw socket; acceptors' RSS sampled every 20 ms`);
  say(`  ${'shape'.padEnd(15)} ${'bytes sent'.padStart(11)} ${'end of DATA -> reply'.padStart(21)} ${'transfer'.padStart(10)} ${'acceptor CPU'.padStart(13)}  peak RSS growth (acceptor)   stored`);
  const shapes: HostileResult[] = [];
  const chosen = HOSTILE_SHAPES.filter((h) => o.hostileShapes.includes(h.name)).map((shape) => {
    const { message, wire } = shape.build(o.hostileSize);
    return { shape, message, wire, maxMessageSize: maxMessageSizeFor(message.length) };
  });
  const largest = Math.max(...chosen.map((c) => c.message.length));
  const shared = o.hostileShared ? await hostileDaemon(built, o, maxMessageSizeFor(largest)) : null;
  try {
    for (const c of chosen) {
      const d = shared ?? (await hostileDaemon(built, o, c.maxMessageSize));
      try {
        shapes.push(await hostileShape(d, c.shape, c.message, c.wire, shared ? maxMessageSizeFor(largest) : c.maxMessageSize));
      } finally {
        if (!shared) await d.stop();
      }
      printHostile(shapes[shapes.length - 1]!, problems);
    }
  } finally {
    await shared?.stop();
  }
  return { reproduce: command, size: o.hostileSize, shared: o.hostileShared, shapes };
}

type HostileResult = Awaited<ReturnType<typeof hostileShape>>;

function printHostile(r: HostileResult, problems: string[]): void {
  const who = [...new Set(r.takers)].join('+') || '?';
  say(
    `  ${r.shape.padEnd(15)} ${String(r.wireBytes * r.sessions).padStart(11)} ${`${fmt(r.endOfDataToReplyMs, 1)} ms`.padStart(21)} ` +
      `${`${fmt(r.transferMs)} ms`.padStart(10)} ${`${fmt(r.acceptorCpuMs)} ms`.padStart(13)}  ${`${mb(r.peakRssGrowthKb)} (${who})`.padEnd(27)}  ` +
      `${r.storedOk ? 'ok' : `NO: ${r.stored} job(s), replies ${r.replies.join(' | ')}${r.differences.length ? `; ${r.differences[0]}` : ''}`}` +
      (r.maxMessageSize ? `  (MAX_MESSAGE_SIZE=${r.maxMessageSize})` : ''),
  );
  if (!r.storedOk) problems.push(`hostile ${r.shape}: not stored as sent: ${r.stored} job(s), replies ${r.replies.join(' | ')}${r.differences.length ? `; ${r.differences[0]}` : ''}`);
  if (r.workerDeaths) problems.push(`hostile ${r.shape}: ${r.workerDeaths} worker process(es) died`);
}

// ---------------------------------------------------------------- footprint

/** RSS of every process of the trap's tree now (the tree is walked again: a restarted worker would show). */
function footprintReading(d: ClusterServer): { rssKb: Record<string, number>; totalKb: number } {
  const rssKb = Object.fromEntries(d.discover().map((p) => [p.name, readRssKb(p.pid)]));
  return { rssKb, totalKb: sumValues(rssKb) };
}

async function footprintMode(tools: Tools, built: string, o: Options, problems: string[]) {
  const fsync = o.fsync[0] as boolean;
  const command = modeHeader(o, 'footprint', `footprint: a fresh spamtrapd (${o.workers} acceptors, fsync=${fsync ? 'on' : 'off'}); RSS of every process ` +
    `after ${o.footprintSettle} s idle, then a ${o.footprintMessages}-message flood (${o.sessions} sessions, ${o.size} B), then RSS after ${o.footprintSettle} s of quiet`);
  const d = await Daemon.start(built, o.spoolBase, { workers: o.workers, fsync });
  try {
    await sleep(o.footprintSettle * 1000);
    const idle = footprintReading(d);
    const q0 = d.queued();
    const src = await runSource(tools, d.port, o.footprintMessages, o.sessions, o.size);
    const stored = d.queued() - q0;
    await sleep(o.footprintSettle * 1000);
    const after = footprintReading(d);
    const hwmKb = Object.fromEntries(d.discover().map((p) => [p.name, readStatusKb(p.pid, 'VmHWM')]));
    const names = [...new Set([...Object.keys(idle.rssKb), ...Object.keys(after.rssKb)])];
    say(`  ${'process'.padEnd(12)} ${'idle KB'.padStart(10)} ${'after KB'.padStart(10)} ${'growth KB'.padStart(10)} ${'peak KB (VmHWM)'.padStart(16)}`);
    for (const n of [...names, 'total']) {
      const i = n === 'total' ? idle.totalKb : idle.rssKb[n] ?? 0;
      const a = n === 'total' ? after.totalKb : after.rssKb[n] ?? 0;
      // Peaks of different processes fall at different moments: their sum is no process tree's peak.
      const h = n === 'total' ? '-' : String(hwmKb[n] ?? 0);
      say(`  ${n.padEnd(12)} ${String(i).padStart(10)} ${String(a).padStart(10)} ${String(a - i).padStart(10)} ${h.padStart(16)}`);
    }
    say(`  flood: ${o.footprintMessages} sent, ${stored} stored, ${Math.round(o.footprintMessages / (src.wallMs / 1000))} msg/s`);
    if (src.errors.length) problems.push(`footprint: smtp-source errors: ${src.errors[0]}`);
    if (stored !== o.footprintMessages) problems.push(`footprint: stored ${stored} != sent ${o.footprintMessages}`);
    if (d.workerDeaths()) problems.push(`footprint: ${d.workerDeaths()} worker process(es) died`);
    return {
      reproduce: command,
      settleSec: o.footprintSettle,
      idle,
      afterFlood: after,
      growthKb: Object.fromEntries(names.map((n) => [n, (after.rssKb[n] ?? 0) - (idle.rssKb[n] ?? 0)])),
      peakKb: hwmKb,
      sent: o.footprintMessages,
      stored,
      floodMsgsPerSec: Math.round(o.footprintMessages / (src.wallMs / 1000)),
      workerDeaths: d.workerDeaths(),
    };
  } finally {
    await d.stop();
  }
}

// ---------------------------------------------------------------- main

async function main(): Promise<number> {
  const o = parseOptions(process.argv.slice(2));
  jsonMode = o.json;
  ensureFdLimit(o);
  const root = repoRoot();
  const built = builtRoot();
  const tools = ensureTools(root);
  fs.mkdirSync(o.spoolBase, { recursive: true });
  const started = Date.now();
  const cpus = os.cpus();
  const machine = {
    cpus: cpus.length,
    cpuModel: cpus[0]?.model ?? 'unknown',
    memoryMb: Math.round(os.totalmem() / 2 ** 20),
    node: process.version,
    kernel: os.release(),
    loadAvgAtStart: os.loadavg().map(round2),
    openFileLimit: openFileLimit(),
    spoolBase: o.spoolBase,
  };
  say(`spamtrapd SMTP benchmark${o.smoke ? ' (SMOKE: tiny counts, the numbers mean nothing)' : ''}: ${machine.cpus} CPUs (${machine.cpuModel}), ` +
    `node ${machine.node}, linux ${machine.kernel}, load ${machine.loadAvgAtStart.join(' ')}, spools under ${o.spoolBase}`);
  // -m is the only argument that differs between turns (warm-up, flood, storm, soak); each section prints its count.
  const sourceTemplate = `${tools.source} ${sourceArgs(0, 0, o.sessions, o.size).join(' ').replace('-m 0', '-m N').replace('127.0.0.1:0', '127.0.0.1:PORT')}`;
  say(`  daemon: node ${[...primaryNodeFlags(built), path.join(built, 'workers', 'cli.js')].join(' ')} start; client: ${sourceTemplate}`);
  const problems: string[] = [];
  const report: Record<string, unknown> = {
    machine,
    options: { ...o, fsync: o.fsync.map((f) => (f ? 'on' : 'off')) },
    commands: {
      smtpSource: sourceTemplate,
      smtpSink: `${tools.sink} -u nobody 127.0.0.1:PORT 4096`,
      daemon: `node ${[...primaryNodeFlags(built), path.join(built, 'workers', 'cli.js')].join(' ')} start`,
      daemonEnv: 'SMTP_HOST=127.0.0.1 WORKERS=N RDNS_TIMEOUT_MS=0 LOG_LEVEL=info SPOOL_FSYNC=false|true (storm: IDLE_TIMEOUT_MS=1800000 MAX_CONNECTIONS_PER_WORKER=idle+sessions+2000)',
    },
  };
  if (o.mode === 'throughput' || o.mode === 'all') report.throughput = await throughputMode(tools, built, o, problems);
  if (o.mode === 'storm' || o.mode === 'all') report.storm = await stormMode(tools, built, o, problems);
  if (o.mode === 'soak' || o.mode === 'all') {
    for (const consume of o.soakConsume) report[consume ? 'soak' : 'soakNoConsume'] = await soakMode(tools, built, o, problems, consume);
  }
  if (o.mode === 'hostile' || o.mode === 'all') report.hostile = await hostileMode(built, o, problems);
  if (o.mode === 'footprint' || o.mode === 'all') report.footprint = await footprintMode(tools, built, o, problems);
  report.durationSec = round2((Date.now() - started) / 1000);
  report.problems = problems;
  report.ok = problems.length === 0;
  say(`done in ${report.durationSec} s; ${problems.length ? `PROBLEMS:\n  ${problems.join('\n  ')}` : 'every message sent was stored, no errors'}`);
  if (o.json) process.stdout.write(JSON.stringify(report, null, 2) + '\n');
  return problems.length ? 1 : 0;
}

/** Kills whatever is still running, reaps it (in a container whose init does not reap, orphans stay zombies), exits. */
async function shutdown(code: number): Promise<never> {
  const dying = [...children];
  cleanupSync();
  await withTimeout(Promise.all(dying.map(exited)), 3000, 'children exit').catch(() => undefined);
  process.exit(code);
}

for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(sig, () => void shutdown(130));
// Kills are synchronous, so even a process.exit() from anywhere leaves no smtp-sink or daemon running.
process.on('exit', cleanupSync);

main().then(
  (code) => shutdown(code),
  (e: unknown) => {
    if (e instanceof UsageError) console.error(`${e.message}\n\n${usage()}`);
    else console.error(e);
    return shutdown(2);
  },
);
