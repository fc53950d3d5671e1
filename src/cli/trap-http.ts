/**
 * How the `listing` and `tail` commands reach a running trap: GET on its metrics port (METRICS_HOST:METRICS_PORT,
 * the same settings the trap reads), with a message that says what to check when nothing answers there.
 */
import http from 'node:http';
import type { TrapConfig } from '../config/env';

/** How long a connection to the trap may take before the command gives up. */
const CONNECT_TIMEOUT_MS = 5_000;

export class TrapUnreachable extends Error {}

export interface TrapEndpoint {
  readonly host: string;
  readonly port: number;
}

/** A trap listening on every address (`::`, `0.0.0.0`) is reached on loopback. */
export function trapEndpoint(cfg: Pick<TrapConfig, 'metricsHost' | 'metricsPort'>): TrapEndpoint {
  const host = cfg.metricsHost === '::' || cfg.metricsHost === '0.0.0.0' ? '127.0.0.1' : cfg.metricsHost;
  return { host, port: cfg.metricsPort };
}

export function endpointUrl(e: TrapEndpoint): string {
  return `http://${e.host.includes(':') ? `[${e.host}]` : e.host}:${e.port}`;
}

/**
 * Sends GET `path` and resolves with the response (any status) once its headers are in. `idleMs` bounds the wait
 * for each piece of the answer; past it the response errors. Rejects with TrapUnreachable when nothing answers.
 */
export function getFromTrap(e: TrapEndpoint, path: string, idleMs: number): Promise<{ res: http.IncomingMessage; req: http.ClientRequest }> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: e.host, port: e.port, path, headers: { Accept: '*/*' } });
    let connected = false;
    const connectTimer = setTimeout(() => req.destroy(new Error(`no connection within ${CONNECT_TIMEOUT_MS} ms`)), CONNECT_TIMEOUT_MS);
    req.once('socket', (s) => s.once('connect', () => {
      connected = true;
      clearTimeout(connectTimer);
    }));
    req.setTimeout(idleMs, () => req.destroy(new Error(`the trap sent nothing for ${idleMs / 1000} s`)));
    req.once('response', (res) => {
      clearTimeout(connectTimer);
      resolve({ res, req });
    });
    req.once('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(connectTimer);
      if (!connected) {
        reject(
          new TrapUnreachable(
            `no trap answers on ${endpointUrl(e)} (${err.code ?? err.message}): is it running? ` +
              'METRICS_HOST and METRICS_PORT (environment or .env) must be the ones the trap uses',
          ),
        );
      } else reject(err);
    });
  });
}

/** The whole body as text (for error answers, which are short). */
export async function bodyText(res: http.IncomingMessage): Promise<string> {
  let text = '';
  res.setEncoding('utf8');
  for await (const chunk of res) text += chunk as string;
  return text;
}
