/** Messages from the primary to its acceptors (metrics messages have their own, in src/metrics). */
export type PrimaryToWorker = { type: 'trap:shutdown' } | { type: 'trap:reload' };

/** Messages from an acceptor to the primary, besides metrics. */
export type WorkerToPrimary = { type: 'acceptor:listening'; slot: number };
