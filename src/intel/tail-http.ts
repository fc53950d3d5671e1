/**
 * GET /tail on the metrics port: the live tail as server-sent events, one `message` event per filed message (its
 * data is formatTailJson's line) and a `dropped` event ({"dropped":N}) when this reader fell behind and lost N.
 * Each reader has its own bounded queue in the TailHub (TAIL_BUFFER events), emptied into its connection once per
 * turn of the event loop, or at once when a burst fills it. While the connection does not take what was written
 * (the socket's buffers are full), nothing more is taken from the queue, so its oldest events are dropped and counted
 * there and the primary never holds more for it than MAX_UNSENT_BYTES. A comment line every keep-alive interval keeps idle
 * proxies from closing the stream. At most INTEL_LIMITS.tail.maxSubscribers readers: one more gets 503.
 */
import { sendText, type HttpRoute } from '../metrics/http-server';
import { INTEL_LIMITS } from './limits';
import { formatDroppedJson, formatTailJson, sseComment, sseEvent, type TailHub } from './tail';

export interface TailRouteOptions {
  /** Between keep-alive comments; default 15 s. */
  readonly keepAliveMs?: number;
  /** Events written per turn of the event loop. */
  readonly batchMax?: number;
}

const TEXT = 'text/plain; charset=utf-8';
/**
 * Bytes written to a reader's connection and not yet taken by its socket, beyond which nothing more is taken from its
 * queue: room for a burst (about 900 events), and a bound on what the primary holds per reader.
 */
const MAX_UNSENT_BYTES = 256 * 1024;

export function tailRoute(hub: TailHub, opts: TailRouteOptions = {}): HttpRoute {
  const keepAliveMs = opts.keepAliveMs ?? 15_000;
  const batchMax = opts.batchMax ?? 256;
  return (req, res, query) => {
    const extra = query.keys().next();
    if (!extra.done) return sendText(res, 400, TEXT, `unknown parameter ${JSON.stringify(extra.value)}: /tail takes none\n`);
    const headers = { 'Content-Type': 'text/event-stream; charset=utf-8', 'Cache-Control': 'no-store', 'X-Accel-Buffering': 'no' };
    if (req.method === 'HEAD') return void res.writeHead(200, headers).end();

    let scheduled = false;
    let waitingForDrain = false;
    const pump = (): void => {
      scheduled = false;
      if (waitingForDrain || res.destroyed) return;
      const { events, dropped } = sub.take(batchMax);
      let out = dropped > 0 ? sseEvent('dropped', formatDroppedJson(dropped)) : '';
      for (const e of events) out += sseEvent('message', formatTailJson(e));
      if (out !== '') res.write(out);
      if (res.writableLength > MAX_UNSENT_BYTES) {
        waitingForDrain = true;
        res.once('drain', () => {
          waitingForDrain = false;
          pump();
        });
        return;
      }
      if (sub.queued > 0) schedule();
    };
    const schedule = (): void => {
      if (scheduled) return;
      scheduled = true;
      setImmediate(pump);
    };
    // A burst bigger than the queue is taken at once while the connection keeps up; only a reader whose socket
    // leaves too much unsent (waitingForDrain) loses events.
    const maybeSub = hub.subscribe(schedule, pump);
    if (maybeSub === null) {
      return sendText(res, 503, TEXT, `${INTEL_LIMITS.tail.maxSubscribers} tail readers are connected already; try again later\n`, { 'Retry-After': '5' });
    }
    const sub = maybeSub;
    res.writeHead(200, headers);
    res.write(sseComment('spamtrapd tail: one event per filed message'));
    const keepAlive = setInterval(() => {
      if (!waitingForDrain) res.write(sseComment('keep-alive'));
    }, keepAliveMs);
    keepAlive.unref();
    res.once('close', () => {
      clearInterval(keepAlive);
      sub.close();
    });
  };
}
