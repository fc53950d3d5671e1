/**
 * What /healthz and `spamtrapd_workers` say, from what the primary has seen of each acceptor slot. An acceptor is up
 * once it announced that it listens and has been heard from recently (every worker pushes metrics at least every
 * second, so silence means a hung or stopped event loop). The trap is healthy while every slot is up and none is
 * crash-looping: a readiness probe must not pass before the port is open, nor while a slot keeps dying.
 */

export interface SlotHealthView {
  readonly slot: string;
  /** The current process announced `listening`. */
  readonly listening: boolean;
  /** When the current process last sent anything (ms); 0 = never. */
  readonly lastHeardAt: number;
  /** Deaths in a row, each soon after its start (reset by a process that lived long enough). */
  readonly failuresInARow: number;
  /** How the last process of this slot ended, for the reason text. */
  readonly lastExit: string | null;
}

export interface HealthReport {
  readonly ok: boolean;
  readonly workersUp: number;
  readonly workersExpected: number;
  /** One line per problem, for the 503 body and the log. */
  readonly reasons: readonly string[];
}

/** A slot whose last this-many processes each died soon after starting is crash-looping. */
export const CRASH_LOOP_FAILURES = 3;

export function evaluateHealth(slots: readonly SlotHealthView[], expected: number, now: number, staleMs: number): HealthReport {
  const reasons: string[] = [];
  let up = 0;
  for (const s of slots) {
    const heard = s.lastHeardAt > 0 && now - s.lastHeardAt <= staleMs;
    if (s.listening && heard) up++;
    else if (!s.listening) reasons.push(`acceptor ${s.slot}: not listening`);
    else reasons.push(`acceptor ${s.slot}: silent for ${Math.round((now - s.lastHeardAt) / 1000)} s`);
    if (s.failuresInARow >= CRASH_LOOP_FAILURES) {
      reasons.push(`acceptor ${s.slot}: crash-looping (${s.failuresInARow} deaths in a row${s.lastExit ? `, last ${s.lastExit}` : ''})`);
    }
  }
  if (up < expected && reasons.length === 0) reasons.push(`${up} of ${expected} acceptors up`);
  return { ok: reasons.length === 0 && up >= expected, workersUp: up, workersExpected: expected, reasons };
}
