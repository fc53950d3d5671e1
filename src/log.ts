/**
 * Line-oriented logs in logfmt (`time level event key=value ...`), one line per event, so `grep` and log
 * shippers both work. Values come from spam bots: anything that is not plain printable ASCII is written as a
 * JSON string, so a client can never forge a log line or hide a value.
 */
export type LogLevel = 'error' | 'warn' | 'info' | 'debug';
const RANK: Record<LogLevel, number> = { error: 0, warn: 1, info: 2, debug: 3 };

export type LogFields = Record<string, string | number | boolean | null | undefined>;

export interface Logger {
  /** Writes out lines still held in the batch; call before a deliberate process.exit(). */
  flush(): void;
  error(event: string, fields?: LogFields): void;
  warn(event: string, fields?: LogFields): void;
  info(event: string, fields?: LogFields): void;
  debug(event: string, fields?: LogFields): void;
  enabled(level: LogLevel): boolean;
  child(fields: LogFields): Logger;
}

export function formatValue(v: string | number | boolean | null | undefined): string {
  if (v === null || v === undefined) return '-';
  const s = String(v);
  return s !== '' && /^[\x21\x23-\x3c\x3e-\x7e]+$/.test(s) ? s : JSON.stringify(s);
}

export function formatLine(level: LogLevel, event: string, fields: LogFields, now = new Date()): string {
  let line = `${now.toISOString()} ${level} ${event}`;
  for (const [k, v] of Object.entries(fields)) line += ` ${k}=${formatValue(v)}`;
  return line + '\n';
}

/**
 * Lines are batched and written once per event-loop turn (or at 64 KiB): under a flood an acceptor logs a line per
 * message, and stderr writes are synchronous system calls. The batch is flushed on exit, so nothing is lost on a
 * normal stop or an uncaught error.
 */
export function batchedStderr(): { write(line: string): void; flush(): void } {
  let pending = '';
  let scheduled = false;
  const flush = () => {
    scheduled = false;
    if (pending === '') return;
    const out = pending;
    pending = '';
    try {
      process.stderr.write(out);
    } catch {
      // stderr gone (closed pipe): logging must never take the trap down
    }
  };
  process.on('exit', flush);
  return {
    write(line) {
      pending += line;
      if (pending.length >= 65536) flush();
      else if (!scheduled) {
        scheduled = true;
        setImmediate(flush);
      }
    },
    flush,
  };
}

let sharedSink: ReturnType<typeof batchedStderr> | null = null;

export function createLogger(
  level: LogLevel,
  base: LogFields = {},
  write?: (line: string) => void,
): Logger {
  const sink = write ? { write, flush: () => undefined } : (sharedSink ??= batchedStderr());
  const max = RANK[level];
  const emit = (l: LogLevel, event: string, fields?: LogFields) => {
    if (RANK[l] <= max) sink.write(formatLine(l, event, fields ? { ...base, ...fields } : base));
  };
  return {
    error: (e, f) => emit('error', e, f),
    warn: (e, f) => emit('warn', e, f),
    info: (e, f) => emit('info', e, f),
    debug: (e, f) => emit('debug', e, f),
    enabled: (l) => RANK[l] <= max,
    child: (fields) => createLogger(level, { ...base, ...fields }, write),
    flush: () => sink.flush(),
  };
}
