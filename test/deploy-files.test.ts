/**
 * The deployment files are checked offline: the systemd unit with systemd-analyze, every Kubernetes object
 * against the Kubernetes schemas (kubernetes-models), the HAProxy example with haproxy -c, and the wiring between
 * them and the trap (probes on the metrics port's /healthz, port 25 declared and bindable, spool and config mounted
 * where the trap looks, every HAProxy server sending PROXY v2 with health checks the trap can tell apart).
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseAllDocuments } from 'yaml';
import { loadConfigDir } from '../src/config/config-dir';
import { NODE_FLAGS } from '../src/primary/node-flags';
import { findHaproxy } from './helpers/haproxy';
import { repoRoot } from './helpers/paths';

const ROOT = repoRoot();
const UNIT = path.join(ROOT, 'deploy', 'systemd', 'spamtrapd.service');
const K8S = path.join(ROOT, 'deploy', 'kubernetes');
const HAPROXY_CFG = path.join(ROOT, 'deploy', 'haproxy', 'haproxy.cfg');

// kubernetes-models is ESM-only and this suite is CommonJS: TypeScript would turn import() into require().
const esmImport = new Function('specifier', 'return import(specifier)') as <T>(specifier: string) => Promise<T>;

type Obj = { apiVersion: string; kind: string; metadata: { name: string; labels?: Record<string, string>; annotations?: Record<string, string> }; [k: string]: any };

function unitDirectives(text: string): Map<string, string[]> {
  const out = new Map<string, string[]>();
  let section = '';
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (!line || line.startsWith('#') || line.startsWith(';')) continue;
    const s = /^\[(.+)\]$/.exec(line);
    if (s) {
      section = s[1];
      continue;
    }
    const eq = line.indexOf('=');
    const key = `${section}.${line.slice(0, eq)}`;
    out.set(key, [...(out.get(key) ?? []), line.slice(eq + 1)]);
  }
  return out;
}

describe('launchers', () => {
  // The primary's V8 flags can only come from its command line (the forks get them from the primary).
  const started = (argv: string[]) => {
    const i = argv.findIndex((a) => /(^|\/)node$/.test(a));
    assert.ok(i >= 0, `no node in ${argv.join(' ')}`);
    const script = argv.findIndex((a) => a.endsWith('dist/workers/cli.js'));
    assert.deepEqual(argv.slice(script + 1), ['start'], argv.join(' '));
    return argv.slice(i + 1, script);
  };

  it('package.json start, the systemd unit and the Dockerfile start the primary with NODE_FLAGS', () => {
    const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { scripts: Record<string, string> };
    assert.deepEqual(started(pkg.scripts.start.split(' ')), [...NODE_FLAGS], 'package.json start');
    const exec = unitDirectives(fs.readFileSync(UNIT, 'utf8')).get('Service.ExecStart') ?? [];
    assert.equal(exec.length, 1);
    assert.deepEqual(started(exec[0].split(' ')), [...NODE_FLAGS], 'systemd ExecStart');
    const cmd = /^CMD (\[.*\])$/m.exec(fs.readFileSync(path.join(ROOT, 'Dockerfile'), 'utf8'));
    assert.ok(cmd, 'Dockerfile CMD');
    assert.deepEqual(started(JSON.parse(cmd[1]) as string[]), [...NODE_FLAGS], 'Dockerfile CMD');
  });
});

describe('systemd unit', () => {
  const text = fs.readFileSync(UNIT, 'utf8');
  const d = unitDirectives(text);
  const one = (k: string) => {
    const v = d.get(k);
    assert.ok(v, `${k} missing`);
    return v[v.length - 1];
  };

  it('runs unprivileged with exactly CAP_NET_BIND_SERVICE and a hardened sandbox', () => {
    assert.equal(one('Service.User'), 'spamtrapd');
    assert.equal(one('Service.AmbientCapabilities'), 'CAP_NET_BIND_SERVICE');
    assert.equal(one('Service.CapabilityBoundingSet'), 'CAP_NET_BIND_SERVICE');
    assert.equal(one('Service.NoNewPrivileges'), 'yes');
    assert.equal(one('Service.ProtectSystem'), 'strict');
    assert.equal(one('Service.ReadWritePaths'), '/var/spool/spamtrapd');
    assert.match(one('Service.Environment'), /\bSPOOL_DIR=\/var\/spool\/spamtrapd\b/);
    assert.equal(one('Service.PrivateTmp'), 'yes');
    assert.equal(one('Service.ProtectHome'), 'yes');
    assert.equal(one('Service.LimitNOFILE'), '65536');
    assert.equal(one('Service.ExecReload'), '/bin/kill -HUP $MAINPID');
    assert.equal(one('Service.KillMode'), 'mixed');
    // The stop timeout must cover the trap's default drain grace (SHUTDOWN_GRACE_MS=10000) with room to spare.
    assert.ok(Number(one('Service.TimeoutStopSec')) >= 20);
    // V8's JIT cannot run with W^X enforced.
    assert.ok(!d.has('Service.MemoryDenyWriteExecute') || one('Service.MemoryDenyWriteExecute') === 'no');
    assert.match(one('Service.ExecStart'), /dist\/workers\/cli\.js start$/);
  });

  // Where scripts/install-container-tools.sh puts it, whether it came from PATH or from apt.
  const systemdAnalyze = path.join(ROOT, '.tools', 'bin', 'systemd-analyze');
  const analyze = spawnSync(systemdAnalyze, ['--version'], { encoding: 'utf8' });
  const why =
    analyze.status === 0
      ? false
      : `${systemdAnalyze} does not run (Debian package systemd; scripts/install-container-tools.sh installs it)`;
  // CI runs scripts/install-container-tools.sh first, which installs systemd: there a missing tool is a failure.
  if (why && process.env.CI) throw new Error(`CI must verify the unit: ${why}`);
  if (why) console.log(`deploy-files: skipped systemd-analyze verify: ${why}`);

  it('passes systemd-analyze verify without a single warning', { skip: why }, () => {
    // verify checks that ExecStart's binary exists: where node is not /usr/bin/node, check a copy naming this node.
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'spamtrapd-unit-'));
    try {
      const copy = path.join(dir, 'spamtrapd.service');
      fs.writeFileSync(copy, fs.existsSync('/usr/bin/node') ? text : text.replace('/usr/bin/node ', `${process.execPath} `));
      const r = spawnSync(systemdAnalyze, ['verify', copy], { encoding: 'utf8', timeout: 30_000 });
      // Unknown keys and bad values are only warnings (exit 0): any output at all is a failure.
      assert.equal(r.status, 0, r.stderr);
      assert.equal((r.stdout + r.stderr).trim(), '');
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('catches a bad directive (proves the verify check above can fail)', { skip: why }, () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'spamtrapd-unit-'));
    try {
      const copy = path.join(dir, 'spamtrapd.service');
      fs.writeFileSync(copy, text.replace('KillMode=mixed', 'KillMode=bogus'));
      const r = spawnSync(systemdAnalyze, ['verify', copy], { encoding: 'utf8', timeout: 30_000 });
      assert.match(r.stdout + r.stderr, /kill mode/i);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

function loadManifests(): Array<{ file: string; obj: Obj }> {
  const out: Array<{ file: string; obj: Obj }> = [];
  for (const file of fs.readdirSync(K8S).filter((f) => /\.ya?ml$/.test(f)).sort()) {
    for (const doc of parseAllDocuments(fs.readFileSync(path.join(K8S, file), 'utf8'))) {
      assert.deepEqual(doc.errors, [], `${file}: YAML errors`);
      const obj = doc.toJS() as Obj | null;
      if (obj) out.push({ file, obj });
    }
  }
  return out;
}

describe('Kubernetes manifests', () => {
  const manifests = loadManifests();
  const byKind = (kind: string) => manifests.filter((m) => m.obj.kind === kind).map((m) => m.obj);

  it('every object is valid against the Kubernetes schemas', async () => {
    const models: Record<string, any> = {
      ...(await esmImport<typeof import('kubernetes-models/v1')>('kubernetes-models/v1')),
      ...(await esmImport<typeof import('kubernetes-models/apps/v1')>('kubernetes-models/apps/v1')),
      ...(await esmImport<typeof import('kubernetes-models/networking.k8s.io/v1')>('kubernetes-models/networking.k8s.io/v1')),
    };
    let validated = 0;
    for (const { file, obj } of manifests) {
      if (obj.apiVersion === 'kustomize.config.k8s.io/v1beta1' || obj.apiVersion === 'monitoring.coreos.com/v1') continue;
      const Model = models[obj.kind];
      assert.ok(Model && Model.apiVersion === obj.apiVersion, `${file}: no schema for ${obj.apiVersion} ${obj.kind}`);
      assert.doesNotThrow(() => new Model(obj).validate(), `${file}: ${obj.kind}/${obj.metadata?.name}`);
      validated++;
    }
    assert.ok(validated >= 6, `validated ${validated} objects`);
    // The validator is not vacuous: a string port is refused.
    const bad = structuredClone(byKind('Deployment')[0]);
    bad.spec.template.spec.containers[0].ports[0].containerPort = '25';
    assert.throws(() => new models.Deployment(bad).validate());
  });

  it('kustomization lists files that exist, and every object file is listed or documented as optional', () => {
    const k = manifests.find((m) => m.obj.kind === 'Kustomization');
    assert.ok(k, 'kustomization.yaml');
    const resources = (k.obj as any).resources as string[];
    for (const r of resources) assert.ok(fs.existsSync(path.join(K8S, r)), `${r} listed but missing`);
    const kustomizationText = fs.readFileSync(path.join(K8S, 'kustomization.yaml'), 'utf8');
    for (const f of new Set(manifests.map((m) => m.file))) {
      if (f === 'kustomization.yaml') continue;
      assert.ok(resources.includes(f) || kustomizationText.includes(f), `${f} is neither a resource nor mentioned`);
    }
  });

  const deploy = () => {
    const d = byKind('Deployment');
    assert.equal(d.length, 1);
    return d[0];
  };
  const container = () => deploy().spec.template.spec.containers.find((c: any) => c.name === 'spamtrapd');
  const env = () => new Map<string, string>(container().env.map((e: any) => [e.name, e.value]));
  const portNumber = (p: number | string) =>
    typeof p === 'number' ? p : container().ports.find((cp: any) => cp.name === p)?.containerPort;

  it('declares container port 25 and the metrics port the trap is told to use', () => {
    const ports = container().ports;
    assert.ok(ports.some((p: any) => p.containerPort === 25 && p.protocol === 'TCP' && p.name === 'smtp'));
    const metrics = ports.find((p: any) => p.name === 'metrics');
    assert.equal(String(metrics.containerPort), env().get('METRICS_PORT'));
    assert.equal(env().get('SMTP_PORT'), '25');
    assert.equal(env().get('METRICS_HOST'), '0.0.0.0');
  });

  it('probes /healthz on the metrics port', () => {
    const c = container();
    for (const probe of ['livenessProbe', 'readinessProbe', 'startupProbe']) {
      assert.equal(c[probe]?.httpGet?.path, '/healthz', probe);
      assert.equal(String(portNumber(c[probe].httpGet.port)), env().get('METRICS_PORT'), `${probe} port`);
    }
  });

  it('lets the non-root USER bind port 25: sysctl, NET_BIND_SERVICE kept, everything else dropped', () => {
    const pod = deploy().spec.template.spec;
    assert.equal(pod.securityContext.runAsNonRoot, true);
    assert.ok(pod.securityContext.runAsUser > 0);
    assert.deepEqual(pod.securityContext.sysctls, [{ name: 'net.ipv4.ip_unprivileged_port_start', value: '25' }]);
    const sc = container().securityContext;
    assert.deepEqual(sc.capabilities, { drop: ['ALL'], add: ['NET_BIND_SERVICE'] });
    assert.equal(sc.allowPrivilegeEscalation, false);
    assert.notEqual(pod.hostNetwork, true, 'the sysctl is not available with hostNetwork');
  });

  it('mounts the PVC at SPOOL_DIR and the ConfigMap at CONFIG_DIR, and the ConfigMap is valid trap config', () => {
    const pod = deploy().spec.template.spec;
    const mount = (vol: any) => container().volumeMounts.find((m: any) => m.name === vol.name)?.mountPath;
    const pvcVol = pod.volumes.find((v: any) => v.persistentVolumeClaim);
    assert.equal(pvcVol.persistentVolumeClaim.claimName, byKind('PersistentVolumeClaim')[0].metadata.name);
    assert.equal(mount(pvcVol), env().get('SPOOL_DIR'));
    const cmVol = pod.volumes.find((v: any) => v.configMap);
    const cm = byKind('ConfigMap').find((c) => c.metadata.name === cmVol.configMap.name);
    assert.ok(cm, 'the mounted ConfigMap exists');
    assert.equal(mount(cmVol), env().get('CONFIG_DIR'));
    assert.deepEqual(Object.keys(cm.data).sort(), ['rcpt_regexp', 'routes']);
    // Parse it as the trap would at start: a problem line or a bad route would surface here, not in production.
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'spamtrapd-cm-'));
    try {
      for (const [name, text] of Object.entries(cm.data as Record<string, string>)) fs.writeFileSync(path.join(dir, name), text);
      const loaded = loadConfigDir(dir);
      assert.deepEqual(loaded.problems, []);
      assert.ok(loaded.rules.length >= 1);
      assert.ok(loaded.routes.length >= 1);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('exposes SMTP on 25 and metrics only inside the cluster, with Prometheus discovery wired to the metrics port', () => {
    const services = byKind('Service');
    const podLabels = deploy().spec.template.metadata.labels;
    const selects = (s: Obj) => Object.entries(s.spec.selector).every(([k, v]) => podLabels[k] === v);
    const smtp = services.find((s) => s.spec.ports.some((p: any) => p.port === 25));
    assert.ok(smtp && selects(smtp), 'a Service for port 25 selecting the pod');
    assert.equal(portNumber(smtp.spec.ports.find((p: any) => p.port === 25).targetPort), 25);
    assert.equal(smtp.spec.externalTrafficPolicy, 'Local', 'keeps client source addresses');
    const metrics = services.find((s) => s.spec.ports.some((p: any) => p.name === 'metrics'));
    assert.ok(metrics && selects(metrics));
    assert.equal(metrics.spec.type ?? 'ClusterIP', 'ClusterIP');
    assert.ok(!smtp.spec.ports.some((p: any) => p.name === 'metrics'), 'metrics not on the public Service');

    const ann = deploy().spec.template.metadata.annotations;
    assert.equal(ann['prometheus.io/scrape'], 'true');
    assert.equal(ann['prometheus.io/port'], env().get('METRICS_PORT'));
    assert.equal(ann['prometheus.io/path'], '/metrics');
    const sm = byKind('ServiceMonitor')[0];
    assert.ok(sm, 'servicemonitor.yaml');
    assert.ok(Object.entries(sm.spec.selector.matchLabels).every(([k, v]) => metrics.metadata.labels?.[k] === v));
    assert.equal(sm.spec.endpoints[0].port, 'metrics');
    assert.equal(sm.spec.endpoints[0].path, '/metrics');
  });
});

describe('HAProxy example', () => {
  const text = fs.readFileSync(HAPROXY_CFG, 'utf8');
  /** Config lines without comments, grouped under the section line that opens them. */
  const sections = new Map<string, string[]>();
  let current = '';
  for (const raw of text.split('\n')) {
    const line = raw.replace(/#.*$/, '').trim();
    if (!line) continue;
    if (!/^\s/.test(raw)) {
      current = line;
      sections.set(current, []);
    } else sections.get(current)?.push(line);
  }
  const backend = [...sections].find(([name]) => name.startsWith('backend '))?.[1] ?? [];

  it('relays TCP with PROXY v2 to every server, with smtpchk health checks that send PROXY v2 LOCAL', () => {
    assert.ok(sections.get('defaults')?.includes('mode tcp'));
    assert.ok(backend.some((l) => /^option smtpchk\b/.test(l)), 'option smtpchk');
    const defaults = backend.find((l) => l.startsWith('default-server ')) ?? '';
    const servers = backend.filter((l) => l.startsWith('server '));
    assert.ok(servers.length >= 1);
    for (const s of servers) {
      const words = new Set(`${defaults} ${s}`.split(/\s+/));
      for (const w of ['send-proxy-v2', 'check', 'check-send-proxy']) assert.ok(words.has(w), `${s}: ${w}`);
      assert.ok(!words.has('send-proxy'), `${s}: v1 health checks would count as clients`);
    }
  });

  const haproxy = findHaproxy();
  const why = haproxy ? false : 'haproxy is not installed (Debian package haproxy)';
  if (why && process.env.CI) throw new Error(`CI must check the HAProxy example: ${why}`);
  if (why) console.log(`deploy-files: skipped haproxy -c: ${why}`);

  it('passes haproxy -c', { skip: why }, () => {
    const r = spawnSync(haproxy!, ['-c', '-f', HAPROXY_CFG], { encoding: 'utf8', timeout: 30_000 });
    assert.equal(r.status, 0, r.stdout + r.stderr);
    assert.match(r.stdout + r.stderr, /Configuration file is valid/);
    assert.doesNotMatch(r.stdout + r.stderr, /\[WARNING\]|\[ALERT\]/);
  });

  it('catches a bad keyword (proves the check above can fail)', { skip: why }, () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'spamtrapd-haproxy-'));
    try {
      const copy = path.join(dir, 'haproxy.cfg');
      fs.writeFileSync(copy, text.replace('default-server send-proxy-v2', 'default-server send-proxy-v9'));
      const r = spawnSync(haproxy!, ['-c', '-f', copy], { encoding: 'utf8', timeout: 30_000 });
      assert.notEqual(r.status, 0);
      assert.match(r.stdout + r.stderr, /send-proxy-v9/);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
