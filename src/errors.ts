// Errors every stage raises, below all of them: a UserError is a condition the user can act on
// (bad input, a refusal, the wrong kernel, a busy function) and carries an abort code; any other
// Error is our own failure and keeps its stack. The CLI only maps these to output and exit codes.
// Owns: the abort codes (the README's list). Imports nothing of the project.

/** ABORT_CODES lists every abort code, as printed first by `--raw-errors`. */
export const ABORT_CODES = [
  // command line
  "usage",
  "interrupted",
  // create: input and refusals
  "bad_input",
  "bad_patch",
  "bad_tree",
  "wrong_compiler",
  "patch_failed",
  "not_compiled",
  "does_not_compile",
  "no_change",
  "unsupported_change",
  "module_patch",
  "build_failed",
  // the package and the kernel it is for
  "bad_package",
  "wrong_kernel",
  // apply and undo
  "permission_denied",
  "locked",
  "not_loaded",
  "load_failed",
  "module_missing",
  "module_not_loaded",
  "already_applied",
  "not_applied",
  "no_match",
  "failed_to_find",
  "code_busy",
  "module_busy",
  "unexpected_code",
  "already_patched",
  "call_failed",
  "module_changed",
  "bad_plan",
  // the update stream: publisher
  "stream_missing",
  "stream_exists",
  "stream_keys",
  "stream_conflict",
  "not_in_stream",
  // the update stream: client (Uptrack)
  "not_configured",
  "stream_unreachable",
  "metadata_expired",
  "metadata_rollback",
  "metadata_tampered",
  "untrusted_root",
  "unsupported_kernel",
  // the lab
  "lab_boot",
  "lab_corrupt",
  "lab_download",
  "lab_guest_died",
  "lab_guest_file",
  "lab_install",
  "lab_missing_tool",
  "lab_missing_version",
  "lab_prepare",
  "lab_timeout",
  "lab_with",
  // a UserError that names no more specific cause
  "failed",
] as const;

/** AbortCode is one machine-readable cause of a refused or failed command. */
export type AbortCode = (typeof ABORT_CODES)[number];

/** UserError is a problem with the user's input or environment, reported without a stack. */
export class UserError extends Error {
  readonly code: AbortCode;
  constructor(message: string, opts: { code?: AbortCode; cause?: unknown } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = "UserError";
    this.code = opts.code ?? "failed";
  }
}

/** UsageError is a malformed command line. */
export class UsageError extends UserError {
  constructor(message: string) {
    super(message, { code: "usage" });
    this.name = "UsageError";
  }
}

/** interrupted is the error long work throws when its AbortSignal fires (Ctrl-C). */
export function interrupted(): UserError {
  return new UserError("interrupted", { code: "interrupted" });
}
