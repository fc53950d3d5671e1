/** The flood's messages: every byte follows from the message's id, so a consumed copy can be checked without a record of it. */

const DOMAIN = 'multihost.flood';

/** Header and body lines of 8-bit bytes (the queue must keep bytes, not text), 20 to 60 lines long. */
export function messageFor(id: string): Buffer {
  const lines = [`Message-Id: <${id}@${DOMAIN}>`, `Subject: multihost ${id}`, ''];
  let seed = 0;
  for (const ch of id) seed = (seed * 31 + ch.charCodeAt(0)) >>> 0;
  for (let i = 0; i < 20 + (seed % 40); i++) {
    seed = (seed * 1103515245 + 12345) >>> 0;
    const len = 10 + (seed % 70);
    let line = '';
    for (let k = 0; k < len; k++) line += String.fromCharCode(0x21 + (((seed >>> (k % 24)) + k * 7) % 0xd0));
    // A leading dot would be dot-stuffed on the wire: keep the bytes sent and stored the same.
    lines.push(line.replace(/^\./, ','));
  }
  return Buffer.from(lines.join('\r\n') + '\r\n', 'latin1');
}

/** The id in a message's Message-Id, or null when it is not one of the flood's. */
export function idOf(message: Buffer): string | null {
  return new RegExp(`^Message-Id: <([^@>\\r\\n]+)@${DOMAIN.replace(/\./g, '\\.')}>`, 'm').exec(message.toString('latin1'))?.[1] ?? null;
}
