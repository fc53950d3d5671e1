/**
 * PROXY headers as a balancer would send them, built byte by byte for tests, plus knobs to break them.
 */
import net from 'node:net';

export const V2_SIGNATURE = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);

export function v1(src: string, dst: string, sport: number, dport: number): Buffer {
  const proto = net.isIPv6(src) ? 'TCP6' : 'TCP4';
  return Buffer.from(`PROXY ${proto} ${src} ${dst} ${sport} ${dport}\r\n`, 'latin1');
}

function addressBytes(address: string): number[] {
  if (net.isIPv4(address)) return address.split('.').map(Number);
  const [head, tail] = address.split('::');
  const groups = (s: string | undefined) => (s ? s.split(':') : []);
  const h = groups(head);
  const t = tail === undefined ? [] : groups(tail);
  const all = tail === undefined ? h : [...h, ...Array(8 - h.length - t.length).fill('0'), ...t];
  return all.flatMap((g) => [parseInt(g, 16) >> 8, parseInt(g, 16) & 0xff]);
}

export interface V2Options {
  /** 0 LOCAL, 1 PROXY (default), anything else to break it. */
  command?: number;
  /** Version nibble, default 2. */
  version?: number;
  /** Family/protocol byte; default 0x11 (TCP over IPv4) or 0x21 (TCP over IPv6) from the source address. */
  famProto?: number;
  src?: string;
  dst?: string;
  sport?: number;
  dport?: number;
  /** Raw address block instead of the one built from src/dst/ports. */
  block?: Buffer;
  /** TLVs appended after the addresses. */
  tlvs?: Array<{ type: number; value: Buffer }>;
  /** Overrides the length field (to lie about the block's size). */
  lengthField?: number;
}

export function tlv(type: number, value: Buffer | string): { type: number; value: Buffer } {
  return { type, value: Buffer.isBuffer(value) ? value : Buffer.from(value, 'latin1') };
}

export function v2(o: V2Options = {}): Buffer {
  const command = o.command ?? 1;
  const src = o.src ?? '192.0.2.10';
  const dst = o.dst ?? (net.isIPv6(src) ? '2001:db8::25' : '198.51.100.25');
  const famProto = o.famProto ?? (command === 0 && o.src === undefined ? 0x00 : net.isIPv6(src) ? 0x21 : 0x11);
  let block: Buffer;
  if (o.block) block = o.block;
  else if ((famProto >> 4) === 1 || (famProto >> 4) === 2) {
    const ports = Buffer.alloc(4);
    ports.writeUInt16BE(o.sport ?? 40000, 0);
    ports.writeUInt16BE(o.dport ?? 25, 2);
    block = Buffer.concat([Buffer.from(addressBytes(src)), Buffer.from(addressBytes(dst)), ports]);
  } else block = Buffer.alloc(0);
  const tlvs = (o.tlvs ?? []).map((t) => {
    const head = Buffer.alloc(3);
    head[0] = t.type;
    head.writeUInt16BE(t.value.length, 1);
    return Buffer.concat([head, t.value]);
  });
  const body = Buffer.concat([block, ...tlvs]);
  const fixed = Buffer.alloc(4);
  fixed[0] = ((o.version ?? 2) << 4) | command;
  fixed[1] = famProto;
  fixed.writeUInt16BE(o.lengthField ?? body.length, 2);
  return Buffer.concat([V2_SIGNATURE, fixed, body]);
}

/** HAProxy's health-check header with send-proxy-v2 + check-send-proxy: LOCAL, no addresses. */
export function v2Local(): Buffer {
  return v2({ command: 0 });
}
