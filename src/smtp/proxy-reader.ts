/**
 * Reads the PROXY header off a freshly accepted socket, before any SMTP: within a deadline, holding at most one
 * header's worth of bytes, and giving back whatever the client sent after the header (a client may pipeline its
 * first command in the same segment) for the SMTP parser to read. A socket whose header fails is destroyed without
 * a byte written: nothing an SMTP client could read is owed to a peer that does not speak the protocol agreed.
 */
import type net from 'node:net';
import type { ProxyRejectionReason } from '../metrics/definitions';
import { parseProxyHeader, type ProxyHeader } from './proxy-header';

export type ProxyReadOutcome =
  | { readonly ok: true; readonly header: ProxyHeader }
  | { readonly ok: false; readonly reason: ProxyRejectionReason; readonly detail: string };

/**
 * Calls `done` exactly once: with the header (the socket positioned on the first SMTP byte, its listeners as before),
 * or with the reason it was refused (the socket then destroyed, with a listener that swallows late errors).
 */
export function readProxyHeader(socket: net.Socket, timeoutMs: number, done: (outcome: ProxyReadOutcome) => void): void {
  let received: Buffer = Buffer.alloc(0);
  let finished = false;

  const finish = (outcome: ProxyReadOutcome, rest?: Buffer): void => {
    if (finished) return;
    finished = true;
    clearTimeout(timer);
    socket.removeListener('readable', onReadable);
    socket.removeListener('end', onEnd);
    socket.removeListener('close', onClose);
    socket.removeListener('error', onError);
    if (outcome.ok) {
      if (rest && rest.length > 0) socket.unshift(rest);
    } else {
      // Whoever holds the socket next may not listen for errors; a late ECONNRESET must not crash the acceptor.
      socket.on('error', () => undefined);
      socket.destroy();
    }
    done(outcome);
  };

  const onReadable = (): void => {
    let chunk: Buffer | null;
    while (!finished && (chunk = socket.read() as Buffer | null) !== null) {
      received = received.length === 0 ? chunk : Buffer.concat([received, chunk]);
      const parsed = parseProxyHeader(received);
      if (parsed.status === 'complete') return finish({ ok: true, header: parsed.header }, received.subarray(parsed.header.length));
      if (parsed.status === 'rejected') return finish({ ok: false, reason: parsed.reason, detail: parsed.detail });
    }
  };
  const onEnd = (): void => finish({ ok: false, reason: 'closed', detail: `peer closed after ${received.length} bytes of header` });
  const onClose = (): void => finish({ ok: false, reason: 'closed', detail: `connection closed after ${received.length} bytes of header` });
  const onError = (err: NodeJS.ErrnoException): void =>
    finish({ ok: false, reason: 'closed', detail: `socket error ${err.code ?? 'unknown'} after ${received.length} bytes of header` });

  const timer = setTimeout(
    () => finish({ ok: false, reason: 'timeout', detail: `no complete header within ${timeoutMs} ms (${received.length} bytes received)` }),
    timeoutMs,
  );
  timer.unref();
  socket.on('readable', onReadable);
  socket.on('end', onEnd);
  socket.on('close', onClose);
  socket.on('error', onError);
}
