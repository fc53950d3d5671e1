/** Exit statuses of spamtrapd's processes, in one place so a service manager's view is consistent. */
export const EXIT_OK = 0;
export const EXIT_FATAL = 1;
/** A configuration error (the message names the variable, or the file and line); also a usage error of the CLI. */
export const EXIT_CONFIG = 2;
/** The spool lock was lost to another instance: stop at once rather than run beside it. */
export const EXIT_LOCK_LOST = 3;
