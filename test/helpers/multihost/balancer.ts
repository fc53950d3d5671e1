/**
 * The one HAProxy in front of the trap hosts, as deploy/haproxy/haproxy.cfg sets it up (PROXY v2 to every server,
 * SMTP health checks sent with a PROXY v2 LOCAL header, a failed connect retried on another server) but with checks
 * fast enough for a test to watch a host fall: every 200 ms, down after 2 failures, up after 2 successes.
 */
import { haproxyPreamble, startHaproxy, type Haproxy } from '../haproxy';
import { sleep } from '../waiting';

export const BACKEND = 'traps';

export interface BalancedServer {
  name: string;
  address: string;
  port: number;
}

export function startBalancer(servers: readonly BalancedServer[]): Promise<Haproxy> {
  return startHaproxy(
    (ports, dir) => `${haproxyPreamble(dir)}
frontend smtp
  bind 127.0.0.1:${ports.frontend}
  default_backend ${BACKEND}

backend ${BACKEND}
  balance roundrobin
  # A client sent to a host that died since its last check is retried on another server at once.
  option redispatch 1
  retries 3
  option smtpchk HELO haproxy.multihost.test
  # Without it a check must complete within inter (200 ms), which a live host busy with the flood on 2 shared cores
  # can miss twice in a row, leaving HAProxy no server at all. A dead host's refused connect still fails at once.
  timeout check 2s
  # The traps' PROXY_FROM is 127.0.0.1/32: connect from there whatever address the kernel would pick.
  source 127.0.0.1
  default-server send-proxy-v2 check check-send-proxy inter 200ms fall 2 rise 2
${servers.map((s) => `  server ${s.name} ${s.address}:${s.port}`).join('\n')}
`,
  );
}

/** HAProxy's view of one server: `UP`, `DOWN`, or a transition such as `UP 1/2`. */
export async function serverStatus(h: Haproxy, server: string): Promise<string | undefined> {
  return (await h.stats()).find((r) => r.pxname === BACKEND && r.svname === server)?.status;
}

/**
 * Polls the stats socket every `stepMs` until `server` is DOWN; resolves to the time it first read DOWN (Date.now()),
 * or null when `stop()` or the timeout came first.
 */
export function watchForDown(h: Haproxy, server: string, timeoutMs = 20_000, stepMs = 25): { seenAt: Promise<number | null>; stop(): void } {
  let stopped = false;
  const seenAt = (async () => {
    const deadline = Date.now() + timeoutMs;
    while (!stopped && Date.now() < deadline) {
      const status = await serverStatus(h, server).catch(() => undefined);
      if (status === 'DOWN') return Date.now();
      await sleep(stepMs);
    }
    return null;
  })();
  return {
    seenAt,
    stop: () => {
      stopped = true;
    },
  };
}

/** `Server traps/trapa is DOWN, reason: ...` and the like, in order, from HAProxy's log (its stderr copies left out). */
export function haproxyEvents(log: string): string[] {
  return log
    .split('\n')
    .filter((line) => /Server \S+ is (UP|DOWN)|has no server available/.test(line) && !/^\[(WARNING|ALERT)\]/.test(line))
    .map((line) => line.trim());
}
