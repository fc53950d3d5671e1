/**
 * The relay's durable per-job state: one small JSON file per job under SPOOL/.relay-state/QUEUE/JOBID.json, written
 * to a temp name, fsync'd and renamed. It records the attempt count, when the next attempt is due and how far the job
 * got, so back-off and the attempt limit hold across restarts, and the `resolved` phase keeps a job the MTA already
 * took from being sent again when the relay dies before it could finish() the job (docs/forward.md).
 */
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import type { Job } from '../dirqueue';
import { dirNameBatches } from '../dirqueue';
import { RELAY_STATE_DIR } from '../spool-layout';

export type JobPhase = 'deferred' | 'delivering' | 'resolved';

export interface FollowUp {
  rcpts: string[];
  reason: string;
  reply: string;
}

export interface JobState {
  v: 1;
  phase: JobPhase;
  /** Attempts started, the one in progress included. */
  attempts: number;
  /** Epoch ms before which the job is not tried again. */
  nextAttemptAt: number;
  lastReply: string;
  /**
   * Set with phase `resolved`: what the MTA decided, so a restart completes the job the same way without talking to
   * the MTA again. `deadletter` and `retry` are copies still to be enqueued (recipients refused for good, or
   * deferred, while others were accepted) until `followUpsDone`.
   */
  outcome?: {
    delivered: string[];
    deadletter: FollowUp | null;
    retry: FollowUp | null;
    followUpsDone: boolean;
  };
}

/** One JSON file per job; every write is atomic (rename) and durable (file and directory fsync'd). */
export class RelayStateStore {
  readonly root: string;
  private readonly made = new Set<string>();

  constructor(spoolDir: string) {
    this.root = path.join(spoolDir, RELAY_STATE_DIR);
  }

  dir(queue: string): string {
    return path.join(this.root, queue);
  }

  file(queue: string, jobId: string): string {
    return path.join(this.dir(queue), `${jobId}.json`);
  }

  async write(queue: string, jobId: string, state: JobState): Promise<void> {
    const dir = this.dir(queue);
    if (!this.made.has(dir)) {
      await fsp.mkdir(dir, { recursive: true, mode: 0o755 });
      await syncDir(this.root);
      this.made.add(dir);
    }
    const final = this.file(queue, jobId);
    const tmp = `${final}.${process.pid}.tmp`;
    const h = await fsp.open(tmp, 'w', 0o644);
    try {
      await h.writeFile(JSON.stringify(state) + '\n');
      await h.sync();
    } finally {
      await h.close();
    }
    await fsp.rename(tmp, final);
    await syncDir(dir);
  }

  async read(queue: string, jobId: string): Promise<JobState | null> {
    try {
      return parseState(await fsp.readFile(this.file(queue, jobId), 'utf8'));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw e;
    }
  }

  /** Losing this file only loses the attempt count; no fsync, a resurrected file is removed by the next load(). */
  async remove(queue: string, jobId: string): Promise<void> {
    await fsp.unlink(this.file(queue, jobId)).catch((e: NodeJS.ErrnoException) => {
      if (e.code !== 'ENOENT') throw e;
    });
  }

  /**
   * Every state of `queue`, by job id. States of jobs no longer in queue/ (the relay died between finish() and
   * remove(), or someone removed the job) are deleted, and so are temp files of a write that a crash cut short.
   */
  async load(queue: string, queueDir: string): Promise<Map<string, JobState>> {
    const out = new Map<string, JobState>();
    // Streamed: the listing itself costs no memory however many jobs wait (a missing directory is empty).
    for await (const batch of dirNameBatches(this.dir(queue))) for (const name of batch) {
      const p = path.join(this.dir(queue), name);
      if (name.endsWith('.tmp')) {
        await fsp.unlink(p).catch(() => undefined);
        continue;
      }
      if (!name.endsWith('.json')) continue;
      const jobId = name.slice(0, -'.json'.length);
      if (!fs.existsSync(path.join(queueDir, 'queue', jobId))) {
        await fsp.unlink(p).catch(() => undefined);
        continue;
      }
      const st = parseState(await fsp.readFile(p, 'utf8').catch(() => ''));
      if (st) out.set(jobId, st);
    }
    return out;
  }
}

function parseState(text: string): JobState | null {
  try {
    const s = JSON.parse(text) as JobState;
    if (s && s.v === 1 && typeof s.attempts === 'number' && typeof s.phase === 'string') return s;
  } catch {
    // A torn or foreign file: treated as no state, which at worst costs the attempt count.
  }
  return null;
}

async function syncDir(dir: string): Promise<void> {
  const h = await fsp.open(dir, 'r');
  try {
    await h.sync();
  } finally {
    await h.close();
  }
}

/** A split retry carries its attempt count and due time in its metadata; the state file, once written, wins. */
export function stateFromMetadata(job: Job): JobState | null {
  const attempts = Number(job.metadata['forward_attempts']);
  if (!Number.isInteger(attempts) || attempts <= 0) return null;
  const next = Number(job.metadata['forward_next_attempt']);
  return {
    v: 1,
    phase: 'deferred',
    attempts,
    nextAttemptAt: Number.isFinite(next) ? next * 1000 : 0,
    lastReply: job.metadata['forward_last_reply'] ?? '',
  };
}
