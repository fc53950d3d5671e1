// Writes .env.example and the README's settings table from src/config/settings.ts (`npm run settings:docs`).
import fs from 'node:fs';
import path from 'node:path';
import { renderEnvExample, withReadmeTable } from '../src/config/settings-docs';

const root = path.join(__dirname, '..', '..');
fs.writeFileSync(path.join(root, '.env.example'), renderEnvExample());
const readme = path.join(root, 'README.md');
fs.writeFileSync(readme, withReadmeTable(fs.readFileSync(readme, 'utf8')));
process.stdout.write('wrote .env.example and the settings table in README.md\n');
