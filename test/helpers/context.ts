// A Context with captured output, for running commands in-process.
import { PassThrough } from "node:stream";
import type { Context } from "../../src/cli/context.js";

export interface FakeContext extends Context {
  out(): string;
  err(): string;
}

export function fakeContext(cwd = process.cwd()): FakeContext {
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  let out = "";
  let err = "";
  stdout.on("data", (d) => {
    out += d;
  });
  stderr.on("data", (d) => {
    err += d;
  });
  return {
    cwd,
    env: { ...process.env },
    stdout,
    stderr,
    signal: new AbortController().signal,
    out: () => out,
    err: () => err,
  };
}
