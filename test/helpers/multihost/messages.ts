/** The flood's messages: every byte follows from the message's id, so a consumed copy can be checked without a record of it. */
import { idMessage, idOfMessage } from '../id-messages';

const DOMAIN = 'multihost.flood';

export function messageFor(id: string): Buffer {
  return idMessage(id, DOMAIN);
}

/** The id in a message's Message-Id, or null when it is not one of the flood's. */
export function idOf(message: Buffer): string | null {
  return idOfMessage(message, DOMAIN);
}
