/** Where the real Perl IPC::DirQueue module is, for the tests that check our queues with it where it exists. */
import * as fs from 'node:fs';
import * as path from 'node:path';

export function perlModuleLib(): string {
  return process.env['IPC_DIRQUEUE_LIB'] || '/tmp/anchors/ipc-dirqueue/lib';
}

export function perlModuleFound(): boolean {
  return fs.existsSync(path.join(perlModuleLib(), 'IPC', 'DirQueue.pm'));
}
