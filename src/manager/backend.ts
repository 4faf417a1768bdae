// What the manager's server asks of the machine: the Backend interface, the state it shows, and
// the problem shown for an error (its code, the message, what to do). The real backend is
// real.ts (src/uptrack and src/kernel); tests give the server a fake one.
import { UserError } from "../errors.js";

/** UpdateView is an update as the page lists it. */
export interface UpdateView {
  id: string;
  name: string;
  cves: string[];
}

/** FunctionView is one function an applied update replaces, with its module and state. */
export interface FunctionView {
  name: string;
  /** "vmlinux" for the kernel image, else the module's name. */
  module: string;
  /** live, pending, coming or failed (see `ksplice view`). */
  state: string;
  reason?: string;
}

/** AppliedView is an update applied to the running kernel. */
export interface AppliedView extends UpdateView {
  /** When it was applied (ISO), from the core; null when the core does not say. */
  appliedAt: string | null;
  /** The stop_machine pause of its apply, in microseconds. */
  pauseUs: number | null;
  functions: FunctionView[];
  /** The modules it patches (the kernel image not included). */
  modules: string[];
  /** False for an update applied by hand (`ksplice apply`), not installed from the stream. */
  fromStream: boolean;
}

/** AvailableView is an update the stream offers for this kernel that is not applied. */
export interface AvailableView extends UpdateView {
  stacksOn: string[];
  effective: string | null;
}

/** Problem is an error as the page shows it: its abort code, the message and what to do. */
export interface Problem {
  code: string;
  message: string;
  hint: string;
  at?: string;
}

/** ManagerState is everything the page shows. */
export interface ManagerState {
  hostname: string;
  kernel: { release: string; buildId: string | null; version: string };
  /** The version the installed updates bring the kernel up to (uptrack-uname). */
  effective: string;
  /** up_to_date, updates_available, unsupported_kernel, not_checked or error (uptrack/state.ts). */
  state: string;
  applied: AppliedView[];
  available: AvailableView[];
  lastCheck: string | null;
  /** The last failure, while no success came after it. */
  lastError: Problem | null;
  bootReapplyFailed: boolean;
  /** The client's log, newest last. */
  log: string[];
}

/** Progress receives the lines a long action prints as it goes. */
export type Progress = (line: string) => void;

/**
 * Backend is the machine the manager shows and changes. Each action resolves with the message
 * the CLI prints when it finishes, and throws (a UserError) as the CLI's verb would.
 */
export interface Backend {
  state(): Promise<ManagerState>;
  /** Check the stream (uptrack-show --available). */
  check(log: Progress): Promise<string>;
  /** Install the given updates and what they stack on, or every available one (uptrack-upgrade). */
  install(ids: string[] | "all", log: Progress): Promise<string>;
  /** Remove the given updates and what stacks on them (uptrack-remove). */
  remove(ids: string[], log: Progress): Promise<string>;
}

/** HINTS says, per abort code, what a person at the page can do about it. */
const HINTS: Record<string, string> = {
  stream_unreachable:
    "The stream's server did not answer. Check this machine's network (and https_proxy), and update_repo_url in /etc/ksplice/uptrack.conf, then press Check now. Nothing was changed.",
  metadata_tampered:
    "What the stream served failed verification, so nothing was installed. Do not work around it: tell the stream's publisher; press Check now once they have fixed it.",
  metadata_rollback:
    "The stream served metadata older than this machine has already seen (a replay, or a mirror out of date). Nothing was installed; tell the stream's publisher.",
  metadata_expired:
    "The stream's signed metadata has expired: its publisher must re-sign it (ksplice stream resign). Nothing was installed.",
  untrusted_root:
    "The stream is not signed by the root this machine trusts. Check /etc/ksplice/root.json is the root the stream's publisher gave you.",
  not_configured:
    "Set the stream in /etc/ksplice/uptrack.conf ([Network] update_repo_url) and install its root metadata as /etc/ksplice/root.json.",
  unsupported_kernel:
    "The stream publishes no updates for the running kernel. Boot a kernel the stream covers to get updates.",
  code_busy:
    "A task was running in the code being replaced, named above, so nothing was changed. Try again in a moment; if the same task stays there, restart or stop it first.",
  module_busy: "A module the update patches is in use in a way that stops the change. Try again later.",
  locked: "Another ksplice command is running on this machine. Wait for it to finish, then try again.",
  permission_denied: "Changing the kernel needs root: run ksplice manager as root.",
  no_match:
    "The running code is not what the update was made for (another build of this kernel, or code changed by something else). Nothing was changed; tell the stream's publisher.",
  wrong_kernel: "The update is for another kernel. Nothing was changed; press Check now.",
  not_in_stream: "The stream has no such update for this kernel. Press Check now to see what it offers.",
  not_applied: "That update is not applied. Press Check now to refresh the page.",
  already_applied: "That update is applied already. Press Check now to refresh the page.",
  call_failed:
    "A check of the update refused to go ahead, so nothing was changed. The log below says why; tell the stream's publisher.",
  busy: "The manager is running another action. Wait for it to finish.",
};

const DEFAULT_HINT =
  "Nothing was left half-done: each update is fully in or fully out. The log below says more; try again, and report it if it keeps failing.";

/** hintFor says what to do about an abort code. */
export function hintFor(code: string): string {
  return HINTS[code] ?? DEFAULT_HINT;
}

/** problemOf turns a thrown error into what the page shows. */
export function problemOf(e: unknown): Problem {
  if (e instanceof UserError) return { code: e.code, message: e.message, hint: hintFor(e.code) };
  const message = e instanceof Error ? e.message : String(e);
  return {
    code: "failed",
    message: `internal error: ${message}`,
    hint: "This is a bug in ksplice; please report it with the log below.",
  };
}
