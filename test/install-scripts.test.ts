/**
 * scripts/install-test-deps.sh and scripts/install-container-tools.sh, run for real on a copy of scripts/ in a
 * temporary directory (the checkout's own .tools is never written). Each run gets a PATH whose first entry is a
 * guard directory: apt-get, apt, dpkg and dpkg-query there only log their arguments and fail, so no test reaches
 * the network or changes the machine, and "installed nothing" is checked from that log. Tools are either stubs (a
 * script that answers like the tool) or, for "everything already installed", the checkout's own .tools/bin.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { repoRoot } from './helpers/paths';

const ROOT = repoRoot();
const TEST_DEPS = 'install-test-deps.sh';
const CONTAINER = 'install-container-tools.sh';

/** What each script resolves, and how it installs a tool found nowhere (the --plan wording). */
const INSTALLS: Record<string, Record<string, string>> = {
  [TEST_DEPS]: {
    'smtp-source': 'dpkg -x postfix into .tools/root',
    'smtp-sink': 'dpkg -x postfix into .tools/root',
    promtool: 'dpkg -x prometheus into .tools/root',
    swaks: 'apt-get install swaks',
    haproxy: 'apt-get install haproxy',
    rbldnsd: 'dpkg -x rbldnsd into .tools/root',
    dig: 'apt-get install bind9-dnsutils',
  },
  [CONTAINER]: {
    podman: 'apt-get install podman',
    buildah: 'apt-get install buildah',
    runc: 'apt-get install runc',
    mmdebstrap: 'apt-get install mmdebstrap',
    unshare: 'apt-get install util-linux',
    'systemd-analyze': 'apt-get install systemd',
  },
};
const toolsOf = (script: string) => Object.keys(INSTALLS[script]);
const ALL_TOOLS = [...toolsOf(TEST_DEPS), ...toolsOf(CONTAINER)];
const GUARDED = ['apt-get', 'apt', 'dpkg', 'dpkg-query'];
/** Guard log lines that would have changed the machine: dpkg-query and `dpkg --print-architecture` only read. */
const INSTALL_COMMAND = /^(apt-get|apt|dpkg) (?!--print-architecture$)/;
/** A run that installs nothing takes about a second; the bound leaves room for a machine busy with other suites. */
const FAST_MS = 15_000;

const tempDirs: string[] = [];
function tempDir(prefix: string): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  tempDirs.push(d);
  return d;
}
after(() => {
  for (const d of tempDirs) fs.rmSync(d, { recursive: true, force: true });
});

function writeExecutable(file: string, text: string): void {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, text, { mode: 0o755 });
}

/** A stand-in answering every probe the scripts use (--version, -v, -h, no arguments) like NAME does. */
function stub(dir: string, name: string): string {
  const file = path.join(dir, name);
  writeExecutable(file, `#!/bin/sh\necho "${name} 0-stub; usage: ${name} [options]"\n`);
  return file;
}

/** A copy that is there but cannot run, like a binary whose shared libraries are missing. */
function brokenStub(dir: string, name: string): string {
  const file = path.join(dir, name);
  writeExecutable(file, `#!/bin/sh\necho "${name}: error while loading shared libraries: libfoo.so.1" >&2\nexit 127\n`);
  return file;
}

/**
 * A directory that has every command of this machine's PATH except the tools and the package commands, so a
 * PATH made of it finds none of them whatever is installed here. Built once: a few thousand symlinks.
 */
let machineWithoutTools = '';
before(() => {
  machineWithoutTools = tempDir('spamtrapd-install-path-');
  const hidden = new Set([...ALL_TOOLS, ...GUARDED]);
  for (const dir of (process.env.PATH ?? '').split(':')) {
    if (!dir || !fs.existsSync(dir)) continue;
    for (const name of fs.readdirSync(dir)) {
      const link = path.join(machineWithoutTools, name);
      if (hidden.has(name) || fs.existsSync(link)) continue;
      fs.symlinkSync(path.join(dir, name), link);
    }
  }
});

interface Sandbox {
  dir: string;
  bin: string;
  stubs: string;
  log: string;
}

/** A copy of scripts/ with its own (absent) .tools, a stub directory and the guard commands. */
function sandbox(opts: { installedPackages?: Record<string, string[]> } = {}): Sandbox {
  const dir = tempDir('spamtrapd-install-');
  fs.cpSync(path.join(ROOT, 'scripts'), path.join(dir, 'scripts'), { recursive: true });
  const log = path.join(dir, 'guard.log');
  fs.writeFileSync(log, '');
  for (const cmd of GUARDED) {
    // dpkg-query -L PACKAGE lists the given files of a package "installed" here, and nothing otherwise.
    const listing = Object.entries(opts.installedPackages ?? {})
      .map(([pkg, files]) => `  "-L ${pkg}") printf '%s\\n' ${files.map((f) => `'${f}'`).join(' ')}; exit 0 ;;\n`)
      .join('');
    let answer = cmd === 'dpkg-query' && listing ? `case "$*" in\n${listing}esac\n` : '';
    // mmdebstrap --version asks dpkg for the architecture.
    if (cmd === 'dpkg') answer = `if [ "$*" = --print-architecture ] && [ -x /usr/bin/dpkg ]; then exec /usr/bin/dpkg "$@"; fi\n`;
    writeExecutable(path.join(dir, 'guard', cmd), `#!/bin/sh\necho "${cmd} $*" >>'${log}'\n${answer}exit 1\n`);
  }
  return { dir, bin: path.join(dir, '.tools', 'bin'), stubs: path.join(dir, 'stubs'), log };
}

interface Run {
  status: number | null;
  stdout: string;
  stderr: string;
  ms: number;
  /** NAME -> [decision, detail] from the "NAME: decision detail" lines. */
  plan: Map<string, [string, string]>;
  installCommands: string[];
}

function run(s: Sandbox, script: string, args: string[], pathDirs: string[]): Run {
  const t0 = Date.now();
  const r = spawnSync('bash', [path.join(s.dir, 'scripts', script), ...args], {
    encoding: 'utf8',
    timeout: 60_000,
    env: { ...process.env, PATH: [path.join(s.dir, 'guard'), ...pathDirs].join(':') },
  });
  const plan = new Map<string, [string, string]>();
  for (const line of (r.stdout ?? '').split('\n')) {
    const m = /^([\w-]+): (keep|path|installed|install) (.*)$/.exec(line);
    if (m) plan.set(m[1], [m[2], m[3]]);
  }
  const installCommands = fs.readFileSync(s.log, 'utf8').split('\n').filter((l) => INSTALL_COMMAND.test(l));
  return { status: r.status, stdout: r.stdout ?? '', stderr: r.stderr ?? '', ms: Date.now() - t0, plan, installCommands };
}

function show(r: Run): string {
  return `exit ${r.status}\n--- stdout\n${r.stdout}--- stderr\n${r.stderr}`;
}

/** The same decision for every tool of SCRIPT, its detail from DETAIL(tool). */
function every(script: string, decision: string, detail: (tool: string) => string): Record<string, [string, string]> {
  return Object.fromEntries(toolsOf(script).map((t): [string, [string, string]] => [t, [decision, detail(t)]]));
}

function assertPlan(r: Run, script: string, expected: Record<string, [string, string]>): void {
  assert.deepEqual([...r.plan.keys()].sort(), toolsOf(script).sort(), `every tool of ${script} resolved:\n${show(r)}`);
  for (const [name, want] of Object.entries(expected)) assert.deepEqual(r.plan.get(name), want, `${name}:\n${show(r)}`);
}

for (const script of [TEST_DEPS, CONTAINER]) {
  describe(`${script} with the tools already on PATH`, () => {
    test('--plan links each to the copy on PATH and changes nothing', () => {
      const s = sandbox();
      for (const t of toolsOf(script)) stub(s.stubs, t);
      const r = run(s, script, ['--plan'], [s.stubs, machineWithoutTools]);
      assert.equal(r.status, 0, show(r));
      assertPlan(r, script, every(script, 'path', (t) => path.join(s.stubs, t)));
      assert.ok(!fs.existsSync(path.join(s.dir, '.tools')), '--plan created .tools');
      assert.deepEqual(r.installCommands, []);
    });

    test('a real run links .tools/bin/NAME to each and installs nothing; a second run keeps them, fast', () => {
      const s = sandbox();
      for (const t of toolsOf(script)) stub(s.stubs, t);
      const first = run(s, script, [], [s.stubs, machineWithoutTools]);
      assert.equal(first.status, 0, show(first));
      for (const t of toolsOf(script)) {
        assert.equal(fs.readlinkSync(path.join(s.bin, t)), path.join(s.stubs, t), t);
        const answer = spawnSync(path.join(s.bin, t), ['--version'], { encoding: 'utf8' });
        assert.match(answer.stdout, new RegExp(`^${t} 0-stub`), `.tools/bin/${t} runs the copy on PATH`);
      }
      const second = run(s, script, [], [s.stubs, machineWithoutTools]);
      assert.equal(second.status, 0, show(second));
      assertPlan(second, script, every(script, 'keep', (t) => path.join(s.stubs, t)));
      assert.deepEqual([...first.installCommands, ...second.installCommands], [], 'no apt-get or dpkg at all');
      assert.ok(second.ms < FAST_MS, `second run took ${second.ms} ms`);
    });

    test('a broken copy on PATH does not count; a working one later on PATH does', () => {
      const s = sandbox();
      const broken = path.join(s.dir, 'broken');
      for (const t of toolsOf(script)) {
        brokenStub(broken, t);
        stub(s.stubs, t);
      }
      const r = run(s, script, ['--plan'], [broken, s.stubs, machineWithoutTools]);
      assert.equal(r.status, 0, show(r));
      assertPlan(r, script, every(script, 'path', (t) => path.join(s.stubs, t)));
    });
  });
}

describe(`${TEST_DEPS}: promtool and swaks on PATH (Debian packages), the rest already in .tools/bin`, () => {
  // The bug this guards against: the script saw promtool on PATH, skipped the download, then ran
  // .tools/bin/promtool, which nothing had created, and CI stopped with exit 127 before any test.
  test('links .tools/bin/promtool and swaks to them, exits 0, and downloads nothing', () => {
    const s = sandbox();
    const onPath = ['promtool', 'swaks'];
    for (const t of toolsOf(TEST_DEPS)) if (!onPath.includes(t)) stub(s.bin, t);
    for (const t of onPath) stub(s.stubs, t);
    const r = run(s, TEST_DEPS, [], [s.stubs, machineWithoutTools]);
    assert.equal(r.status, 0, show(r));
    for (const t of onPath) {
      assert.deepEqual(r.plan.get(t), ['path', path.join(s.stubs, t)]);
      assert.equal(fs.readlinkSync(path.join(s.bin, t)), path.join(s.stubs, t));
      const v = spawnSync(path.join(s.bin, t), ['--version'], { encoding: 'utf8' });
      assert.equal(v.status, 0, v.stderr);
    }
    assert.deepEqual(r.installCommands, []);
  });
});

for (const script of [TEST_DEPS, CONTAINER]) {
  describe(`${script} with no tool anywhere`, () => {
    test('--plan installs each from its package, without running apt or creating anything', () => {
      const s = sandbox();
      const r = run(s, script, ['--plan'], [machineWithoutTools]);
      assert.equal(r.status, 0, show(r));
      assertPlan(r, script, every(script, 'install', (t) => INSTALLS[script][t]));
      assert.ok(!fs.existsSync(path.join(s.dir, '.tools')), '--plan created .tools');
      assert.deepEqual(r.installCommands, []);
    });
  });
}

describe('stale .tools/bin entries', () => {
  test('a dangling link, a wrapper whose unpacked program is gone, and a broken copy are resolved again', () => {
    const s = sandbox();
    fs.mkdirSync(s.bin, { recursive: true });
    fs.symlinkSync('../root/usr/bin/promtool', path.join(s.bin, 'promtool'));
    writeExecutable(path.join(s.bin, 'smtp-source'), `#!/bin/sh\nexec "${s.dir}/.tools/root/usr/sbin/smtp-source" "$@"\n`);
    brokenStub(s.bin, 'haproxy');
    stub(s.stubs, 'haproxy');
    // .tools/bin on PATH as well: its stale entries must not pass for copies on PATH either.
    const r = run(s, TEST_DEPS, ['--plan'], [s.bin, s.stubs, machineWithoutTools]);
    assert.equal(r.status, 0, show(r));
    assertPlan(r, TEST_DEPS, {
      promtool: ['install', INSTALLS[TEST_DEPS].promtool],
      'smtp-source': ['install', INSTALLS[TEST_DEPS]['smtp-source']],
      haproxy: ['path', path.join(s.stubs, 'haproxy')],
    });
  });
});

describe('an installed package whose program is not on PATH', () => {
  // runc lives in /usr/sbin, which a non-root PATH lacks: without this step every run would apt-get install it.
  test('is linked from the package, not installed again', () => {
    const sbin = path.join(tempDir('spamtrapd-install-sbin-'), 'usr', 'sbin');
    const runc = stub(sbin, 'runc');
    const s = sandbox({ installedPackages: { runc: ['/usr/share/doc/runc', sbin, runc] } });
    const r = run(s, CONTAINER, ['--plan', 'runc'], [machineWithoutTools]);
    assert.equal(r.status, 0, show(r));
    assert.deepEqual([...r.plan.entries()], [['runc', ['installed', runc]]]);
  });
});

describe('a tool that cannot be installed', () => {
  test('exit status is not 0 and the message names the tool and its package', () => {
    const s = sandbox();
    for (const t of toolsOf(TEST_DEPS)) if (t !== 'promtool') stub(s.bin, t);
    const r = run(s, TEST_DEPS, [], [machineWithoutTools]);
    assert.notEqual(r.status, 0, show(r));
    assert.match(r.stderr, /promtool/, show(r));
    assert.match(r.stderr, /prometheus/, show(r));
    assert.doesNotMatch(r.stdout, /^ready/m, show(r));
    assert.ok(!fs.existsSync(path.join(s.bin, 'promtool')));
  });
});

for (const script of [TEST_DEPS, CONTAINER]) {
  describe(`${script} with everything installed in this checkout's .tools/bin`, () => {
    // .ci/run installs before npm test; the entries are linked, not copied, so the unpacked trees stay where
    // they are (the Postfix wrappers find them from their own real location).
    test('keeps every tool, installs nothing, and is fast', (t) => {
      const missing = toolsOf(script).filter((tool) => !fs.existsSync(path.join(ROOT, '.tools', 'bin', tool)));
      if (missing.length > 0) {
        const msg = `${missing.join(', ')} not in ${ROOT}/.tools/bin: run bash scripts/${script} first`;
        if (process.env.CI) assert.fail(`.ci/run must run scripts/${script} before npm test: ${msg}`);
        t.skip(msg);
        return;
      }
      const s = sandbox();
      fs.mkdirSync(s.bin, { recursive: true });
      for (const tool of toolsOf(script)) fs.symlinkSync(path.join(ROOT, '.tools', 'bin', tool), path.join(s.bin, tool));
      const r = run(s, script, [], [machineWithoutTools]);
      assert.equal(r.status, 0, show(r));
      for (const tool of toolsOf(script)) assert.equal(r.plan.get(tool)?.[0], 'keep', `${tool}:\n${show(r)}`);
      assert.deepEqual(r.installCommands, []);
      assert.ok(r.ms < FAST_MS, `took ${r.ms} ms`);
    });
  });
}

describe('service starts while apt-get runs (scripts/lib/tools.sh)', () => {
  /** Runs BODY in bash with the library sourced and its policy-rc.d path moved into a temp directory. */
  function withLibrary(body: string): { status: number | null; out: string; policy: string } {
    const s = sandbox();
    const policy = path.join(s.dir, 'policy-rc.d');
    const r = spawnSync('bash', ['-c', `set -euo pipefail\nsource scripts/lib/tools.sh\nPOLICY_RC='${policy}'\n${body}`], {
      cwd: s.dir,
      encoding: 'utf8',
      timeout: 30_000,
    });
    return { status: r.status, out: `${r.stdout}${r.stderr}`, policy };
  }
  const policyAnswer = (file: string) => spawnSync(file, ['haproxy', 'start']).status;

  test('none before: starts are denied during the install, and the file is gone afterwards', () => {
    const r = withLibrary('deny_service_starts\n"$POLICY_RC" haproxy start || echo "during: $?"\nallow_service_starts');
    assert.equal(r.status, 0, r.out);
    assert.match(r.out, /during: 101/);
    assert.ok(!fs.existsSync(r.policy));
  });

  test('one that allows starts is set aside and put back, also when the script fails half-way', () => {
    for (const failing of [false, true]) {
      const body = `printf '#!/bin/sh\\nexit 0\\n' >"$POLICY_RC"; chmod 755 "$POLICY_RC"
deny_service_starts
"$POLICY_RC" haproxy start || echo "during: $?"
${failing ? 'exit 3' : 'allow_service_starts'}`;
      const r = withLibrary(body);
      assert.equal(r.status, failing ? 3 : 0, r.out);
      assert.match(r.out, /during: 101/);
      assert.equal(fs.readFileSync(r.policy, 'utf8'), '#!/bin/sh\nexit 0\n', 'the original is back');
      assert.equal(policyAnswer(r.policy), 0);
      assert.deepEqual(fs.readdirSync(path.dirname(r.policy)).filter((f) => f.includes('saved')), []);
    }
  });

  test('one that already denies starts is left untouched', () => {
    const r = withLibrary(`printf '#!/bin/sh\\n# the machine s own\\nexit 101\\n' >"$POLICY_RC"; chmod 755 "$POLICY_RC"
before=$(stat -c %i "$POLICY_RC"); deny_service_starts; allow_service_starts; [ "$(stat -c %i "$POLICY_RC")" = "$before" ]`);
    assert.equal(r.status, 0, r.out);
    assert.match(fs.readFileSync(r.policy, 'utf8'), /the machine s own/);
  });

  test('a service that started during the install is stopped; one from before, or a child of a test, is left alone', () => {
    // Copies of sleep under a daemon's name, so /proc/PID/comm says "fakedaemond". The "service" is orphaned the
    // way a daemonized service is; whoever adopts it here stands for init.
    const r = withLibrary(`dir=$(mktemp -d); cp "$(command -v sleep)" "$dir/fakedaemond"
DAEMON_NAMES=(fakedaemond)
# Until the forked shell has exec'd, /proc/PID/comm still says bash.
started() { for _ in $(seq 100); do [ "$(cat "/proc/$1/comm")" = fakedaemond ] && return 0; sleep 0.05; done; return 1; }
orphan() { ( "$dir/fakedaemond" 30 >/dev/null 2>&1 & echo $! >"$dir/pid" ); cat "$dir/pid"; }
old=$(orphan); started "$old"
before=$(pids_of_daemons)
service=$(orphan); started "$service"
"$dir/fakedaemond" 30 & child=$!; started "$child"
SERVICE_PARENT_PID=$(parent_of "$service")
stop_daemons_started_since "$before"
for p in old service child; do if process_alive "\${!p}"; then echo "$p still runs"; fi; done
kill "$old" "$child"; wait 2>/dev/null || true; rm -rf "$dir"`);
    assert.equal(r.status, 0, r.out);
    assert.match(r.out, /fakedaemond \(pid \d+\) started as a service during the install despite policy-rc.d: stopping it/);
    assert.match(r.out, /was running before this install; not ours to stop/);
    assert.match(r.out, /started meanwhile as a child of pid \d+, not as a service; not ours to stop/);
    assert.doesNotMatch(r.out, /service still runs/);
    assert.match(r.out, /old still runs/);
    assert.match(r.out, /child still runs/);
  });
});
