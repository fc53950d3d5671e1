/**
 * `spamtrapd queue reinject`: dead letters back into the forward queue they came from, for another round of tries.
 */
import * as path from 'node:path';
import { DirQueueReader, DirQueueWriter, sanitizeMetadata, type DirQueueFs } from '../dirqueue';
import type { Logger } from '../log';
import { DEADLETTER_QUEUE } from '../spool-layout';
import { destinationOfQueue } from './targets';

export interface ReinjectOptions {
  /** Only dead letters whose deadletter_queue is this forward queue. */
  queue?: string;
  /** Only this dead-letter job. */
  jobId?: string;
  log?: Logger;
  /** File-system calls of the writers that commit the copies; tests fail them. */
  fs?: DirQueueFs;
}

/**
 * Moves dead letters back into the forward queue they came from (deadletter_queue), with their original metadata and
 * a fresh attempt count; a running relay picks them up on its next poll. Each dead letter is taken with the
 * consumers' lock protocol and finished only after its copy is committed (fsync'd), so a crash in between leaves a
 * duplicate, never a loss. Dead letters without a usable deadletter_queue are left where they are. Returns the new
 * job ids.
 */
export async function reinjectDeadLetters(spoolDir: string, opts: ReinjectOptions = {}): Promise<string[]> {
  const spool = path.resolve(spoolDir);
  const dir = path.join(spool, DEADLETTER_QUEUE);
  const wanted = new Set<string>();
  await new DirQueueReader(dir).visitAll((job) => {
    const q = job.metadata['deadletter_queue'] ?? '';
    if (!destinationOfQueue(q)) {
      opts.log?.warn('reinject_skipped', { id: job.jobId, reason: `deadletter_queue ${JSON.stringify(q)} is not a forward queue` });
      return;
    }
    if ((opts.queue === undefined || opts.queue === q) && (opts.jobId === undefined || opts.jobId === job.jobId)) wanted.add(job.jobId);
  });
  const reader = new DirQueueReader(dir, { warn: (msg) => opts.log?.warn('dirqueue', { queue: DEADLETTER_QUEUE, msg }), eligible: (id) => wanted.has(id) });
  const writers = new Map<string, DirQueueWriter>();
  const out: string[] = [];
  for (let job = await reader.pickup(); job; job = await reader.pickup()) {
    wanted.delete(job.jobId);
    const q = job.metadata['deadletter_queue']!;
    let w = writers.get(q);
    if (!w) writers.set(q, (w = new DirQueueWriter(path.join(spool, q), { fsync: true, fs: opts.fs })));
    const meta: Record<string, string> = {};
    for (const [k, v] of Object.entries(job.metadata)) if (!k.startsWith('deadletter_') && !k.startsWith('forward_')) meta[k] = v;
    try {
      const c = await w.enqueueStream(job.openStream(), sanitizeMetadata(meta));
      out.push(c.jobId);
      opts.log?.info('reinjected', { id: job.jobId, queue: q, new_id: c.jobId, rcpts: meta['rcpt_to'] });
    } catch (err) {
      await job.returnToQueue();
      throw err;
    }
    await job.finish();
  }
  return out;
}
