/**
 * Messages whose every byte follows from an id, so a stored or consumed copy can be checked against what was sent
 * without a record of it: header and body lines of 8-bit bytes (the queue must keep bytes, not text), 20 to 60
 * lines long, the id in `Message-Id: <id@domain>`.
 */
export function idMessage(id: string, domain: string): Buffer {
  const lines = [`Message-Id: <${id}@${domain}>`, `Subject: ${domain} ${id}`, ''];
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

/** The id in a message's Message-Id at `domain`, or null when it has none. */
export function idOfMessage(message: Buffer, domain: string): string | null {
  return new RegExp(`^Message-Id: <([^@>\\r\\n]+)@${domain.replace(/\./g, '\\.')}>`, 'm').exec(message.toString('latin1'))?.[1] ?? null;
}
