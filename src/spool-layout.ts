/**
 * What lives under SPOOL_DIR and how it is named: one IPC::DirQueue directory per queue, plus the trap's own
 * dot-named entries, which findQueueDirs() and consumers never take for queues. Every module that names something in
 * the spool takes the name from here.
 */
import path from 'node:path';

/** Queue names become directory names under the spool: nothing that could climb out of it. */
export const QUEUE_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;
/** A queue is a directory; leave room for the spool's own suffixes. */
export const MAX_QUEUE_NAME = 100;
/** Messages the relay could not forward, with the reason recorded. */
export const DEADLETTER_QUEUE = 'deadletter';
/** Forward destinations' queues: `forward-HOST-PORT`. */
export const FORWARD_QUEUE_PREFIX = 'forward-';
/** The relay's per-job delivery state. */
export const RELAY_STATE_DIR = '.relay-state';
/** The generated STARTTLS key and certificate. */
export const TLS_DIR = '.tls';
/** The listing of client addresses (docs/listing.md): its persisted state, and the rbldnsd files by default. */
export const LISTING_DIR = '.listing';
/** The persisted listing: not a setting, a listing belongs to the spool whose traps it counted. */
export const LISTING_STATE_FILE = 'listing.jsonl';
/** LISTING_ZONE_FILE when unset: the IPv4 dataset; the IPv6 one goes beside it (src/intel/zone.ts). */
export const LISTING_ZONE_FILE = 'listing.ip4set';

/** Why NAME cannot be a `queue` destination of config/routes, or null when it can. */
export function queueNameProblem(name: string): string | null {
  if (!QUEUE_NAME.test(name)) {
    return `bad queue name ${JSON.stringify(name)}: use letters, digits, '.', '_' and '-', starting with a letter or digit`;
  }
  if (name.length > MAX_QUEUE_NAME) return `queue name longer than ${MAX_QUEUE_NAME} characters`;
  const lower = name.toLowerCase();
  // Case-insensitively, so the names stay distinct on case-insensitive file systems too.
  if (lower === DEADLETTER_QUEUE) return `queue name ${name} is reserved for messages that could not be forwarded`;
  if (lower.startsWith(FORWARD_QUEUE_PREFIX)) return `queue names starting with ${FORWARD_QUEUE_PREFIX} are reserved for forward destinations`;
  return null;
}

/** The spool queue that holds a forward destination's messages: `forward-HOST-PORT`, made file-name safe. */
export function forwardQueueName(host: string, port: number): string {
  return `${FORWARD_QUEUE_PREFIX}${host}-${port}`.replace(/[^A-Za-z0-9._-]/g, '_');
}

/** The directory of `queue` under the spool; throws for a name that is not a queue name. */
export function queueDir(spoolDir: string, queue: string): string {
  if (!QUEUE_NAME.test(queue)) throw new Error(`invalid queue name ${JSON.stringify(queue)}`);
  return path.join(spoolDir, queue);
}
