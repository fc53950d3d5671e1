/**
 * A configuration problem found at start-up or reload. `where` is `FILE:LINE` or the name of an
 * environment variable, so an operator can go straight to the cause.
 */
export class ConfigError extends Error {
  constructor(
    readonly where: string,
    readonly reason: string,
  ) {
    super(`${where}: ${reason}`);
    this.name = 'ConfigError';
  }
}
