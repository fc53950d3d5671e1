/**
 * `.env.example` and the README's settings table, rendered from the settings table so neither can drift from what the
 * loader does (`npm run settings:docs` writes them; test/config-settings-table.test.ts compares).
 */
import { SETTINGS } from './settings';

export const README_TABLE_START = '<!-- settings table: generated from src/config/settings.ts by `npm run settings:docs` -->';
export const README_TABLE_END = '<!-- end of settings table -->';

export function renderEnvExample(): string {
  const head = [
    '# spamtrapd settings. Copy to .env (or set them in the environment, which wins over .env).',
    '# Unset or empty means the default shown (empty where it is computed at start). Values are checked at start; a',
    '# bad one stops the trap with a message naming the variable. Generated from src/config/settings.ts.',
  ];
  const body = SETTINGS.map((s) => `# ${s.meaning}${s.reload ? ' Reloaded on SIGHUP.' : ''}\n${s.name}=${s.parser.example}`);
  return head.join('\n') + '\n\n' + body.join('\n') + '\n';
}

export function renderReadmeTable(): string {
  const rows = SETTINGS.map((s) => `| \`${s.name}\` | ${s.parser.shown} | ${s.meaning.replace(/\|/g, '\\|')}${s.reload ? ' Reloaded on SIGHUP.' : ''} |`);
  return [README_TABLE_START, '| variable | default | meaning |', '|---|---|---|', ...rows, README_TABLE_END].join('\n');
}

/** README text with its settings table replaced by the rendered one; throws when the markers are missing. */
export function withReadmeTable(readme: string): string {
  const a = readme.indexOf(README_TABLE_START);
  const b = readme.indexOf(README_TABLE_END);
  if (a < 0 || b < a) throw new Error('README.md has no settings table markers');
  return readme.slice(0, a) + renderReadmeTable() + readme.slice(b + README_TABLE_END.length);
}
