import { Resolver } from 'node:dns/promises';

/** A PTR answer is controlled by whoever owns the client's address: keep only what looks like a host name. */
const HOSTNAME = /^(?=.{1,253}$)([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)(\.[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)*$/i;

export type ReverseLookup = (ip: string) => Promise<string | null>;

/**
 * Reverse DNS with a hard deadline. Never rejects: a failure, a timeout or an implausible name is `null`,
 * which the Received header writes as `unknown`. `timeoutMs` 0 turns lookups off.
 */
export function createReverseLookup(timeoutMs: number, resolver?: Pick<Resolver, 'reverse'>): ReverseLookup {
  if (timeoutMs <= 0) return async () => null;
  const r = resolver ?? new Resolver({ timeout: timeoutMs, tries: 1 });
  return (ip) =>
    new Promise<string | null>((resolve) => {
      const timer = setTimeout(() => resolve(null), timeoutMs);
      timer.unref();
      r.reverse(ip).then(
        (names) => {
          clearTimeout(timer);
          const name = (names[0] ?? '').replace(/\.$/, '').toLowerCase();
          resolve(HOSTNAME.test(name) ? name : null);
        },
        () => {
          clearTimeout(timer);
          resolve(null);
        },
      );
    });
}
