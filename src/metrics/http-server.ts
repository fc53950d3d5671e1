/**
 * The primary's HTTP listener on the metrics port: a small table of routes (/metrics, /healthz, and the listing's and
 * the tail's, which their modules add), GET and HEAD only, bounded per request.
 */
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { HealthInfo, MetricsAggregator } from './primary';

/**
 * A handler for one path of the metrics port; it answers GET (and HEAD: Node leaves the body out by itself).
 * `query` is the URL's query string, parsed.
 */
export type HttpRoute = (req: http.IncomingMessage, res: http.ServerResponse, query: URLSearchParams) => void;

export interface MetricsServerOptions {
  host: string;
  port: number;
  aggregator: MetricsAggregator;
  /** Default: aggregator.health(). 503 when not ok (by default: when workersUp is 0). */
  health?: () => HealthInfo;
  /** More paths beside /metrics and /healthz (the trap's /listing and /tail). */
  routes?: Readonly<Record<string, HttpRoute>>;
}

export interface MetricsServer {
  address(): AddressInfo;
  close(): Promise<void>;
}

/** A whole response: status, type and body, with the headers every answer of this port carries. */
export function sendText(res: http.ServerResponse, status: number, contentType: string, body: string, extra: http.OutgoingHttpHeaders = {}): void {
  res.writeHead(status, { 'Content-Type': contentType, 'Content-Length': Buffer.byteLength(body), 'Cache-Control': 'no-store', ...extra });
  res.end(body);
}

function healthRoute(health: () => HealthInfo): HttpRoute {
  return (_req, res) => {
    let h: HealthInfo;
    try {
      h = health();
    } catch (err) {
      h = { workersUp: 0, ok: false, reasons: [`health check failed: ${String(err)}`] };
    }
    const ok = h.ok ?? h.workersUp > 0;
    let body = `${ok ? 'ok' : 'unavailable'}\nworkers_up ${h.workersUp}\n`;
    if (h.workersExpected !== undefined) body += `workers_expected ${h.workersExpected}\n`;
    for (const r of h.reasons ?? []) body += `${r}\n`;
    sendText(res, ok ? 200 : 503, 'text/plain; charset=utf-8', body);
  };
}

function metricsRoute(aggregator: MetricsAggregator): HttpRoute {
  return (_req, res) => {
    aggregator.metrics().then(
      ({ contentType, body }) => sendText(res, 200, contentType, body),
      (err: unknown) => sendText(res, 500, 'text/plain; charset=utf-8', `metrics unavailable: ${String(err)}\n`),
    );
  };
}

/** GET /metrics, GET /healthz and `routes` on host:port (HEAD too); other paths 404, other methods 405. */
export function startMetricsServer(opts: MetricsServerOptions): Promise<MetricsServer> {
  const routes = new Map<string, HttpRoute>([
    ['/metrics', metricsRoute(opts.aggregator)],
    ['/healthz', healthRoute(opts.health ?? (() => opts.aggregator.health()))],
    ...Object.entries(opts.routes ?? {}),
  ]);
  const server = http.createServer((req, res) => {
    const url = req.url ?? '/';
    const q = url.indexOf('?');
    const route = routes.get(q < 0 ? url : url.slice(0, q));
    if (!route) {
      sendText(res, 404, 'text/plain; charset=utf-8', 'not found\n');
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      sendText(res, 405, 'text/plain; charset=utf-8', 'method not allowed\n', { Allow: 'GET, HEAD' });
      return;
    }
    route(req, res, new URLSearchParams(q < 0 ? '' : url.slice(q + 1)));
  });
  // Scrapers hold keep-alive connections; bound what a stuck client can hold open. (Both bound the request only: a
  // long answer such as the tail stream is not cut by them.)
  server.requestTimeout = 10_000;
  server.headersTimeout = 5_000;
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host: opts.host, port: opts.port }, () => {
      server.off('error', reject);
      resolve({
        address: () => server.address() as AddressInfo,
        close: () =>
          new Promise<void>((done) => {
            server.close(() => done());
            server.closeAllConnections();
          }),
      });
    });
  });
}
