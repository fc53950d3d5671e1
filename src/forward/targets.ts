/**
 * Forward targets: the MTA behind a `forward-HOST-PORT` queue, and the back-off between attempts. (A route's
 * destination in config/routes names the queue; this is the relay's view of the same thing.)
 */
import { parseForwardUrl } from '../config/routes';
import { FORWARD_QUEUE_PREFIX } from '../spool-layout';

export interface ForwardTarget {
  queue: string;
  host: string;
  port: number;
  /** `smtp://host:port`, IPv6 in brackets. */
  url: string;
}

/**
 * Reverses forwardQueueName(): `forward-HOST-PORT`, where only an IPv6 address had characters (its colons) replaced
 * by `_`, since route hosts are validated names, dotted quads or IPv6. The result is checked by turning it back into
 * the queue name, so a queue this cannot name exactly is refused instead of delivered somewhere else.
 */
export function destinationOfQueue(queue: string): ForwardTarget | null {
  if (!queue.startsWith(FORWARD_QUEUE_PREFIX)) return null;
  const m = /^(.+)-(\d{1,5})$/.exec(queue.slice(FORWARD_QUEUE_PREFIX.length));
  if (!m) return null;
  const rawHost = m[1]!;
  const host = rawHost.includes('_') ? rawHost.replace(/_/g, ':') : rawHost;
  const parsed = parseForwardUrl(`smtp://${host.includes(':') ? `[${host}]` : host}:${m[2]}`);
  if (typeof parsed === 'string' || parsed.kind !== 'forward' || parsed.queue !== queue) return null;
  return { queue, host: parsed.host, port: parsed.port, url: parsed.url };
}

/** Exponential back-off after the n-th failure (n >= 1): base, 2*base, 4*base, ... capped at max. */
export function backoffMs(failures: number, baseMs: number, maxMs: number): number {
  const n = Math.max(1, failures);
  // 2**n overflows to Infinity long before a realistic attempt count; min() keeps it at the cap.
  return Math.min(maxMs, baseMs * 2 ** (n - 1));
}
