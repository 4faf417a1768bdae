// Shell commands in a lab guest for lab tests: sh returns what happened, ok insists on exit 0.
import assert from "node:assert/strict";
import type { LabVM } from "../../src/lab/index.js";

/** sh runs a shell command in the guest and returns its exit code and output. */
export async function sh(vm: LabVM, cmd: string, timeoutMs = 300_000) {
  const r = await vm.exec(["sh", "-c", cmd], { timeoutMs });
  return { code: r.code, out: r.stdout, err: r.stderr };
}

/** ok runs a shell command in the guest, asserts it exited 0 and returns its standard output. */
export async function ok(vm: LabVM, cmd: string): Promise<string> {
  const r = await sh(vm, cmd);
  assert.equal(r.code, 0, `${cmd}\n${r.out}${r.err}`);
  return r.out;
}
