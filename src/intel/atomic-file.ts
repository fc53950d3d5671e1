/**
 * Replaces a file so that a reader (the trap at its next start, rbldnsd polling its data files) sees either the old
 * complete file or the new complete one, never a part: the content goes to a temporary file in the same directory,
 * is fsynced, renamed over the target, and the directory is fsynced so the rename survives a crash or SIGKILL.
 * Content is streamed in chunks with the event loop handed back between writes, so a million-line file never exists
 * as one string and the primary keeps serving while it is written.
 */
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';

export interface AtomicWriteResult {
  readonly bytes: number;
}

/** Chunks are joined into writes of about this size. */
const WRITE_BYTES = 256 * 1024;

export async function writeFileAtomic(
  target: string,
  chunks: Iterable<string> | AsyncIterable<string>,
  opts: { mode?: number } = {},
): Promise<AtomicWriteResult> {
  const dir = path.dirname(target);
  await fsp.mkdir(dir, { recursive: true });
  await removeStaleTemporaries(dir, path.basename(target));
  const tmp = path.join(dir, `.${path.basename(target)}.${process.pid}.${Date.now()}.tmp`);
  const fh = await fsp.open(tmp, 'wx', opts.mode ?? 0o644);
  let bytes = 0;
  try {
    let pending: string[] = [];
    let pendingLength = 0;
    const flush = async () => {
      if (pendingLength === 0) return;
      const buf = Buffer.from(pending.join(''));
      pending = [];
      pendingLength = 0;
      await fh.writeFile(buf);
      bytes += buf.length;
    };
    for await (const chunk of chunks) {
      pending.push(chunk);
      pendingLength += chunk.length;
      if (pendingLength >= WRITE_BYTES) await flush();
    }
    await flush();
    await fh.sync();
    await fh.close();
  } catch (err) {
    await fh.close().catch(() => undefined);
    await fsp.unlink(tmp).catch(() => undefined);
    throw err;
  }
  try {
    await fsp.rename(tmp, target);
  } catch (err) {
    await fsp.unlink(tmp).catch(() => undefined);
    throw err;
  }
  await syncDir(dir);
  return { bytes };
}

/**
 * A writer killed mid-file (SIGKILL, power loss) leaves its temporary behind; the next write of the same target
 * removes it. One process writes a given target (the primary, under the spool lock), so none of them is in use.
 */
async function removeStaleTemporaries(dir: string, base: string): Promise<void> {
  const names = await fsp.readdir(dir).catch(() => [] as string[]);
  for (const n of names) {
    if (n.startsWith(`.${base}.`) && n.endsWith('.tmp')) await fsp.unlink(path.join(dir, n)).catch(() => undefined);
  }
}

async function syncDir(dir: string): Promise<void> {
  const fd = await fsp.open(dir, fs.constants.O_RDONLY);
  try {
    await fd.sync();
  } finally {
    await fd.close();
  }
}
