// The context a command runs in: injected so tests can run commands in-process with
// captured streams, and commands never reach for process globals themselves.
import type { Writable } from "node:stream";

/** Context is everything a command may touch of the outside world. */
export interface Context {
  cwd: string;
  env: NodeJS.ProcessEnv;
  stdout: Writable;
  stderr: Writable;
  /** Aborted on Ctrl-C; long-running work checks it and cleans up. */
  signal: AbortSignal;
  /** Set by --raw-errors: the abort code must be the first line of stderr, so no progress lines. */
  rawErrors?: boolean;
  /**
   * The command line that runs this program again (node and its entry script), for a helper
   * the kernel runs later; undefined where there is none (a test running a command in-process).
   */
  self?: string[];
}

/** progress returns a logger for a command's progress lines on stderr (silent with --raw-errors). */
export function progress(ctx: Context, prefix: string): (line: string) => void {
  return ctx.rawErrors ? () => {} : (line) => println(ctx.stderr, `${prefix}: ${line}`);
}

/** Command is one verb: it parses its own arguments and returns an exit code. */
export interface Command {
  name: string;
  usage: string;
  run(args: string[], ctx: Context): Promise<number>;
}

/** write prints a line (or lines) to a stream. */
export function println(stream: Writable, text = ""): void {
  stream.write(text.endsWith("\n") ? text : `${text}\n`);
}
