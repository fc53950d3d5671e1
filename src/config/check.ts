/**
 * `spamtrapd check ADDRESS`: what the trap would do with one recipient, and which line of which file decided it,
 * so an operator can test a copied rcpt_regexp or a new routes line without sending mail.
 */
import {
  evaluateRecipient,
  rcptReply,
  type RcptDefaultCode,
  type RcptRule,
} from './rcpt-regexp';
import { listingVerdict } from '../intel/trap-recipients';
import { describeDestination, routeRecipient, type Route } from './routes';

/** Accepts the address as an operator types it: with or without angle brackets, with surrounding spaces. */
function bareAddress(input: string): string {
  const t = input.trim();
  const m = /^<(.*)>$/.exec(t);
  return (m ? m[1] : t).trim();
}

/** A multi-line, human-readable explanation (no trailing newline). Pure. */
export function explainAddress(
  rules: readonly RcptRule[],
  routes: readonly Route[],
  address: string,
  defaultCode: RcptDefaultCode,
): string {
  const addr = bareAddress(address);
  const verdict = evaluateRecipient(rules, addr);
  const reply = rcptReply(verdict, addr, defaultCode);
  const out: string[] = [`${JSON.stringify(addr)}:`];

  switch (verdict.reason) {
    case 'not-checked':
      out.push(`  rule:        not checked (no user or no host part) -> default ${defaultCode}`);
      break;
    case 'no-match':
      out.push(`  rule:        no rule matches ${JSON.stringify(addr.toLowerCase())} -> default ${defaultCode}`);
      break;
    case 'matched': {
      const r = verdict.rule!;
      const line = `${r.file}:${r.line}: ${r.pattern} ${r.code}${r.comment ? ' ' + r.comment : ''}`;
      out.push(`  rule:        ${line}`);
      if (r.code === 'DECLINED') {
        const ignored = r.note !== null ? ` (its note ${r.note} does not apply)` : '';
        out.push(`               DECLINED: falls through to the default ${defaultCode}${ignored}`);
      }
      break;
    }
  }

  out.push(`  reply:       ${reply.code} ${reply.message}${reply.disconnect ? ' (then the connection is closed)' : ''}`);
  out.push(`  note:        ${reply.note ?? '(none)'}`);
  if (!reply.accepted) {
    out.push('  destination: none (recipient refused, nothing is filed for it)');
  } else {
    const { destination, route } = routeRecipient(routes, addr, reply.note);
    out.push(`  destination: ${describeDestination(destination)} (${route.file}:${route.line}: ${route.text})`);
    out.push(`  listing:     ${listingVerdict({ note: reply.note, destination, listing: route.listing })}`);
  }
  return out.join('\n');
}
