// Folder src/runpre: run-pre matching of pre code against the running kernel's memory. Reads
// the live kernel only through src/live; must not import src/kernel, src/update, src/kbuild or
// src/lab.
//
// Run-pre matching: proves that the pre code of an update is the code the running kernel runs,
// and learns from that proof the addresses the new code needs.
//
// How it works. The pre objects are built exactly as the kernel's own build made them (no
// -ffunction-sections), so each of their sections sits whole in the running kernel: once one
// function of a section is found, every other symbol of that section is at a known distance.
// Matching a function compares it with live memory (read through /proc/kcore) instruction by
// instruction:
//   - sites the kernel rewrites (ftrace, return thunks, alternatives, ... see sites.ts) may
//     differ in content, not in length;
//   - relative branches must be of the same kind; a branch inside the function must land on
//     the instruction that corresponds to its pre target, one leaving it tells where the
//     target lives;
//   - other instructions must be byte-equal outside relocated fields; each relocated field,
//     read from live memory, says where its target is: a section's base (for this object's
//     own sections), a global symbol's address, or the live copy of a string literal, which
//     must hold the same characters.
// Everything learned must agree with everything learned before and with /proc/kallsyms.
// A function name with several candidates in kallsyms (static functions with one name in many
// files, identical out-of-line copies) is decided by the match itself: only the copy whose
// code and references agree is taken; if several still do, a sibling in the same section
// decides. A function whose entry was redirected by an earlier ksplice update is followed to
// the replacement code that runs now.

import { contentKey, ObjectUnits, type Target, type Unit, type UnitReloc } from "../diff/units.js";
import { R_X86_64, relocInfo, SHF, STB } from "../elf/constants.js";
import type { ElfFile, ElfSection } from "../elf/reader.js";
import { UserError } from "../errors.js";
import type { Kallsyms, KallsymsEntry } from "../live/kallsyms.js";
import type { LiveMemory } from "../live/memory.js";
import { isUpdateModule } from "../package/id.js";
import { DecodeCursor, decode, format, type Insn } from "../x86/decode.js";
import { type Site, sitesOf } from "./sites.js";

export type { LiveMemory } from "../live/memory.js";

/** MatchedFunction is where a pre function runs now. */
export interface MatchedFunction {
  object: string;
  name: string;
  /** Address of the code that runs now (an earlier update's replacement when `via` is set). */
  addr: bigint;
  /** Size of that code (kallsyms). */
  size: bigint;
  /** The kernel's own copy, when the function was redirected by an earlier update. */
  via?: { addr: bigint; module: string };
  /**
   * Places of the running code the kernel rewrites while it runs (jump labels, static calls),
   * from the function's start; none in an earlier update's replacement.
   */
  runtimeSites: Array<{ offset: number; length: number; table: string }>;
}

interface PreObject {
  name: string;
  /** The loadable module the object is part of; undefined for the kernel image. */
  module?: string;
  elf: ElfFile;
  units: ObjectUnits;
  sites: Map<number, Site[]>;
  /** Units by name, made on first use (an object has thousands; matching asks for a few). */
  byName?: Map<string, Unit[]>;
}

/** A fact one comparison learned, committed only if the candidate is taken. */
type Fact =
  | { kind: "base"; obj: PreObject; section: ElfSection; addr: bigint; why: string }
  | { kind: "global"; name: string; image: string; addr: bigint; why: string };

/**
 * Miss is why one candidate place did not match: the running code differs (`code`), a
 * reference in it points elsewhere than the rest of the match says (`reference`), or ksplice
 * cannot compare this code (`limit`: a limitation of ours, not a fault of the update).
 */
interface Miss {
  at: number;
  reason: string;
  kind: "code" | "reference" | "limit";
}

const hex = (v: bigint | number) => `0x${v.toString(16)}`;
/** The ftrace site at a function's entry: the boot-time nop, or a call while traced (undefined: any byte). */
const FTRACE_SITES: Array<Array<number | undefined>> = [[0x0f, 0x1f, 0x44, 0x00, 0x00], [0xe8]];
const TEXT_TYPES = /^[tTwW]$/;

/** RunPre matches pre objects against one running kernel. */
export class RunPre {
  private readonly objects = new Map<string, PreObject>();
  private readonly bases = new Map<string, bigint>();
  private readonly globals = new Map<string, bigint>();
  private readonly matched = new Map<Unit, MatchedFunction>();
  // Per unit, what every comparison of it needs and does not depend on the place compared:
  // its decoded pre code and its rewritable sites (several candidates, siblings and the
  // relocations' users compare the same units again).
  private readonly decoded = new Map<Unit, Insn[]>();
  private readonly unitSites = new Map<Unit, Site[]>();

  constructor(
    readonly kallsyms: Kallsyms,
    readonly memory: LiveMemory,
  ) {}

  /** addObject registers a pre object (as the kernel's build made it) under its path, and its module if any. */
  addObject(name: string, elf: ElfFile, module?: string): void {
    // Every name matching asks kallsyms about is a symbol of some added object.
    this.kallsyms.expect(elf.symbols.map((s) => s.name));
    this.objects.set(name, {
      name,
      module,
      elf,
      units: new ObjectUnits(elf, { branches: false }),
      sites: sitesOf(elf),
    });
  }

  private object(name: string): PreObject {
    const o = this.objects.get(name);
    if (!o) throw new Error(`run-pre: object ${name} was not added`);
    return o;
  }

  private unit(obj: PreObject, name: string, kind?: "func" | "data"): Unit | undefined {
    if (!obj.byName) {
      obj.byName = new Map();
      for (const u of obj.units.units) {
        const l = obj.byName.get(u.name);
        if (l) l.push(u);
        else obj.byName.set(u.name, [u]);
      }
    }
    return obj.byName.get(name)?.find((u) => !kind || u.kind === kind);
  }

  /** matchFunction finds where function `name` of `object` runs, proving its code is the pre code. */
  matchFunction(object: string, name: string): MatchedFunction {
    const obj = this.object(object);
    const unit = this.unit(obj, name, "func");
    if (!unit)
      throw new UserError(`run-pre: ${name} is not a function of the pre object ${object}`, {
        code: "failed_to_find",
      });
    return this.matchUnit(obj, unit, true);
  }

  private baseKey(obj: PreObject, sec: ElfSection): string {
    return `${obj.name}#${sec.index}`;
  }

  private matchUnit(obj: PreObject, unit: Unit, trySiblings: boolean): MatchedFunction {
    const done = this.matched.get(unit);
    if (done) return done;
    const base = this.bases.get(this.baseKey(obj, unit.section));
    const inKernel = this.kallsyms
      .named(unit.name)
      .filter((e) => e.module === obj.module && TEXT_TYPES.test(e.type));
    const candidates = base !== undefined ? [base + BigInt(unit.start)] : inKernel.map((e) => e.addr);
    if (candidates.length === 0)
      throw new UserError(
        `run-pre: ${unit.name} (${obj.name}) is not in the running kernel's /proc/kallsyms: the update was built for other code`,
        { code: "failed_to_find" },
      );
    const tried = candidates.map((addr) => ({ addr, res: this.compare(obj, unit, addr) }));
    const ok = tried.filter((t) => !("miss" in t.res));
    if (ok.length === 1) return this.commit(obj, unit, ok[0].addr, ok[0].res as Accepted);
    if (ok.length === 0) {
      const best = tried.reduce((a, b) =>
        (b.res as { miss: Miss }).miss.at > (a.res as { miss: Miss }).miss.at ? b : a,
      );
      const miss = (best.res as { miss: Miss }).miss;
      const where =
        tried.length > 1
          ? ` (${tried.length} copies in kallsyms; the closest, at ${hex(best.addr)})`
          : ` at ${hex(best.addr)}`;
      const advice =
        miss.kind === "limit"
          ? "ksplice cannot compare this code yet; this is a limitation of ksplice, not a fault of the update."
          : miss.kind === "code"
            ? "The running code differs from the update's pre build: build the update from the exact source and configuration of this kernel."
            : "The running code refers elsewhere than the update's pre build does.";
      throw new UserError(
        `run-pre: ${unit.name} (${obj.name}) does not match the running kernel${where}: at +${hex(miss.at)} ${miss.reason}. ${advice}`,
        { code: "no_match" },
      );
    }
    // Several copies agree: a sibling with one candidate pins the section's base.
    if (trySiblings) {
      for (const sib of obj.units.unitsIn(unit.section)) {
        if (sib === unit || sib.kind !== "func" || sib.size === 0) continue;
        if (
          this.kallsyms.named(sib.name).filter((e) => e.module === obj.module && TEXT_TYPES.test(e.type))
            .length !== 1
        )
          continue;
        try {
          this.matchUnit(obj, sib, false);
        } catch {
          continue;
        }
        return this.matchUnit(obj, unit, false);
      }
    }
    throw new UserError(
      `run-pre: ${unit.name} (${obj.name}) matches ${ok.length} places in the running kernel (${ok.map((t) => hex(t.addr)).join(", ")}) and nothing tells them apart`,
      { code: "no_match" },
    );
  }

  private commit(obj: PreObject, unit: Unit, addr: bigint, res: Accepted): MatchedFunction {
    for (const f of res.facts) {
      if (f.kind === "base") this.bases.set(this.baseKey(f.obj, f.section), f.addr);
      else this.globals.set(globalKey(f.image, f.name), f.addr);
    }
    const module = res.via ? this.moduleOf(res.runs) : obj.module;
    const m: MatchedFunction = {
      object: obj.name,
      name: unit.name,
      addr: res.runs,
      // The matched length is exact; kallsyms' size runs on to the next symbol, past padding,
      // and for a module's last function (a .cold part, say) past the end of its text.
      size: BigInt(res.length),
      ...(res.via ? { via: { addr, module: module! } } : {}),
      // A site's length is the table's, or at most a 5-byte jump or nop.
      runtimeSites: res.via
        ? []
        : this.sitesIn(obj, unit)
            .filter((s) => s.runtime)
            .map((s) => ({ offset: s.offset, length: s.length ?? 5, table: s.table })),
    };
    this.matched.set(unit, m);
    return m;
  }

  /** moduleOf names the update module (an earlier update's) with a symbol at addr, if any. */
  private moduleOf(addr: bigint): string | undefined {
    return this.kallsyms.modulesAt(addr).find((e) => isUpdateModule(e.module))?.module;
  }

  /** knownBase returns the learned address of a pre object's section, if any. */
  private knownBase(obj: PreObject, sec: ElfSection): bigint | undefined {
    return this.bases.get(this.baseKey(obj, sec));
  }

  /**
   * compare checks unit against the code at addr. An earlier ksplice update shows as a jump
   * into an update module right where the pre code has something else: that code is compared.
   */
  private compare(obj: PreObject, unit: Unit, addr: bigint): Accepted | { miss: Miss } {
    const head = this.read(addr, 10);
    if (!head) return { miss: { at: 0, reason: "cannot be read from live memory", kind: "limit" } };
    const sites = this.sitesIn(obj, unit);
    const entrySite = sites.find((s) => s.offset === 0 && s.table === "__mcount_loc");
    const at = entrySite ? 5 : 0;
    if (head[at] === 0xe9 && unit.bytes[at] !== 0xe9) {
      // Follow the chain of earlier updates (each jumps to the next one's replacement) to the
      // code that runs now; a replacement keeps its own ftrace site, so its jump is after it.
      let runs: bigint | undefined;
      let h = head;
      let from = addr;
      let jat = at;
      for (let hop = 0; hop < 16 && h[jat] === 0xe9; hop++) {
        const dest = from + BigInt(jat + 5) + BigInt(Buffer.from(h).readInt32LE(jat + 1));
        if (!this.moduleOf(dest)) break;
        runs = dest;
        const next = this.read(dest, 10);
        if (!next) break;
        h = next;
        from = dest;
        jat = FTRACE_SITES.some((f) => f.every((b, i) => b === undefined || next[i] === b)) ? 5 : 0;
      }
      if (runs !== undefined) {
        const res = this.compareCode(obj, unit, runs, false);
        if ("miss" in res)
          return {
            miss: {
              ...res.miss,
              reason: `${res.miss.reason} (in the replacement code of an earlier update, at ${hex(runs)})`,
            },
          };
        return { ...res, via: true };
      }
    }
    return this.compareCode(obj, unit, addr, true);
  }

  private read(addr: bigint, length: number): Uint8Array | undefined {
    try {
      return this.memory.read(addr, length);
    } catch {
      return undefined;
    }
  }

  private sitesIn(obj: PreObject, unit: Unit): Site[] {
    let out = this.unitSites.get(unit);
    if (!out) {
      out = (obj.sites.get(unit.section.index) ?? [])
        .filter((s) => s.offset >= unit.start && s.offset < unit.start + unit.size)
        .map((s) => ({ ...s, offset: s.offset - unit.start }));
      this.unitSites.set(unit, out);
    }
    return out;
  }

  private preCode(unit: Unit): Insn[] {
    let out = this.decoded.get(unit);
    if (!out) {
      out = decode(unit.bytes);
      this.decoded.set(unit, out);
    }
    return out;
  }

  private compareCode(obj: PreObject, unit: Unit, addr: bigint, ownCopy: boolean): Accepted | { miss: Miss } {
    // The decoder of the live code holds wasm memory: freed however the comparison ends.
    const cursors: DecodeCursor[] = [];
    try {
      return this.compareLive(obj, unit, addr, ownCopy, cursors);
    } finally {
      for (const c of cursors) c.free();
    }
  }

  private compareLive(
    obj: PreObject,
    unit: Unit,
    addr: bigint,
    ownCopy: boolean,
    cursors: DecodeCursor[],
  ): Accepted | { miss: Miss } {
    let liveSize: bigint;
    try {
      liveSize = this.kallsyms.sizeOf(addr, this.moduleOf(addr));
    } catch {
      liveSize = BigInt(unit.size);
    }
    if (liveSize > 1n << 20n) liveSize = BigInt(unit.size) + 64n;
    const live = this.read(addr, Number(liveSize));
    if (!live)
      return {
        miss: {
          at: 0,
          reason: `${liveSize} bytes at ${hex(addr)} cannot be read from live memory`,
          kind: "limit",
        },
      };
    const facts: Fact[] = [];
    const miss = (at: number, reason: string, kind: Miss["kind"] = "reference") => ({
      miss: { at, reason, kind },
    });
    const learn = (f: Fact): string | undefined => {
      const known =
        f.kind === "base" ? this.knownBase(f.obj, f.section) : this.globals.get(globalKey(f.image, f.name));
      if (known !== undefined)
        return known === f.addr
          ? undefined
          : `${f.why}: it points to ${hex(f.addr)}, but that was found at ${hex(known)}`;
      for (const g of facts) {
        const same =
          g.kind === f.kind &&
          (f.kind === "base"
            ? g.kind === "base" && g.obj === f.obj && g.section === f.section
            : g.kind === "global" && g.name === f.name && g.image === f.image);
        if (same)
          return g.addr === f.addr
            ? undefined
            : `${f.why}: it points to ${hex(f.addr)}, but another reference points to ${hex(g.addr)}`;
      }
      const bad = this.checkKallsyms(f);
      if (bad) return bad;
      facts.push(f);
      return undefined;
    };
    if (ownCopy) {
      const bad = learn({
        kind: "base",
        obj,
        section: unit.section,
        addr: addr - BigInt(unit.start),
        why: `${unit.name} itself`,
      });
      if (bad) return miss(0, bad);
    }
    const pre = this.preCode(unit);
    const cursor = new DecodeCursor(live);
    cursors.push(cursor);
    const liveBuf = Buffer.from(live.buffer, live.byteOffset, live.byteLength);
    const sites = this.sitesIn(obj, unit);
    const relocs = [...unit.relocs].sort((a, b) => a.offset - b.offset);
    const map = new Map<number, number>();
    const branches: Array<{ pre: number; live: number; at: number }> = [];
    let lo = 0;
    let si = 0;
    let ri = 0;
    for (let pi = 0; pi < pre.length; ) {
      const p = pre[pi];
      const po = p.offset;
      map.set(po, lo);
      while (si < sites.length && sites[si].offset < po) si++;
      const site = sites[si]?.offset === po ? sites[si] : undefined;
      // A site shorter than its instruction (a lock prefix, .smp_locks) is a part of it that may
      // differ: the rest is compared as usual. Longer sites are skipped whole.
      const inner = site && site.length !== undefined && site.length < p.length ? site.length : 0;
      if (site && !inner) {
        const len = site.length ?? p.length;
        if (lo + len > live.length) return miss(po, "the running code ends early", "code");
        lo += len;
        const end = po + len;
        while (pi < pre.length && pre[pi].offset < end) pi++;
        if (pi < pre.length && pre[pi].offset !== end)
          return miss(po, `a ${site.table} site of ${len} bytes ends inside an instruction`, "limit");
        continue;
      }
      while (ri < relocs.length && relocs[ri].offset < po) ri++;
      const rs: UnitReloc[] = [];
      for (let k = ri; k < relocs.length && relocs[k].offset < po + p.length; k++) rs.push(relocs[k]);
      const l = cursor.at(lo);
      if (!l) return miss(po, `expected ${format(unit.bytes, po)}, but the running code ends`, "code");
      const differs = () => `expected ${format(unit.bytes, po)}, found ${format(live, lo, addr)}`;
      if (p.invalid) return miss(po, "the pre code does not decode", "limit");
      if (p.branch === "jmp" || p.branch === "jcc" || p.branch === "call") {
        if (l.branch !== p.branch || l.mnemonic !== p.mnemonic || l.cc !== p.cc)
          return miss(po, differs(), "code");
        const liveTarget = addr + BigInt(lo) + (l.target! - BigInt(lo));
        const r = rs.find((x) => relocInfo(x.type)?.pcRelative);
        if (r) {
          // S + A as the linker saw it: the branch target minus the field-to-end distance.
          const sa = liveTarget - BigInt(po + p.length - r.offset);
          const bad = this.targetFact(obj, r, sa, learn, unit.name);
          if (bad) return miss(po, bad);
        } else {
          const t = Number(p.target!);
          if (t >= 0 && t < unit.size) branches.push({ pre: t, live: Number(l.target! - 0n), at: po });
          else {
            const bad = learn({
              kind: "base",
              obj,
              section: unit.section,
              addr: liveTarget - BigInt(unit.start + t),
              why: `the branch at ${unit.name}+${hex(po)}`,
            });
            if (bad) return miss(po, bad);
          }
        }
      } else {
        if (l.length !== p.length) return miss(po, differs(), "code");
        for (let k = inner; k < p.length; k++) {
          const inField = rs.some((r) => po + k >= r.offset && po + k < r.offset + r.size);
          if (!inField && unit.bytes[po + k] !== live[lo + k]) return miss(po, differs(), "code");
        }
        for (const r of rs) {
          if (r.type === R_X86_64.NONE || r.size === 0) continue;
          const info = relocInfo(r.type);
          if (!info || (r.size !== 4 && r.size !== 8))
            return miss(po, `relocation type ${r.type} cannot be checked`, "limit");
          const fo = lo + (r.offset - po);
          const buf = liveBuf;
          let v =
            r.size === 8
              ? buf.readBigInt64LE(fo)
              : r.type === R_X86_64["32"]
                ? BigInt(buf.readUInt32LE(fo))
                : BigInt(buf.readInt32LE(fo));
          if (info.pcRelative) v += addr + BigInt(fo);
          else if (r.size === 4 && r.type !== R_X86_64["32"]) v = BigInt.asUintN(64, v);
          const bad = this.targetFact(obj, r, BigInt.asUintN(64, v), learn, unit.name);
          if (bad) return miss(po, bad);
        }
      }
      lo += l.length;
      pi++;
    }
    map.set(unit.size, lo);
    for (const b of branches) {
      const want = map.get(b.pre);
      if (want !== b.live)
        return miss(
          b.at,
          `the branch lands at running +${hex(b.live)}, not on the instruction matching pre +${hex(b.pre)}`,
        );
    }
    return { facts, runs: addr, length: lo };
  }

  /** targetFact turns "this relocated field says S+A is sa" into a fact, or a reason it is wrong. */
  private targetFact(
    obj: PreObject,
    r: UnitReloc,
    sa: bigint,
    learn: (f: Fact) => string | undefined,
    fn: string,
  ): string | undefined {
    const t: Target = r.target;
    const why = `the reference to ${describe(t)} in ${fn}+${hex(r.offset)}`;
    switch (t.kind) {
      case "symbol":
        return learn({
          kind: "global",
          name: t.name,
          image: obj.module ?? "",
          addr: BigInt.asUintN(64, sa - t.addend),
          why,
        });
      case "unit": {
        if ((t.unit.section.flags & BigInt(SHF.MERGE)) !== 0n) return undefined;
        return learn({
          kind: "base",
          obj,
          section: t.unit.section,
          addr: sa - BigInt(t.unit.start) - t.delta,
          why,
        });
      }
      case "string": {
        const start = sa - t.delta;
        const text = Buffer.from(t.text, "latin1");
        const got = this.read(start, text.length + 1);
        if (!got) return `${why}: the string at ${hex(start)} cannot be read`;
        if (Buffer.compare(Buffer.from(got), Buffer.concat([text, Buffer.from([0])])) !== 0)
          return `${why}: the running kernel has ${JSON.stringify(Buffer.from(got).toString("latin1"))} there`;
        return undefined;
      }
      case "constant": {
        const want = Buffer.from(t.hex, "hex");
        const got = this.read(sa - t.delta, want.length);
        if (!got || Buffer.compare(Buffer.from(got), want) !== 0)
          return `${why}: the constant differs in the running kernel`;
        return undefined;
      }
      case "section": {
        // An anonymous section (e.g. a jump table): its place must be consistent.
        const sec = obj.elf.sections.find((s) => s.name === t.section);
        if (!sec) return undefined;
        return learn({ kind: "base", obj, section: sec, addr: sa - t.delta, why });
      }
    }
  }

  /** checkKallsyms rejects a fact that contradicts /proc/kallsyms. */
  private checkKallsyms(f: Fact): string | undefined {
    if (f.kind === "global") {
      const all = this.globalCandidates(f.name, f.image || undefined).flat();
      if (all.length && !all.some((e) => e.addr === f.addr))
        return `${f.why}: it points to ${hex(f.addr)}, but kallsyms has ${f.name} at ${all.map((e) => hex(e.addr)).join(", ")}`;
      return undefined;
    }
    // Every named symbol of the section must be where kallsyms has one of that name, if any.
    const obj = f.obj;
    for (const u of obj.units.unitsIn(f.section)) {
      // A weak default's name belongs to its override; a size-less label proves nothing.
      if (u.symbol.bind === STB.WEAK || u.size === 0) continue;
      const all: KallsymsEntry[] = this.kallsyms.named(u.name).filter((e) => e.module === obj.module);
      if (all.length === 0) continue;
      const want = f.addr + BigInt(u.start);
      if (!all.some((e) => e.addr === want))
        return `${f.why}: that puts ${u.name} at ${hex(want)}, where kallsyms has no ${u.name}`;
    }
    return undefined;
  }

  /**
   * globalCandidates lists the kallsyms entries a global name can mean from code of `module`
   * (undefined: the kernel image), nearest first: the module's own, the kernel's, other
   * modules' (what it may import). Code of the kernel image sees only the kernel's.
   */
  private globalCandidates(name: string, module: string | undefined): KallsymsEntry[][] {
    const all = this.kallsyms.named(name).filter((e) => !isUpdateModule(e.module));
    if (module === undefined) return [all.filter((e) => e.module === undefined)];
    return [
      all.filter((e) => e.module === module),
      all.filter((e) => e.module === undefined),
      all.filter((e) => e.module !== undefined && e.module !== module),
    ];
  }

  /**
   * addressOf returns the running address of a symbol the new code refers to: a symbol of the
   * pre object `object` (local: learned by matching, never guessed from a name), or a global.
   */
  addressOf(object: string, name: string, local: boolean): bigint {
    const obj = this.object(object);
    if (!local) {
      const known = this.globals.get(globalKey(obj.module ?? "", name));
      if (known !== undefined) return known;
      // The nearest image that has the name decides: the object's module, then the kernel, then other modules.
      const tiers = this.globalCandidates(name, obj.module).filter((t) => t.length > 0);
      const unique = [...new Set((tiers[0] ?? []).map((e) => e.addr))];
      if (unique.length === 1) return unique[0];
      const u = this.unit(obj, name);
      if (!u)
        throw new UserError(
          unique.length
            ? `run-pre: ${name}, used by the new code, is ambiguous in /proc/kallsyms`
            : `run-pre: ${name}, used by the new code, is missing in /proc/kallsyms: no loaded image has it; if a module that is not loaded exports it (modinfo, or modules.symbols under /lib/modules), load that module and apply again`,
          {
            code: "failed_to_find",
          },
        );
      return this.localAddress(obj, u);
    }
    const u = this.unit(obj, name);
    if (!u)
      throw new UserError(
        `run-pre: ${name}, used by the new code, is not a symbol of the pre object ${object}`,
        { code: "failed_to_find" },
      );
    return this.localAddress(obj, u);
  }

  private localAddress(obj: PreObject, u: Unit): bigint {
    const base = () => this.knownBase(obj, u.section);
    if (base() === undefined && u.kind === "func") this.matchUnit(obj, u, true);
    if (base() === undefined) {
      // Match functions of this object that refer into u's section until its base is known.
      const users = obj.units.units.filter(
        (f) =>
          f.kind === "func" &&
          f.size > 0 &&
          f.relocs.some((r) => r.target.kind === "unit" && r.target.unit.section === u.section),
      );
      const siblings = obj.units.unitsIn(u.section).filter((f) => f.kind === "func" && f.size > 0);
      for (const f of [...siblings, ...users]) {
        if (base() !== undefined) break;
        try {
          this.matchUnit(obj, f, true);
        } catch {
          // Another user may still tell.
        }
      }
    }
    const b = base();
    if (b === undefined)
      throw new UserError(
        `run-pre: cannot locate ${u.name} (${obj.name}, section ${u.section.name}) in the running kernel: no matched code refers to it`,
        { code: "failed_to_find" },
      );
    return b + BigInt(u.start);
  }
}

interface Accepted {
  facts: Fact[];
  /** Address of the code that runs now, and its length as matched. */
  runs: bigint;
  length: number;
  via?: boolean;
}

function describe(t: Target): string {
  switch (t.kind) {
    case "symbol":
      return t.name;
    case "unit":
      return t.unit.name;
    default: {
      const key = contentKey(t);
      return key.length > 60 ? `${key.slice(0, 57)}...` : key;
    }
  }
}

/** globalKey names a global as seen from one image ("" for the kernel, else a module's name). */
function globalKey(image: string, name: string): string {
  return `${image}\0${name}`;
}
