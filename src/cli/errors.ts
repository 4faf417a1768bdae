// Error types shared by every command. A UserError is the user's to fix (bad arguments,
// bad input, a refusal): it prints without a stack. Anything else is our failure and keeps
// its cause. `code` is the machine-readable abort cause printed by --raw-errors.

/** Exit codes: 0 success, 1 failure or refusal, 2 usage error. */
export const EXIT_OK = 0;
export const EXIT_FAILURE = 1;
export const EXIT_USAGE = 2;

/** UserError is a problem with the user's input or environment, reported without a stack. */
export class UserError extends Error {
  /** Abort cause, e.g. `no_match`, `bad_package`, `usage`. */
  readonly code: string;
  readonly exitCode: number;
  constructor(message: string, opts: { code?: string; exitCode?: number; cause?: unknown } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = "UserError";
    this.code = opts.code ?? "failed";
    this.exitCode = opts.exitCode ?? EXIT_FAILURE;
  }
}

/** UsageError is a malformed command line (exit 2). */
export class UsageError extends UserError {
  constructor(message: string) {
    super(message, { code: "usage", exitCode: EXIT_USAGE });
    this.name = "UsageError";
  }
}
