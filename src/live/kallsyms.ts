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
  // Module names repeat on every line of a module: one string each.
  const modules = new Map<string, string>();
  // One pass over the text without splitting it or running a regex per line: /proc/kallsyms
  // has over 100,000 lines, and apply parses it once per command.
  for (let at = 0; at < text.length; ) {
    let end = text.indexOf("\n", at);
    if (end < 0) end = text.length;
    const e = parseLine(text, at, end, modules);
    if (e) out.push(e);
    at = end + 1;
  }
  return out;
}

const LINE = /^([0-9a-f]+) (\S) (\S+)(?:\s+\[(\S+)\])?/;

/** isSpace is \s for the characters kallsyms lines can hold. */
const isSpace = (c: number) => c === 32 || (c >= 9 && c <= 13);

/**
 * parseLine reads one line, `ADDR T NAME` or `ADDR T NAME\t[MODULE]`; anything less regular
 * goes through the regular expression that defines the format.
 */
function parseLine(
  text: string,
  at: number,
  end: number,
  modules: Map<string, string>,
): KallsymsEntry | undefined {
  let p = at;
  for (; p < end; p++) {
    const c = text.charCodeAt(p);
    if (!((c >= 48 && c <= 57) || (c >= 97 && c <= 102))) break;
  }
  const regular =
    p > at &&
    p + 3 < end &&
    text.charCodeAt(p) === 32 &&
    !isSpace(text.charCodeAt(p + 1)) &&
    text.charCodeAt(p + 2) === 32;
  if (!regular) return slowLine(text.slice(at, end));
  let q = p + 3;
  while (q < end && !isSpace(text.charCodeAt(q))) q++;
  if (q === p + 3) return slowLine(text.slice(at, end));
  const entry: KallsymsEntry = {
    addr: BigInt(`0x${text.slice(at, p)}`),
    type: text[p + 1],
    name: text.slice(p + 3, q),
    module: undefined,
  };
  let r = q;
  while (r < end && isSpace(text.charCodeAt(r))) r++;
  if (r > q && r < end && text.charCodeAt(r) === 91 /* [ */) {
    let z = r + 1;
    while (z < end && !isSpace(text.charCodeAt(z))) z++;
    const close = text.lastIndexOf("]", z - 1);
    if (close > r + 1) {
      const raw = text.slice(r + 1, close);
      const mod = modules.get(raw);
      if (mod === undefined) modules.set(raw, raw);
      entry.module = mod ?? raw;
    }
  }
  return entry;
}

function slowLine(line: string): KallsymsEntry | undefined {
  const m = LINE.exec(line);
  return m ? { addr: BigInt(`0x${m[1]}`), type: m[2], name: m[3], module: m[4] } : undefined;
}

/** Kallsyms answers name and size questions about one snapshot of /proc/kallsyms. */
export class Kallsyms {
  readonly entries: KallsymsEntry[];
  /** Each image's symbol addresses, sorted (sizeOf). */
  private readonly sorted = new Map<string, BigUint64Array>();
  /** Entries by name: one entry, or several (most names are unique: no array for them). */
  private byName?: Map<string, KallsymsEntry | KallsymsEntry[]>;
  /** The names `expect` announced, and the index of their entries alone (made on first use). */
  private wanted?: Set<string>;
  private byWanted?: Map<string, KallsymsEntry | KallsymsEntry[]>;
  private byAddr?: Map<bigint, KallsymsEntry[]>;
  /** Entries of loadable modules by address: what `modulesAt` asks, without indexing the kernel's. */
  private moduleByAddr?: Map<bigint, KallsymsEntry[]>;
  private images?: Set<string | undefined>;

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

  /**
   * expect announces names that `named` will be asked about (run-pre knows them from its
   * objects' symbol tables). Indexing 100,000 names costs far more than the few thousand a
   * match asks about: those are indexed alone, and the whole table only if another is asked.
   */
  expect(names: Iterable<string>): void {
    this.wanted ??= new Set();
    for (const n of names) this.wanted.add(n);
    this.byWanted = undefined;
  }

  /** named returns every entry called `name`, in the kernel and in modules. */
  named(name: string): KallsymsEntry[] {
    let index = this.byName;
    if (!index && this.wanted?.has(name)) {
      const wanted = this.wanted;
      this.byWanted ??= indexByName(this.entries, (n) => wanted.has(n));
      index = this.byWanted;
    }
    if (!index) {
      this.byName = indexByName(this.entries, () => true);
      index = this.byName;
    }
    const v = index.get(name);
    return v === undefined ? [] : Array.isArray(v) ? v : [v];
  }

  /** at returns the entries at exactly addr (several names may share one address). */
  at(addr: bigint): KallsymsEntry[] {
    this.byAddr ??= groupBy(this.entries, (e) => e.addr);
    return this.byAddr.get(addr) ?? [];
  }

  /** modulesAt returns the entries of loadable modules at exactly addr (none for the kernel image). */
  modulesAt(addr: bigint): KallsymsEntry[] {
    this.moduleByAddr ??= groupBy(
      this.entries.filter((e) => e.module !== undefined),
      (e) => e.addr,
    );
    return this.moduleByAddr.get(addr) ?? [];
  }

  /** loaded tells whether the kernel image (undefined) or a module of that name has symbols here. */
  loaded(module: string | undefined): boolean {
    this.images ??= new Set(this.entries.map((e) => e.module));
    return this.images.has(module);
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
      // A typed array filled in place sorts natively (no comparator calls, no boxed array).
      const all = new BigUint64Array(this.entries.length);
      let n = 0;
      for (const e of this.entries) if (e.module === module) all[n++] = e.addr;
      list = all.slice(0, n).sort();
      this.sorted.set(key, list);
    }
    // The first address above addr (duplicates of one address are all passed over).
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

/** indexByName maps each name `keep` accepts to its entry, or entries. */
function indexByName(
  entries: KallsymsEntry[],
  keep: (name: string) => boolean,
): Map<string, KallsymsEntry | KallsymsEntry[]> {
  const map = new Map<string, KallsymsEntry | KallsymsEntry[]>();
  for (const e of entries) {
    if (!keep(e.name)) continue;
    const had = map.get(e.name);
    if (had === undefined) map.set(e.name, e);
    else if (Array.isArray(had)) had.push(e);
    else map.set(e.name, [had, e]);
  }
  return map;
}
