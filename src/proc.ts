// Runs a host tool (make, patch, cp, apt, dpkg, insmod): the one process runner of the project,
// below every stage. Failures name the command, its exit status and the tail of its output.
// Aborting the signal stops the tool (its whole process group with `group`, for make) and
// rejects with the `interrupted` UserError.
import { spawn, spawnSync } from "node:child_process";
import { interrupted } from "./errors.js";

/** RunOptions tune one tool invocation. */
export interface RunOptions {
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  /** Bytes fed to the tool's stdin. */
  input?: string;
  /** Receives each chunk of stderr and stdout as it arrives (progress display). */
  onOutput?: (chunk: string) => void;
  signal?: AbortSignal;
  /** Start the tool in its own process group, so an abort also stops its children (make's). */
  group?: boolean;
}

/** RunResult is what a tool printed and how it ended. */
export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** ToolError is a host tool that exited non-zero; `tail` is the last lines it printed. */
export class ToolError extends Error {
  readonly code: number;
  readonly tail: string;
  constructor(cmd: string, args: string[], code: number, output: string) {
    const tail = output.trim().split("\n").slice(-15).join("\n");
    super(`${[cmd, ...args].join(" ")} exited with status ${code}${tail ? `:\n${tail}` : ""}`);
    this.name = "ToolError";
    this.code = code;
    this.tail = tail;
  }
}

/**
 * runTool runs a command to completion; it resolves even when the tool fails (check `code`:
 * 127 when it cannot be started, as a shell says; 128 when a signal killed it) and rejects only
 * when interrupted.
 */
export function runTool(cmd: string, args: string[], opts: RunOptions = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const signal = opts.signal;
    if (signal?.aborted) return reject(interrupted());
    const child = spawn(cmd, args, {
      cwd: opts.cwd,
      env: opts.env ?? process.env,
      stdio: [opts.input === undefined ? "ignore" : "pipe", "pipe", "pipe"],
      detached: opts.group === true,
    });
    let stdout = "";
    let stderr = "";
    child.stdout!.setEncoding("utf8").on("data", (d: string) => {
      stdout += d;
      opts.onOutput?.(d);
    });
    child.stderr!.setEncoding("utf8").on("data", (d: string) => {
      stderr += d;
      opts.onOutput?.(d);
    });
    if (opts.input !== undefined) child.stdin?.end(opts.input);
    const onAbort = () => {
      try {
        if (opts.group && child.pid) process.kill(-child.pid, "SIGTERM");
        else child.kill("SIGTERM");
      } catch {}
    };
    signal?.addEventListener("abort", onAbort, { once: true });
    let done = false;
    const finish = (r: RunResult | Error) => {
      if (done) return;
      done = true;
      signal?.removeEventListener("abort", onAbort);
      if (r instanceof Error) reject(r);
      else resolve(r);
    };
    // A tool that cannot be started (ENOENT, EACCES) gets a shell's 127 and the reason.
    child.on("error", (e) => finish({ code: 127, stdout, stderr: `${stderr}${e.message}` }));
    child.on("close", (code, sig) => {
      if (signal?.aborted) return finish(interrupted());
      finish({ code: code ?? (sig ? 128 : 1), stdout, stderr });
    });
  });
}

/**
 * runToolSync runs a short command to completion and returns what it printed (for quick checks:
 * cp, patch, mount, grep, diff). 127 when it cannot be started.
 */
export function runToolSync(cmd: string, args: string[], opts: { cwd?: string } = {}): RunResult {
  const r = spawnSync(cmd, args, { cwd: opts.cwd, encoding: "utf8", maxBuffer: 1 << 30 });
  if (r.status === null && r.error) return { code: 127, stdout: "", stderr: r.error.message };
  return { code: r.status ?? 128, stdout: r.stdout ?? "", stderr: r.stderr ?? "" };
}

/** mustRun runs a command and throws a ToolError unless it exits 0; returns its stdout. */
export async function mustRun(cmd: string, args: string[], opts: RunOptions = {}): Promise<string> {
  const res = await runTool(cmd, args, opts);
  if (res.code !== 0) throw new ToolError(cmd, args, res.code, `${res.stdout}\n${res.stderr}`);
  return res.stdout;
}

/** mustRunSync is runToolSync that throws a ToolError unless the command exits 0; returns its stdout. */
export function mustRunSync(cmd: string, args: string[], opts: { cwd?: string } = {}): string {
  const res = runToolSync(cmd, args, opts);
  if (res.code !== 0) throw new ToolError(cmd, args, res.code, `${res.stdout}\n${res.stderr}`);
  return res.stdout;
}

/**
 * crashPoint kills this process (SIGKILL, as a crash or kill -9 would) when KSPLICE_CRASH_AT
 * names the point: how the lab tests that every step of a change survives being cut short.
 */
export function crashPoint(name: string): void {
  if (process.env.KSPLICE_CRASH_AT === name) process.kill(process.pid, "SIGKILL");
}
