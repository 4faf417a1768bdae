// The running kernel, read from user space: this folder owns its symbol table (/proc/kallsyms,
// here) and its live memory (/proc/kcore, memory.ts), the one home run-pre and apply read them
// through. Imports only src/elf, src/errors and src/collections.
//
// Symbol sizes are derived the way the kernel's kallsyms derives them (distance to the next
// higher address in the same image), which is what the core module checks a plan's FSIZE against.
import { readFileSync } from "node:fs";
import { groupBy } from "../collections.js";
import { UserError } from "../errors.js";

/** KallsymsEntry is one line of /proc/kallsyms. */
export interface KallsymsEntry {
  addr: bigint;
  type: string;
  name: string;
  /** The module's name for a module symbol; undefined for the kernel image. */
  module?: string;
}

/** parseKallsyms parses /proc/kallsyms text. */
export function parseKallsyms(text: string): KallsymsEntry[] {
  const out: KallsymsEntry[] = [];
  for (const line of text.split("\n")) {
    const m = /^([0-9a-f]+) (\S) (\S+)(?:\s+\[(\S+)\])?/.exec(line);
    if (m) out.push({ addr: BigInt(`0x${m[1]}`), type: m[2], name: m[3], module: m[4] });
  }
  return out;
}

/** Kallsyms answers name and size questions about one snapshot of /proc/kallsyms. */
export class Kallsyms {
  readonly entries: KallsymsEntry[];
  private readonly sorted = new Map<string, bigint[]>();
  private byName?: Map<string, KallsymsEntry[]>;
  private byAddr?: Map<bigint, KallsymsEntry[]>;

  constructor(text: string) {
    this.entries = parseKallsyms(text);
    if (this.entries.length > 0 && this.entries.every((e) => e.addr === 0n))
      throw new UserError(
        "/proc/kallsyms shows only zero addresses: read it as root (kptr_restrict hides them otherwise)",
        { code: "permission_denied" },
      );
  }

  /** read loads /proc/kallsyms of this machine. */
  static read(path = "/proc/kallsyms"): Kallsyms {
    return new Kallsyms(readFileSync(path, "utf8"));
  }

  /** lookup returns the addresses of `name` in the kernel image (module undefined) or in `module`. */
  lookup(name: string, module?: string): bigint[] {
    return this.named(name)
      .filter((e) => e.module === module)
      .map((e) => e.addr);
  }

  /** named returns every entry called `name`, in the kernel and in modules. */
  named(name: string): KallsymsEntry[] {
    this.byName ??= groupBy(this.entries, (e) => e.name);
    return this.byName.get(name) ?? [];
  }

  /** at returns the entries at exactly addr (several names may share one address). */
  at(addr: bigint): KallsymsEntry[] {
    this.byAddr ??= groupBy(this.entries, (e) => e.addr);
    return this.byAddr.get(addr) ?? [];
  }

  /** one returns the single address of `name`, or throws when it is missing or ambiguous. */
  one(name: string, module?: string): bigint {
    const all = this.lookup(name, module);
    const where = module ? `module ${module}` : "the kernel";
    if (all.length !== 1)
      throw new Error(`symbol ${name} has ${all.length} addresses in ${where} (want exactly one)`);
    return all[0];
  }

  /** sizeOf is the distance from addr to the next higher symbol address of the same image. */
  sizeOf(addr: bigint, module?: string): bigint {
    const key = module ?? "";
    let list = this.sorted.get(key);
    if (!list) {
      list = [...new Set(this.entries.filter((e) => (e.module ?? "") === key).map((e) => e.addr))].sort(
        (a, b) => (a < b ? -1 : a > b ? 1 : 0),
      );
      this.sorted.set(key, list);
    }
    let lo = 0;
    let hi = list.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (list[mid] <= addr) lo = mid + 1;
      else hi = mid;
    }
    if (lo >= list.length)
      throw new Error(`no symbol above 0x${addr.toString(16)} in ${module ?? "the kernel"}: cannot size it`);
    return list[lo] - addr;
  }
}
