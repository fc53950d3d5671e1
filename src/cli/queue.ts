/**
 * `spamtrapd queue ...`: look inside the spool's queues without Perl. Reads through the same reader the tests
 * prove against IPC::DirQueue's format; `pickup` takes a job with the consumers' lock protocol, so it is safe
 * to run beside live Perl consumers.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { parseArgs } from 'node:util';
import type { TrapConfig } from '../config/env';
import { DirQueueReader, findQueueDirs, type Job } from '../dirqueue';
import { reinjectDeadLetters } from '../forward';
import { DEADLETTER_QUEUE, FORWARD_QUEUE_PREFIX, QUEUE_NAME } from '../spool-layout';

const USAGE = `usage: spamtrapd queue <command> [options]

  stats [QUEUE ...]        jobs, bytes and oldest job age per queue (all queues when none named)
  list QUEUE               one line per job, oldest first (--limit N)
  show [QUEUE] JOB_ID      a job's control fields and metadata (--data prints the message too)
  pickup QUEUE             take the next job like a consumer: print it, then remove it (--keep returns it)
  reinject [FORWARD_QUEUE] [JOB_ID]
                           move dead letters back into their forward queue for the relay to retry
                           (all of them, or those of one forward queue, or one job)

options: --json  machine-readable output (one JSON document)
         --spool DIR  the spool (default: SPOOL_DIR)`;

type Out = { write(s: string): unknown };

export interface QueueCliIo {
  stdout: Out;
  stderr: Out & { isTTY?: boolean };
  /** `stats` shows progress on a TTY every this many jobs (default 10000); tests lower it. */
  progressEvery?: number;
}

function jobSummary(job: Job) {
  // A control file with a garbled QSTT must not make the whole listing throw (Invalid time value).
  const submitted = new Date(job.submittedSecs * 1000 + Math.floor((job.submittedUsecs || 0) / 1000));
  return {
    id: job.jobId,
    size: job.size,
    submitted: Number.isNaN(submitted.getTime()) ? null : submitted.toISOString(),
    hostname: job.hostname,
    data_path: job.dataPath,
    active: job.activeHost ? { host: job.activeHost, pid: job.activePid } : null,
    metadata: job.metadata,
  };
}

function queueDir(spool: string, queue: string): string {
  if (!QUEUE_NAME.test(queue)) throw new UsageError(`not a queue name: ${JSON.stringify(queue)}`);
  return path.join(spool, queue);
}

/**
 * A queue that must already exist: the reader treats a missing queue as empty, and pickup would even create it,
 * so a mistyped name would otherwise print "empty" (and leave a stray directory) instead of an error.
 */
async function existingQueueDir(spool: string, queue: string): Promise<string> {
  const dir = queueDir(spool, queue);
  await fs.access(dir);
  return dir;
}

class UsageError extends Error {}

async function queueNames(spool: string): Promise<string[]> {
  return (await findQueueDirs(spool)).map((d) => path.relative(spool, d)).sort();
}

export async function runQueueCommand(
  argv: string[],
  cfg: Pick<TrapConfig, 'spoolDir'>,
  io: QueueCliIo = { stdout: process.stdout, stderr: process.stderr },
): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        json: { type: 'boolean', default: false },
        data: { type: 'boolean', default: false },
        keep: { type: 'boolean', default: false },
        limit: { type: 'string' },
        spool: { type: 'string' },
        help: { type: 'boolean', short: 'h', default: false },
      },
    });
  } catch (err) {
    io.stderr.write(`spamtrapd queue: ${(err as Error).message}\n${USAGE}\n`);
    return 2;
  }
  const { values, positionals } = parsed;
  const [command, ...args] = positionals;
  if (values.help) {
    io.stdout.write(USAGE + '\n');
    return 0;
  }
  if (!command) {
    io.stderr.write(`spamtrapd queue: no command\n${USAGE}\n`);
    return 2;
  }
  const spool = path.resolve(values.spool ?? cfg.spoolDir);
  const json = values.json;
  const print = (human: string, doc: unknown) => io.stdout.write(json ? JSON.stringify(doc, null, 2) + '\n' : human);
  try {
    switch (command) {
      case 'stats':
        return await stats(spool, args, io, print);
      case 'list': {
        if (args.length !== 1) throw new UsageError('list takes one QUEUE');
        const limit = values.limit === undefined ? Infinity : /^\d+$/.test(values.limit) ? Number(values.limit) : NaN;
        if (Number.isNaN(limit)) throw new UsageError('--limit takes a whole number');
        const jobs: ReturnType<typeof jobSummary>[] = [];
        const reader = new DirQueueReader(await existingQueueDir(spool, args[0]), { warn: () => undefined });
        // With --limit the walk stops at the N oldest and keeps only about N names in memory.
        await reader.visitAll((job) => void jobs.push(jobSummary(job)), { limit });
        print(
          jobs
            .map((j) => `${j.id}  ${j.size}  ${j.submitted}  from=${j.metadata.mail_from ?? '-'}  to=${j.metadata.rcpt_to ?? '-'}${j.active ? '  (active)' : ''}\n`)
            .join(''),
          { queue: args[0], jobs },
        );
        return 0;
      }
      case 'show': {
        if (args.length < 1 || args.length > 2) throw new UsageError('show takes [QUEUE] JOB_ID');
        const id = args[args.length - 1];
        const queues = args.length === 2 ? [args[0]] : await queueNames(spool);
        for (const q of queues) {
          const dir = args.length === 2 ? await existingQueueDir(spool, q) : queueDir(spool, q);
          const job = await new DirQueueReader(dir, { warn: () => undefined }).readJob(id);
          if (job) {
            const data = values.data ? (await job.readData()).toString('latin1') : undefined;
            const s = jobSummary(job);
            print(
              `queue: ${q}\nid: ${s.id}\nsize: ${s.size}\nsubmitted: ${s.submitted}\nhost: ${s.hostname}\ndata: ${s.data_path}\n` +
                Object.entries(s.metadata)
                  .map(([k, v]) => `${k}: ${v}\n`)
                  .join('') +
                (data !== undefined ? `\n${data}` : ''),
              { queue: q, ...s, ...(data !== undefined ? { message: data } : {}) },
            );
            return 0;
          }
        }
        io.stderr.write(`spamtrapd queue: no job ${id} in ${queues.join(', ') || 'any queue'} under ${spool}\n`);
        return 1;
      }
      case 'reinject': {
        if (args.length > 2) throw new UsageError('reinject takes [FORWARD_QUEUE] [JOB_ID]');
        if (args[0] !== undefined && !args[0].startsWith(FORWARD_QUEUE_PREFIX)) throw new UsageError(`not a forward queue: ${JSON.stringify(args[0])}`);
        await fs.access(path.join(spool, DEADLETTER_QUEUE));
        const ids = await reinjectDeadLetters(spool, { queue: args[0], jobId: args[1] });
        print(`re-injected ${ids.length} dead letter(s)\n${ids.map((id) => `${id}\n`).join('')}`, { reinjected: ids });
        return 0;
      }
      case 'pickup': {
        if (args.length !== 1) throw new UsageError('pickup takes one QUEUE');
        const reader = new DirQueueReader(await existingQueueDir(spool, args[0]));
        const job = await reader.pickup();
        if (!job) {
          print('queue is empty\n', { queue: args[0], job: null });
          return 0;
        }
        let message: string;
        try {
          message = (await job.readData()).toString('latin1');
        } catch (err) {
          // Give the job back at once rather than leave it locked for other consumers for ACTIVE_FILE_LIFETIME_S.
          await job.returnToQueue();
          throw err;
        }
        if (values.keep) await job.returnToQueue();
        else await job.finish();
        print(`${job.jobId}\n${message}`, { queue: args[0], job: jobSummary(job), message, removed: !values.keep });
        return 0;
      }
      default:
        throw new UsageError(`unknown queue command ${JSON.stringify(command)}`);
    }
  } catch (err) {
    if (err instanceof UsageError) {
      io.stderr.write(`spamtrapd queue: ${err.message}\n${USAGE}\n`);
      return 2;
    }
    const e = err as NodeJS.ErrnoException;
    io.stderr.write(`spamtrapd queue: ${e.code === 'ENOENT' ? `no such queue or spool: ${e.path}` : e.message}\n`);
    return 1;
  }
}

async function stats(
  spool: string,
  names: string[],
  io: QueueCliIo,
  print: (human: string, doc: unknown) => void,
): Promise<number> {
  const queues = names.length ? names : await queueNames(spool);
  const every = io.progressEvery ?? 10000;
  const rows = [];
  for (const q of queues) {
    const dir = await existingQueueDir(spool, q);
    // Every control file is read for QDSB; on a queue of millions that takes a while, so show progress on a TTY.
    let jobs = 0;
    let bytes = 0;
    let oldest: number | null = null;
    const now = Date.now() / 1000;
    // Totals need no order: one pass over queue/ in directory order.
    await new DirQueueReader(dir, { warn: () => undefined }).visitAll(
      (job) => {
        jobs++;
        bytes += job.size;
        const t = job.submittedSecs + job.submittedUsecs / 1e6;
        if (oldest === null || t < oldest) oldest = t;
        if (io.stderr.isTTY && jobs % every === 0) io.stderr.write(`\r${q}: ${jobs} jobs read...`);
      },
      { ordered: false },
    );
    if (io.stderr.isTTY && jobs >= every) io.stderr.write('\r\x1b[K');
    rows.push({ queue: q, jobs, bytes, oldest_seconds: oldest === null ? null : Math.max(0, Math.round(now - oldest)) });
  }
  const width = Math.max(5, ...rows.map((r) => r.queue.length));
  print(
    `${'queue'.padEnd(width)}  ${'jobs'.padStart(9)}  ${'bytes'.padStart(12)}  oldest\n` +
      rows
        .map((r) => `${r.queue.padEnd(width)}  ${String(r.jobs).padStart(9)}  ${String(r.bytes).padStart(12)}  ${r.oldest_seconds === null ? '-' : `${r.oldest_seconds}s`}\n`)
        .join(''),
    { spool, queues: rows },
  );
  return 0;
}
