import type { TrapObserver } from '../smtp/session';
import type { WorkerMetricsHandle } from './worker';

/** Maps what an SMTP session reports onto the worker's series (and the primary's queue gauges). */
export function createObserver(handle: WorkerMetricsHandle): TrapObserver {
  const m = handle.metrics;
  return {
    connectionSeen: () => m.connectionsTotal.inc(),
    proxyLocal: () => m.proxyLocal.inc(),
    proxyRejected: (reason) => m.proxyRejections.inc({ reason }),
    connectionOpened: () => m.connectionsActive.inc(),
    connectionClosed(seconds) {
      m.connectionsActive.dec();
      m.sessionSeconds.observe(seconds);
    },
    earlyTalker: () => m.earlyTalkers.inc(),
    tlsSession: () => m.tlsSessions.inc(),
    recipient: (code) => m.recipients.inc({ code: String(code) }),
    rejection: (reason) => m.rejections.inc({ reason }),
    accepted(queue, bytes, writeSeconds) {
      m.messagesAccepted.inc({ queue });
      m.messageBytes.inc({ queue }, bytes);
      m.spoolWriteSeconds.observe(writeSeconds);
      handle.reportEnqueue(queue, Date.now() / 1000);
    },
  };
}
