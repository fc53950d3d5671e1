/**
 * Faults the test suite switches on in a real daemon, through SPAMTRAPD_FAILPOINTS (comma-separated `name=value`),
 * for failures that no outside action can cause on purpose (a writer thread dying). Unset in production: then every
 * failpoint is undefined and costs one lookup at start.
 */
const parsed = new Map<string, string>();
for (const item of (process.env.SPAMTRAPD_FAILPOINTS ?? '').split(',')) {
  const eq = item.indexOf('=');
  if (eq > 0) parsed.set(item.slice(0, eq).trim(), item.slice(eq + 1));
}

export function failpoint(name: string): string | undefined {
  return parsed.get(name);
}
