// A CoreHost that reaches a lab guest's filesystem through its agent, so host-side tests and
// benchmarks drive the core module in the guest with the same Core code that runs on a target,
// plus helpers to read what a plan is computed from (kallsyms, live code) in that guest.
import type { CoreHost, Patch } from "../kernel/core.js";
import { planPatch } from "../kernel/plan.js";
import { Kallsyms } from "../live/kallsyms.js";
import type { LabVM } from "./vm.js";

/** labCoreHost is CoreHost over a LabVM (reads, single writes and commands run in the guest). */
export function labCoreHost(vm: LabVM): CoreHost {
  const shq = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;
  return {
    async readFile(path) {
      return (await vm.readFile(path)).toString("utf8");
    },
    async writeFile(path, data) {
      // The agent's writeFile is one writeFileSync: one write(2) for a page or less.
      await vm.writeFile(path, data);
    },
    async exists(path) {
      return (await vm.exec(`test -e ${shq(path)}`)).code === 0;
    },
    async readdir(path) {
      const r = await vm.exec(["ls", "-1", path]);
      if (r.code !== 0) throw new Error(`listing ${path} in the lab guest: ${r.stderr.trim()}`);
      return r.stdout.split("\n").filter(Boolean);
    },
    async exec(argv) {
      const r = await vm.exec(argv);
      return { code: r.code, stdout: r.stdout, stderr: r.stderr };
    },
  };
}

/** guestKallsyms reads the guest's /proc/kallsyms (the agent runs as root). */
export async function guestKallsyms(vm: LabVM): Promise<Kallsyms> {
  return new Kallsyms((await vm.readFile("/proc/kallsyms")).toString("utf8"));
}

/** guestKernelBytes reads live kernel memory in the guest through /proc/kcore (src/live/memory.ts). */
export async function guestKernelBytes(
  vm: LabVM,
  repo: string,
  addr: bigint,
  length: number,
): Promise<Uint8Array> {
  const js = `import { kcoreMemory } from ${JSON.stringify(`${repo}/dist/src/live/memory.js`)};
const mem = kcoreMemory();
process.stdout.write(Buffer.from(mem.read(BigInt(process.argv[1]), Number(process.argv[2]))).toString("hex"));
mem.close();`;
  const r = await vm.exec([
    "node",
    "--input-type=module",
    "-e",
    js,
    `0x${addr.toString(16)}`,
    String(length),
  ]);
  if (r.code !== 0)
    throw new Error(
      `reading ${length} bytes at 0x${addr.toString(16)} through /proc/kcore in the guest failed: ${r.stderr.trim()}`,
    );
  return Uint8Array.from(Buffer.from(r.stdout.trim(), "hex"));
}

/**
 * guestPatch computes a Patch replacing kernel function `target` by `replacement` of update
 * module `module`, from the guest's kallsyms and live bytes, by the rule apply uses
 * (src/kernel/plan.ts).
 */
export async function guestPatch(
  vm: LabVM,
  repo: string,
  ks: Kallsyms,
  target: string,
  replacement: string,
  module: string,
): Promise<Patch> {
  const addr = ks.one(target);
  const nstart = ks.one(replacement, module);
  const head = await guestKernelBytes(vm, repo, addr, 10);
  return planPatch({ name: target, addr, size: ks.sizeOf(addr) }, head, {
    addr: nstart,
    size: ks.sizeOf(nstart, module),
  });
}
