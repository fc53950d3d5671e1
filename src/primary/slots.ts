/**
 * One slot per process the primary keeps running: acceptor 0..N-1, and the relay. A slot forks its process, hears it,
 * and when it dies forks a replacement after a back-off that grows while it keeps dying young. Pure bookkeeping and
 * timers; what a message means and what a death implies (sweep, metrics) is the primary's, told through the hooks.
 */
import type { Child } from './forks';
import type { SlotHealthView } from './health';

/** Restart back-off for a slot whose process keeps dying: at once, then doubling from 100 ms, capped at 30 s. */
export function restartDelayMs(recentFailures: number): number {
  if (recentFailures <= 1) return 0;
  return Math.min(30_000, 100 * 2 ** (recentFailures - 2));
}

/** A process that lived this long before dying is not "crash-looping": its slot's failure count starts again. */
export const STABLE_AFTER_MS = 10_000;

export interface SlotHooks {
  started(slot: Slot, child: Child): void;
  message(slot: Slot, child: Child, msg: unknown): void;
  exited(slot: Slot, child: Child, info: { code: number | null; signal: NodeJS.Signals | null; livedMs: number; restartInMs: number | null }): void;
}

export class Slot {
  child: Child | null = null;
  listening = false;
  lastHeardAt = 0;
  private startedAt = 0;
  private failures = 0;
  private lastExit: string | null = null;
  private timer: NodeJS.Timeout | null = null;
  /** False once the slot is told to stop (trap stopping, or the relay no longer needed): no more restarts. */
  private wanted = false;

  constructor(
    readonly name: string,
    private readonly forkFn: () => Child,
    private readonly hooks: SlotHooks,
  ) {}

  get running(): boolean {
    return this.child !== null;
  }

  /** Forks the process unless one runs or a restart is pending. */
  start(): void {
    this.wanted = true;
    if (this.child || this.timer) return;
    this.forkNow();
  }

  /** No restart from now on; a pending one is cancelled. The process itself is the caller's to tell. */
  retire(): void {
    this.wanted = false;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  health(now: number): SlotHealthView {
    const stable = this.child !== null && this.listening && now - this.startedAt > STABLE_AFTER_MS;
    return {
      slot: this.name,
      listening: this.child !== null && this.listening,
      lastHeardAt: this.child ? this.lastHeardAt : 0,
      failuresInARow: stable ? 0 : this.failures,
      lastExit: this.lastExit,
    };
  }

  private forkNow(): void {
    this.timer = null;
    this.startedAt = Date.now();
    this.listening = false;
    this.lastHeardAt = 0;
    const child = this.forkFn();
    this.child = child;
    child.onMessage((msg) => {
      this.lastHeardAt = Date.now();
      this.hooks.message(this, child, msg);
    });
    child.onExit((code, signal) => {
      if (this.child === child) this.child = null;
      this.listening = false;
      const livedMs = Date.now() - this.startedAt;
      this.failures = livedMs > STABLE_AFTER_MS ? 1 : this.failures + 1;
      this.lastExit = signal ? `killed by ${signal}` : `exit code ${code}`;
      let restartInMs: number | null = null;
      if (this.wanted) {
        restartInMs = restartDelayMs(this.failures);
        this.timer = setTimeout(() => this.forkNow(), restartInMs);
      }
      this.hooks.exited(this, child, { code, signal, livedMs, restartInMs });
    });
    this.hooks.started(this, child);
  }
}
