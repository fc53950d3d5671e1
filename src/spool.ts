import { queueDir } from './spool-layout';
import { DirQueueWriter, SpoolWriterThread, type JobStarter } from './dirqueue';

/**
 * The spool directory: one IPC::DirQueue queue per destination. Without fsync, jobs are written by the spool
 * writer thread (synchronous calls off the event loop, the cheapest path). With fsync, by the in-process writer,
 * whose calls run in libuv's thread pool: there the disk's flush latency dominates, and the pool overlaps the
 * flushes of concurrent messages where one thread would serialise them.
 */
export class Spool {
  private readonly starters = new Map<string, JobStarter>();
  private readonly thread: SpoolWriterThread | null;

  constructor(
    readonly dir: string,
    private readonly opts: { fsync: boolean; hostname?: string; onWriterDeath?: (err: Error) => void },
  ) {
    this.thread = opts.fsync ? null : new SpoolWriterThread(opts.onWriterDeath);
  }

  queueDir(queue: string): string {
    return queueDir(this.dir, queue);
  }

  writer(queue: string): JobStarter {
    let w = this.starters.get(queue);
    if (!w) {
      const dir = this.queueDir(queue);
      w = this.thread
        ? this.thread.queue(dir, { hostname: this.opts.hostname })
        : new DirQueueWriter(dir, { fsync: true, hostname: this.opts.hostname });
      this.starters.set(queue, w);
    }
    return w;
  }

  async close(): Promise<void> {
    await this.thread?.close();
  }
}
