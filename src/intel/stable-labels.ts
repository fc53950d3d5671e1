/**
 * Label values for a Prometheus counter keyed by something unbounded (fingerprint ids): at most `maxLabels` keys get
 * a series of their own, everything else counts as `other`.
 *
 * A counter must never go down and its series should not come and go, so a key that got a series keeps it for the
 * life of the process, even if it is no longer among the most frequent; it then simply stops growing. A key gets one
 * when a series is still free and it has been seen at least `promoteAfter` times for sure (Space-Saving's lower
 * bound, top-counts.ts), so one-off ids do not use up the series early and the frequent ones get them. Its hits
 * before that stay in `other`. Summed over all labels, the counter is exactly the number of observations.
 */
import { TopCounts } from './top-counts';

export const OTHER_LABEL = 'other';

export interface StableLabelsOptions {
  readonly maxLabels: number;
  readonly promoteAfter: number;
  /** Counters behind the promotion decision; more than maxLabels so frequent keys stand out from churn. */
  readonly tracked: number;
}

export class StableTopLabels {
  private readonly labelled = new Set<string>();
  private readonly candidates: TopCounts;

  constructor(private readonly opts: StableLabelsOptions) {
    this.candidates = new TopCounts(Math.max(opts.tracked, opts.maxLabels));
  }

  /** The label to increment for one observation of `key`. */
  label(key: string): string {
    if (this.labelled.has(key)) return key;
    if (this.labelled.size >= this.opts.maxLabels || key === OTHER_LABEL) return OTHER_LABEL;
    this.candidates.add(key);
    const c = this.candidates.get(key);
    if (c !== undefined && c.count - c.error >= this.opts.promoteAfter) {
      this.labelled.add(key);
      return key;
    }
    return OTHER_LABEL;
  }

  /** Keys with a series of their own, in the order they got it. */
  labels(): string[] {
    return [...this.labelled];
  }
}
