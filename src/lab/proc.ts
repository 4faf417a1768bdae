// Runs host tools (apt, dpkg, make, tar, qemu) for the lab: one promise-based helper so every
// failure names the command, its exit status and the tail of what it printed.
import { spawn } from "node:child_process";

/** RunOptions tune one tool invocation. */
export interface RunOptions {
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  /** Bytes fed to the tool's stdin. */
  input?: string;
  /** Receives each chunk of stderr and stdout as it arrives (progress display). */
  onOutput?: (chunk: string) => void;
  signal?: AbortSignal;
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

/** runTool runs a command to completion; it resolves even on failure (check `code`). */
export function runTool(cmd: string, args: string[], opts: RunOptions = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, {
      cwd: opts.cwd,
      env: opts.env ?? process.env,
      stdio: [opts.input === undefined ? "ignore" : "pipe", "pipe", "pipe"],
      signal: opts.signal,
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
    child.on("error", reject);
    child.on("close", (code, sig) => resolve({ code: code ?? (sig ? 128 : 1), stdout, stderr }));
  });
}

/** mustRun runs a command and throws a ToolError unless it exits 0; returns its stdout. */
export async function mustRun(cmd: string, args: string[], opts: RunOptions = {}): Promise<string> {
  const res = await runTool(cmd, args, opts);
  if (res.code !== 0) throw new ToolError(cmd, args, res.code, `${res.stdout}\n${res.stderr}`);
  return res.stdout;
}
