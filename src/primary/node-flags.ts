/**
 * V8 flags every trap process runs with. The young generation is held to 4 MiB per semi-space, where Node's default
 * lets it grow to 16 (32 MiB of new space) under a steady allocation rate: in the acceptors that is the messages, in
 * the primary the queue scans and the acceptors' events. After a 20,000-message flood the two acceptors held 282 MB
 * with it against 318 MB without, for the same CPU per message within noise; in a 1M-message soak with nobody
 * consuming, the primary stepped from ~70 to ~92 MB without it (bench/RESULTS.md).
 *
 * The primary gets them from whatever starts it: package.json's start script, deploy/systemd/spamtrapd.service and
 * the Dockerfile (test/deploy-files.test.ts holds the three to this list); acceptors and the relay get them from
 * their fork, before the primary's own execArgv, so an operator's flag wins.
 */
export const NODE_FLAGS: readonly string[] = ['--max-semi-space-size=4'];
