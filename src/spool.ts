import { queueDir } from './spool-layout';
import { syncBackedFs } from './dirqueue/sync-fs';
import { DirQueueWriter } from './dirqueue/writer';
import { SpoolWriterThread, type JobStarter } from './dirqueue/writer-thread';

/**
 * The spool directory: one IPC::DirQueue queue per destination, and who writes its jobs.
 *  - inline (SPOOL_FSYNC=false, the default): synchronous system calls on the acceptor's event loop: no second V8
 *    isolate per acceptor (~12 MB each) and no hand-over of each job to another thread and back; a slow disk stalls
 *    the acceptor's sessions meanwhile. CPU per message is about even with thread (bench/RESULTS.md).
 *  - thread: the spool writer thread runs the same calls off the event loop, so a slow disk stalls only the commits.
 *  - fsync (SPOOL_FSYNC=true): the in-process writer over fs/promises, whose calls run in libuv's thread pool: the
 *    disk's flush latency dominates, and the pool overlaps the flushes of concurrent messages where one thread
 *    would serialise them.
 */
export class Spool {
  private readonly starters = new Map<string, JobStarter>();
  private readonly thread: SpoolWriterThread | null;

  constructor(
    readonly dir: string,
    private readonly opts: { fsync: boolean; writer?: 'inline' | 'thread'; hostname?: string; onWriterDeath?: (err: Error) => void },
  ) {
    this.thread = !opts.fsync && opts.writer === 'thread' ? new SpoolWriterThread(opts.onWriterDeath) : null;
  }

  queueDir(queue: string): string {
    return queueDir(this.dir, queue);
  }

  writer(queue: string): JobStarter {
    let w = this.starters.get(queue);
    if (!w) {
      const dir = this.queueDir(queue);
      if (this.thread) w = this.thread.queue(dir, { hostname: this.opts.hostname });
      else if (this.opts.fsync) w = new DirQueueWriter(dir, { fsync: true, hostname: this.opts.hostname });
      else w = new DirQueueWriter(dir, { fs: syncBackedFs, hostname: this.opts.hostname });
      this.starters.set(queue, w);
    }
    return w;
  }

  async close(): Promise<void> {
    await this.thread?.close();
  }
}
