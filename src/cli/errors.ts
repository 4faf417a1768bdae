// Exit codes of the `ksplice` command, and how an error maps to one. The errors themselves
// live below every stage, in src/errors.ts.
import type { UserError } from "../errors.js";

/** Exit codes: 0 success, 1 failure or refusal, 2 usage error, 130 interrupted. */
export const EXIT_FAILURE = 1;
export const EXIT_USAGE = 2;
export const EXIT_INTERRUPTED = 130;

/** exitCodeOf is the exit code for a user error's abort code. */
export function exitCodeOf(err: UserError): number {
  if (err.code === "usage") return EXIT_USAGE;
  if (err.code === "interrupted") return EXIT_INTERRUPTED;
  return EXIT_FAILURE;
}
