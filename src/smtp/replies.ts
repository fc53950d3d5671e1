/**
 * Which rejection a reply stands for, for `spamtrapd_rejections_total{reason}`. smtp-server sends these replies
 * itself; the trap sees them only in the reply tap (overrides.ts), by code, context and text. Replies the trap
 * decides on its own (rule replies, queue errors) are counted where they are decided, so they map to null here.
 */
export const REPLY_REJECTIONS = [
  'size',
  'too_many_recipients',
  'syntax',
  'sequence',
  'timeout',
  'shutdown',
  'connection_limit',
  'unrecognized',
  'http_request',
] as const;
export type RejectionReason = (typeof REPLY_REJECTIONS)[number];

/** Every reason the trap can count: the reply tap's, and those the session decides itself. */
export type TrapRejection = RejectionReason | 'queue_error' | 'connection_limit_ip';

export function classifyReply(code: number, text: string, context: string | false | undefined): RejectionReason | null {
  if (context === 'MESSAGE_TOO_BIG') return 'size';
  if (context === 'TOO_MANY_RECIPIENTS') return 'too_many_recipients';
  if (context === 'DATA_TIMEOUT' || context === 'COMMAND_TIMEOUT') return 'timeout';
  if (code === 501 || context === 'SENDER_SYNTAX_ERROR' || context === 'MAILBOX_SYNTAX_ERROR') return 'syntax';
  if (code === 503) return 'sequence';
  if (code === 500 || /^Error: too many unrecognized commands/.test(text)) return 'unrecognized';
  if (code === 421) {
    if (/^Timeout/.test(text)) return 'timeout';
    if (/shutting down/.test(text)) return 'shutdown';
    // smtp-server's own text only: the per-IP refusal is the trap's and counted where it is decided.
    if (/Too many connected clients/.test(text)) return 'connection_limit';
    if (/HTTP requests not allowed/.test(text)) return 'http_request';
    if (/^Error: too many unrecognized commands/.test(text)) return 'unrecognized';
    if (/^Error: /.test(text)) return 'syntax';
  }
  return null;
}
