/**
 * Control files (docs/dirqueue.md#control-file): validation, serialisation and parsing exactly as IPC::DirQueue 1.1
 * does them.
 *
 * Encoding: the format has none, it moves bytes. JS strings given to us are written as UTF-8 (the trap's metadata
 * are JS strings); Buffers are written byte for byte. The metadatum rules are checked on those bytes, because that is
 * what Perl checks and reads. The parser decodes keys and values as UTF-8 (non-UTF-8 bytes written by other
 * producers become U+FFFD in `metadata`; `rawMetadata` keeps the bytes).
 */

export type MetaValue = string | Buffer;
export type Metadata = Readonly<Record<string, MetaValue>>;

export class InvalidMetadatumError extends Error {
  readonly code = 'EINVALIDMETADATUM';
  constructor(readonly key: string) {
    super(`invalid metadatum: '${key}'`);
    this.name = 'InvalidMetadatumError';
  }
}

const COLON = 0x3a;
const NUL = 0x00;
const NL = 0x0a;
const Q = 0x51;

/** Perl refuses `^Q...$` keys (4 bytes, first `Q`), keys with `:`/NUL/LF and values with NUL/LF. */
export function metadatumProblem(key: Buffer, value: Buffer): boolean {
  if (key.length === 4 && key[0] === Q) return true;
  if (key.includes(COLON) || key.includes(NUL) || key.includes(NL)) return true;
  return value.includes(NUL) || value.includes(NL);
}

/** UTF-8 never makes a `:`, NUL or LF byte out of anything but those characters, so strings are checked as they are. */
const KEY_FORBIDDEN = /[:\0\n]/;
const VALUE_FORBIDDEN = /[\0\n]/;

/** Throws InvalidMetadatumError for the first bad key; call before anything is written. */
export function validateMetadata(metadata: Metadata): void {
  for (const k of Object.keys(metadata)) {
    const v = metadata[k];
    if (typeof v === 'string') {
      // Perl counts bytes: a key of 4 UTF-8 bytes starting with Q has at most 4 characters.
      if ((k.charCodeAt(0) === Q && k.length <= 4 && Buffer.byteLength(k) === 4) || KEY_FORBIDDEN.test(k) || VALUE_FORBIDDEN.test(v)) {
        throw new InvalidMetadatumError(k);
      }
    } else if (Buffer.isBuffer(v)) {
      if (metadatumProblem(Buffer.from(k, 'utf8'), v)) throw new InvalidMetadatumError(k);
    } else {
      throw new TypeError(`metadatum '${k}' must be a string or Buffer, got ${typeof v}`);
    }
  }
}

export interface ControlFields {
  /** Absolute path of the data file. */
  dataPath: string;
  size: number;
  sec: number;
  usec: number;
  hostname: string;
}

/** The five fields in IPC::DirQueue's order, then one line per metadatum, every line ending in LF. */
export function serializeControl(fields: ControlFields, metadata: Metadata): Buffer {
  validateMetadata(metadata);
  if (/[\0\n]/.test(fields.dataPath) || /[\0\n]/.test(fields.hostname)) {
    throw new Error('data path and host name must not contain NUL or newline');
  }
  const head =
    `QDFN: ${fields.dataPath}\n` +
    `QDSB: ${fields.size}\n` +
    `QSTT: ${fields.sec}\n` +
    `QSTM: ${fields.usec}\n` +
    `QSHN: ${fields.hostname}\n`;
  // One string and one encoding for the usual all-string metadata; Buffers (raw bytes) are copied as they are.
  let text = head;
  let parts: Buffer[] | null = null;
  for (const k of Object.keys(metadata)) {
    const v = metadata[k];
    if (typeof v === 'string') text += `${k}: ${v}\n`;
    else {
      parts ??= [];
      parts.push(Buffer.from(text + `${k}: `, 'utf8'), v);
      text = '\n';
    }
  }
  if (!parts) return Buffer.from(text, 'utf8');
  parts.push(Buffer.from(text, 'utf8'));
  return Buffer.concat(parts);
}

export interface ParsedControl {
  /** Fields whose key matched ^Q[A-Z]{3}$ (QDFN, QDSB, ...); undefined where Perl would store undef. */
  fields: Record<string, string | undefined>;
  metadata: Record<string, string>;
  rawMetadata: Map<string, Buffer>;
}

function* lines(buf: Buffer): Generator<Buffer> {
  let start = 0;
  while (start < buf.length) {
    const nl = buf.indexOf(NL, start);
    const end = nl < 0 ? buf.length : nl + 1;
    yield buf.subarray(start, end);
    start = end;
  }
}

const FIELD_RE = /^Q[A-Z]{3}\n?$/;

/**
 * Reads a control file as `read_control_file` does: split each line at the first ": ", drop the last byte of the
 * line whatever it is, keys matching ^Q[A-Z]{3}$ (Perl's `$` also before a final LF) are fields, later keys win.
 * A line without ": " is all key and has an undef value, which becomes '' in `metadata`.
 */
export function parseControl(buf: Buffer): ParsedControl {
  // Null prototypes: a key such as "__proto__" is ordinary metadata here.
  const out: ParsedControl = {
    fields: Object.create(null) as Record<string, string | undefined>,
    metadata: Object.create(null) as Record<string, string>,
    rawMetadata: new Map(),
  };
  for (const line of lines(buf)) {
    const sep = line.indexOf(': ');
    const key = (sep < 0 ? line : line.subarray(0, sep)).toString('utf8');
    const value = sep < 0 ? undefined : line.subarray(sep + 2, Math.max(sep + 2, line.length - 1));
    if (FIELD_RE.test(key)) {
      out.fields[key] = value === undefined ? undefined : value.toString('utf8');
    } else {
      const v = value ?? Buffer.alloc(0);
      out.metadata[key] = v.toString('utf8');
      out.rawMetadata.set(key, Buffer.from(v));
    }
  }
  return out;
}

/**
 * Metadata copied from one job into a new one (dead letters, split retries): keys IPC::DirQueue would refuse are
 * dropped and NUL/newline in values become spaces, so the copy can never fail validation half-way.
 */
export function sanitizeMetadata(meta: Record<string, string>): Metadata {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(meta)) {
    if (metadatumProblem(Buffer.from(k, 'utf8'), Buffer.alloc(0))) continue;
    out[k] = v.replace(/[\0\n]/g, ' ');
  }
  return out;
}
