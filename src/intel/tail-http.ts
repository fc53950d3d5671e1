/**
 * GET /tail on the metrics port: the live tail as server-sent events, one `message` event per filed message (its
 * data is formatTailJson's line) and a `dropped` event ({"dropped":N}) when this reader fell behind and lost N.
 * Each reader has its own bounded queue in the TailHub (TAIL_BUFFER events): while its connection does not take what
 * was written (the socket's buffers are full), nothing more is taken from the queue, so its oldest events are dropped
 * and counted there and the primary never holds more for it. A comment line every keep-alive interval keeps idle
 * proxies from closing the stream. At most INTEL_LIMITS.tail.maxSubscribers readers: one more gets 503.
 */
import { sendText, type HttpRoute } from '../metrics/primary';
import { INTEL_LIMITS } from './limits';
import { formatDroppedJson, formatTailJson, sseComment, sseEvent, type TailHub } from './tail';

export interface TailRouteOptions {
  /** Between keep-alive comments; default 15 s. */
  readonly keepAliveMs?: number;
  /** Events written per turn of the event loop. */
  readonly batchMax?: number;
}

const TEXT = 'text/plain; charset=utf-8';

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
      if (out !== '' && !res.write(out)) {
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
    const maybeSub = hub.subscribe(schedule);
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
