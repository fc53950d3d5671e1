/**
 * Where the two-host harness keeps things, all under one temporary root: each trap host's own spool, the one shared
 * queue, the path every namespace sees the spool at, the consumers' output, and the tools it needs. The spool path
 * is under the root, so it is the same in every namespace of a run and different between runs.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { findHaproxy } from '../haproxy';
import { builtRoot, repoRoot } from '../paths';

export interface Layout {
  root: string;
  /** SPOOL_DIR as every trap host and consumer sees it; its `incoming` is the shared queue. */
  spoolDir: string;
  /** The shared queue's real directory, as this (the root) mount namespace sees it. */
  sharedQueue: string;
  configDir: string;
  /** The host's own spool, bind-mounted onto spoolDir in its namespace. */
  hostSpool(host: string): string;
  consumedDir(consumer: string): string;
  /** The consumers exit once this exists and the queue is empty. */
  stopFile: string;
}

export function makeLayout(hosts: readonly string[]): Layout {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'spamtrapd-multihost-'));
  const l: Layout = {
    root,
    spoolDir: path.join(root, 'view', 'spool'),
    sharedQueue: path.join(root, 'shared', 'incoming'),
    configDir: path.join(root, 'config'),
    hostSpool: (host) => path.join(root, 'hosts', host, 'spool'),
    consumedDir: (consumer) => path.join(root, 'consumed', consumer),
    stopFile: path.join(root, 'consumers.stop'),
  };
  // Mount points: spoolDir/incoming for the consumers' view, hostSpool/incoming for each host's.
  fs.mkdirSync(path.join(l.spoolDir, 'incoming'), { recursive: true });
  fs.mkdirSync(l.sharedQueue, { recursive: true });
  fs.mkdirSync(l.configDir, { recursive: true });
  for (const h of hosts) fs.mkdirSync(path.join(l.hostSpool(h), 'incoming'), { recursive: true });
  return l;
}

/** Translates a path as the traps see it (QDFN) into the same file as seen from here. */
export function hereFromView(l: Layout, p: string): string {
  const viewQueue = path.join(l.spoolDir, 'incoming') + path.sep;
  return p.startsWith(viewQueue) ? path.join(l.sharedQueue, p.slice(viewQueue.length)) : p;
}

export const scriptsDir = () => path.join(repoRoot(), 'scripts', 'multihost');
export const cliJs = () => path.join(builtRoot(), 'workers', 'cli.js');

/** .tools/bin/unshare (scripts/install-container-tools.sh) or unshare on PATH, when it runs. */
export function findUnshare(): string | null {
  const onPath = (process.env.PATH ?? '').split(path.delimiter).filter(Boolean);
  const candidates = [path.join(repoRoot(), '.tools', 'bin', 'unshare'), ...onPath.map((d) => path.join(d, 'unshare'))];
  for (const c of candidates) {
    if (fs.existsSync(c) && spawnSync(c, ['--version'], { timeout: 10_000 }).status === 0) return c;
  }
  return null;
}

/**
 * False when the harness can run; otherwise why not. It needs root (namespaces and bind mounts), unshare and
 * haproxy; under CI (env CI set) a missing one is an error, since .ci/run installs both and runs as root.
 */
export function multihostSkipReason(): string | false {
  const missing: string[] = [];
  if (process.getuid?.() !== 0) missing.push('root (namespaces and bind mounts)');
  const unshare = findUnshare();
  if (!unshare) missing.push('unshare (Debian package util-linux; scripts/install-container-tools.sh)');
  else if (missing.length === 0) {
    const probe = spawnSync(unshare, ['--uts', '--mount', '--pid', '--fork', '--mount-proc', 'true'], { encoding: 'utf8', timeout: 10_000 });
    if (probe.status !== 0) missing.push(`UTS, mount and pid namespaces (unshare failed: ${(probe.stderr || probe.error?.message || '').trim()})`);
  }
  if (!findHaproxy()) missing.push('haproxy (Debian package haproxy; scripts/install-test-deps.sh)');
  if (missing.length === 0) return false;
  const why = `needs ${missing.join(', ')}`;
  if (process.env.CI) throw new Error(`CI must run the two-host test: it ${why}`);
  return why;
}
