/**
 * The writer's file-system interface (DirQueueFs) served by synchronous system calls: for the spool writer thread
 * (writer-thread.ts) and for the inline writer on an acceptor's event loop (spool.ts). Each libuv thread-pool round
 * trip of fs/promises costs about five futex calls and two thread wake-ups; a message costs about ten file-system
 * calls, so the round trips, not the calls, dominated the trap's CPU.
 */
import fs from 'node:fs';
import type { DirQueueFs } from './writer';

function settle<T>(fn: () => T): Promise<T> {
  try {
    return Promise.resolve(fn());
  } catch (e) {
    return Promise.reject(e);
  }
}

/** The part of fs/promises' FileHandle the writer uses. */
class SyncFileHandle {
  constructor(readonly fd: number) {}

  write(buf: Buffer, offset = 0, length = buf.length - offset) {
    return settle(() => ({ bytesWritten: fs.writeSync(this.fd, buf, offset, length), buffer: buf }));
  }

  sync() {
    return settle(() => fs.fsyncSync(this.fd));
  }

  close() {
    return settle(() => fs.closeSync(this.fd));
  }
}

export const syncBackedFs = {
  open: (p: string, flags: string, mode?: number) => settle(() => new SyncFileHandle(fs.openSync(p, flags, mode))),
  link: (src: string, dest: string) => settle(() => fs.linkSync(src, dest)),
  unlink: (p: string) => settle(() => fs.unlinkSync(p)),
  mkdir: (p: string, opts: fs.MakeDirectoryOptions & { recursive: true }) => settle(() => fs.mkdirSync(p, opts)),
  lstat: (p: string) => settle(() => fs.lstatSync(p)),
} as unknown as DirQueueFs;
