/**
 * Run as a child (dropping privileges cannot be undone): drops to the target in argv[2] (JSON), then listens on
 * argv[3] and reports what it is, as JSON on stdout.
 */
import net from 'node:net';
import { dropPrivileges, type RunAsTarget } from '../../src/privileges';

const target = JSON.parse(process.argv[2]) as RunAsTarget;
const port = Number(process.argv[3] ?? 0);
const report: Record<string, unknown> = {};
try {
  dropPrivileges(target);
  report.dropped = true;
} catch (err) {
  report.dropError = (err as Error).message;
}
report.ids = { uid: process.getuid!(), euid: process.geteuid!(), gid: process.getgid!(), groups: process.getgroups!() };
try {
  process.setuid!(0);
  report.regained = true;
} catch {
  report.regained = false;
}
const s = net.createServer();
s.once('error', (e: NodeJS.ErrnoException) => {
  report.listen = e.code;
  process.stdout.write(JSON.stringify(report));
});
s.listen(port, '127.0.0.1', () => {
  report.listen = 'ok';
  s.close();
  process.stdout.write(JSON.stringify(report));
});
