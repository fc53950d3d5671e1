import path from 'node:path';
import { DirQueueWriter } from './dirqueue';

/** Queue names become directory names under the spool: nothing that could climb out of it. */
export const QUEUE_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;

/** The spool directory: one IPC::DirQueue queue per destination, each writer made on first use and kept. */
export class Spool {
  private readonly writers = new Map<string, DirQueueWriter>();

  constructor(
    readonly dir: string,
    private readonly opts: { fsync: boolean; hostname?: string },
  ) {}

  queueDir(queue: string): string {
    if (!QUEUE_NAME.test(queue)) throw new Error(`invalid queue name ${JSON.stringify(queue)}`);
    return path.join(this.dir, queue);
  }

  writer(queue: string): DirQueueWriter {
    let w = this.writers.get(queue);
    if (!w) {
      w = new DirQueueWriter(this.queueDir(queue), { fsync: this.opts.fsync, hostname: this.opts.hostname });
      this.writers.set(queue, w);
    }
    return w;
  }
}
