// apply, undo and view on the machine whose kernel is being updated. apply runs the update's
// plan in this order, and on any failure undoes exactly what it did, in reverse:
//   lock → open and verify the package → check the running kernel is the update's →
//   load the core → run-pre match every target (nothing loaded yet) → load the update module →
//   resolve its kernel relocations from the match → hand relocations and jumps to the core →
//   the core applies under stop_machine.
// Nothing here writes kernel memory: the core module does, after checking the plan again.
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, rmSync, writeSync } from "node:fs";
import { dirname, join } from "node:path";
import { ElfFile } from "../elf/reader.js";
import { type AbortCode, UserError } from "../errors.js";
import { runningIdentity } from "../live/identity.js";
import { Kallsyms } from "../live/kallsyms.js";
import { kcoreMemory } from "../live/memory.js";
import { kernelModuleName } from "../modname.js";
import { isUpdateModule, moduleName } from "../package/id.js";
import type { Manifest, ManifestTarget } from "../package/manifest.js";
import { openPackage } from "../package/package.js";
import { type MatchedFunction, RunPre } from "../runpre/match.js";
import {
  Core,
  CoreError,
  type CoreHost,
  localHost,
  moduleSection,
  type Patch,
  type Reloc,
  type UpdateStatus,
} from "./core.js";
import { planPatch } from "./plan.js";

const LOCK = "/run/ksplice.lock";

/** ApplyResult says what an apply did. */
export interface ApplyResult {
  id: string;
  description: string;
  status: UpdateStatus;
  targets: Array<{ name: string; object: string; module?: string; addr: string; via?: string }>;
  loadedCore: boolean;
  /** With --partial: targets left out because their running code differs. */
  skipped: Array<{ name: string; object: string; reason: string }>;
}

/** toUserError turns a refusal of the core module into the user-facing error with its code. */
export function toUserError(e: unknown): unknown {
  if (!(e instanceof CoreError)) return e;
  if (e.code === "code_busy") {
    // The core reports "COMM PID SYMBOL+OFF/SIZE" per task found in the code being replaced.
    const tasks = e.conflicts.map((c) => {
      const m = /^(.*) (\d+) (\S+(?: \[\S+\])?)$/.exec(c);
      return m ? `${m[1]} (pid ${m[2]}) in ${m[3]}` : c;
    });
    return new UserError(
      `${e.message.replace(/: code_busy.*$/s, "")}: code_busy: the code is in use by ${tasks.join("; ")}; try again when the task(s) have left it`,
      {
        code: "code_busy",
        cause: e,
      },
    );
  }
  if (e.code === "call_failed")
    return new UserError(
      `${e.message}: a pre or check hook of the update returned an error, so nothing was changed`,
      { code: "call_failed", cause: e },
    );
  return new UserError(e.message, { code: e.code === "bad_command" ? "call_failed" : e.code, cause: e });
}

/** withLock runs fn holding the machine-wide ksplice lock (one apply or undo at a time). */
export async function withLock<T>(fn: () => Promise<T>, lockPath = LOCK): Promise<T> {
  let fd: number | undefined;
  mkdirSync(dirname(lockPath), { recursive: true });
  for (let attempt = 0; fd === undefined; attempt++) {
    try {
      fd = openSync(lockPath, "wx", 0o600);
      writeSync(fd, `${process.pid}\n`);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "EACCES" || (e as NodeJS.ErrnoException).code === "EPERM")
        throw new UserError(`cannot take ${lockPath}: ${(e as Error).message} (run as root)`, {
          code: "permission_denied",
        });
      if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
      const holder = Number(readFileSync(lockPath, "utf8").trim() || "0");
      if (!holder || !existsSync(`/proc/${holder}`)) {
        rmSync(lockPath, { force: true }); // left by a process that died
        continue;
      }
      if (attempt > 600)
        throw new UserError(`another ksplice (pid ${holder}) holds ${lockPath}; try again when it finishes`, {
          code: "locked",
        });
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  try {
    return await fn();
  } finally {
    closeSync(fd);
    rmSync(lockPath, { force: true });
  }
}

/** requireRoot refuses early, with a clear message, when not run as root. */
export function requireRoot(what: string): void {
  if (typeof process.getuid === "function" && process.getuid() !== 0)
    throw new UserError(
      `${what} needs root: it loads kernel modules and writes /sys/kernel/ksplice (run it with sudo)`,
      {
        code: "permission_denied",
      },
    );
}

/** checkKernel refuses an update made for another kernel, before anything is loaded. */
export function checkKernel(m: Manifest, root = "/"): void {
  const run = runningIdentity(root);
  if (run.release !== m.kernel.release)
    throw new UserError(
      `update ${m.id} is for kernel ${m.kernel.release}, but this kernel is ${run.release}`,
      { code: "wrong_kernel" },
    );
  if (m.kernel.buildId && run.buildId && m.kernel.buildId !== run.buildId)
    throw new UserError(
      `update ${m.id} is for build ${m.kernel.buildId} of ${m.kernel.release}, but the running kernel is build ${run.buildId}`,
      { code: "wrong_kernel" },
    );
}

async function exec(host: CoreHost, argv: string[], what: string, code: AbortCode): Promise<void> {
  const r = await host.exec(argv);
  if (r.code !== 0)
    throw new UserError(`${what} (${argv.join(" ")}) failed: ${(r.stderr || r.stdout).trim()}`, { code });
}

/** ModuleSections reads (once each) where a loaded module's sections are. */
class ModuleSections {
  private readonly cache = new Map<string, bigint>();
  constructor(
    private readonly module: string,
    private readonly host: CoreHost,
  ) {}
  async addr(section: string): Promise<bigint> {
    let v = this.cache.get(section);
    if (v === undefined) {
      v = await moduleSection(this.module, section, this.host);
      this.cache.set(section, v);
    }
    return v;
  }
}

/** MatchedTarget is a target of the update with where it runs now and its first bytes there. */
interface MatchedTarget {
  target: ManifestTarget;
  fn: MatchedFunction;
  head: Uint8Array;
}

/** Matching is what run-pre proved: the targets found, those left out, every kernel address the module needs. */
interface Matching {
  matched: MatchedTarget[];
  skipped: ApplyResult["skipped"];
  /** Address of each of the manifest's relocations' symbols, in order. */
  symbols: bigint[];
  /** __this_module of each loadable module the update patches or refers to: the core pins them. */
  pins: bigint[];
}

/**
 * Step: every module the update has targets in must be loaded now. One that is installed but
 * not loaded cannot be patched yet (a later load is not followed); one that is not even
 * installed is named as missing.
 */
function checkModules(m: Manifest, kallsyms: Kallsyms, release: string): void {
  const loaded = new Set(kallsyms.entries.map((e) => e.module));
  for (const mod of new Set(m.objects.flatMap((o) => (o.module ? [o.module] : [])))) {
    if (loaded.has(mod)) continue;
    if (!moduleInstalled(mod, release))
      throw new UserError(
        `update ${m.id} patches module ${mod}, which is neither loaded nor installed in /lib/modules/${release}`,
        { code: "module_missing" },
      );
    throw new UserError(
      `update ${m.id} patches module ${mod}, which is not loaded: load it (modprobe ${mod}) and apply again; following a module loaded later is not supported yet`,
      { code: "module_not_loaded" },
    );
  }
}

/** moduleInstalled tells whether /lib/modules/RELEASE lists a module of that name (modules.dep). */
function moduleInstalled(module: string, release: string): boolean {
  const want = kernelModuleName(module);
  for (const list of ["modules.dep", "modules.order"]) {
    let text: string;
    try {
      text = readFileSync(`/lib/modules/${release}/${list}`, "utf8");
    } catch {
      continue;
    }
    for (const line of text.split("\n")) {
      const path = line.split(":")[0].trim();
      if (path && kernelModuleName(path) === want) return true;
    }
  }
  return false;
}

/** pinsFor lists the __this_module of each loadable module holding a target or a relocation's symbol. */
function pinsFor(m: Manifest, kallsyms: Kallsyms, symbols: bigint[]): bigint[] {
  const modules = new Set(m.objects.flatMap((o) => (o.module ? [o.module] : [])));
  for (const addr of symbols)
    for (const e of kallsyms.at(addr)) if (e.module && !isUpdateModule(e.module)) modules.add(e.module);
  return [...modules].sort().map((mod) => kallsyms.one("__this_module", mod));
}

/** Step: the core module is loaded (from the package when it is not); true when loaded now. */
async function ensureCore(core: Core, m: Manifest, dir: string): Promise<boolean> {
  if (await core.loaded()) return false;
  if (!m.core)
    throw new UserError(`the ksplice core is not loaded and update ${m.id} does not carry it`, {
      code: "not_loaded",
    });
  return core.ensureLoaded(join(dir, m.core.file)).catch((e) => {
    throw toUserError(e);
  });
}

/** Step: refuse an update that is applied; forget one an aborted run left half made. */
async function clearLeftover(core: Core, id: string): Promise<void> {
  if (!(await core.list()).includes(id)) return;
  if ((await core.status(id)).stage === "applied")
    throw new UserError(`update ${id} is already applied`, { code: "already_applied" });
  await core.remove(id);
}

/**
 * Step: run-pre match every target against the running kernel (nothing is loaded yet) and
 * resolve every kernel relocation. With `partial`, targets whose running code differs are left
 * out, as long as one matches.
 */
function matchTargets(m: Manifest, dir: string, partial: boolean): Matching {
  const kallsyms = Kallsyms.read();
  checkModules(m, kallsyms, runningIdentity().release);
  const mem = kcoreMemory();
  try {
    const runpre = new RunPre(kallsyms, mem);
    for (const o of m.objects)
      runpre.addObject(o.path, ElfFile.parse(readFileSync(join(dir, o.pre)), o.pre), o.module);
    const matched: MatchedTarget[] = [];
    const skipped: ApplyResult["skipped"] = [];
    for (const target of m.targets) {
      try {
        const fn = runpre.matchFunction(target.object, target.name);
        matched.push({ target, fn, head: mem.read(fn.addr, 10) });
      } catch (e) {
        const differs = e instanceof UserError && (e.code === "no_match" || e.code === "failed_to_find");
        if (!partial || !differs) throw e;
        skipped.push({ name: target.name, object: target.object, reason: e.message });
      }
    }
    if (matched.length === 0 && m.targets.length > 0)
      throw new UserError(
        `no function of update ${m.id} matches the running kernel:\n${skipped.map((x) => x.reason).join("\n")}`,
        { code: "no_match" },
      );
    const symbols = m.relocations.map((r) => runpre.addressOf(r.object, r.preSymbol, r.local));
    return { matched, skipped, symbols, pins: pinsFor(m, kallsyms, symbols) };
  } finally {
    mem.close();
  }
}

/** Step: load the update module (its code runs only once the core has spliced it in); returns its undo. */
async function loadUpdateModule(host: CoreHost, m: Manifest, dir: string): Promise<() => Promise<void>> {
  const name = m.module.name;
  if (existsSync(`/sys/module/${name}`))
    await exec(host, ["rmmod", name], `unloading a leftover ${name}`, "module_busy");
  await exec(host, ["insmod", join(dir, m.module.file)], `loading the update module ${name}`, "load_failed");
  return () => exec(host, ["rmmod", name], `unloading ${name}`, "module_busy");
}

/** Step: where each kernel relocation's field is in the loaded module, and its symbol's address. */
async function planRelocs(m: Manifest, symbols: bigint[], sections: ModuleSections): Promise<Reloc[]> {
  const out: Reloc[] = [];
  for (const [i, r] of m.relocations.entries())
    out.push({
      dest: (await sections.addr(r.section)) + BigInt(r.offset),
      type: r.type,
      symbol: symbols[i],
      addend: BigInt(r.addend),
    });
  return out;
}

/** Step: the jump for each matched target, to its replacement in the loaded module. */
async function planJumps(matched: MatchedTarget[], sections: ModuleSections): Promise<Patch[]> {
  const out: Patch[] = [];
  for (const { target, fn, head } of matched) {
    const addr = await sections.addr(target.replacement.section);
    out.push(planPatch(fn, head, { addr, size: BigInt(target.replacement.size) }));
  }
  return out;
}

/** Step: hand the plan to the core and have it apply it under stop_machine; returns the core's undo. */
async function handToCore(
  core: Core,
  m: Manifest,
  plan: { pins: bigint[]; relocs: Reloc[]; patches: Patch[]; sections: ModuleSections },
  log: (line: string) => void,
  undo: Array<() => Promise<void>>,
): Promise<UpdateStatus> {
  try {
    await core.newUpdate(m.id, m.module.name);
    undo.push(() => core.remove(m.id));
    await core.pin(m.id, plan.pins);
    await core.reloc(m.id, plan.relocs);
    await core.patch(m.id, plan.patches);
    for (const h of m.hooks)
      await core.hook(m.id, h.kind, (await plan.sections.addr(h.section)) + BigInt(h.offset));
    await core.describe(m.id, m.description);
    log(`applying ${m.id}: ${plan.patches.length} jump(s) under stop_machine`);
    return await core.apply(m.id);
  } catch (e) {
    throw toUserError(e);
  }
}

/** applyUpdate applies a package to the running kernel (run as root on the target). */
export async function applyUpdate(opts: {
  path: string;
  /** Apply what matches, leaving out functions whose running code differs. */
  partial?: boolean;
  log: (line: string) => void;
}): Promise<ApplyResult> {
  requireRoot("ksplice apply");
  const host = localHost;
  return withLock(async () => {
    const pkg = await openPackage(opts.path);
    // What was done so far, undone in reverse when a later step fails.
    const undo: Array<() => Promise<void>> = [];
    try {
      const m = pkg.manifest;
      checkKernel(m);
      const core = new Core({ host });
      const loadedCore = await ensureCore(core, m, pkg.dir);
      await clearLeftover(core, m.id);
      opts.log(`matching ${m.targets.length} function(s) against the running kernel`);
      const { matched, skipped, symbols, pins } = matchTargets(m, pkg.dir, opts.partial ?? false);
      undo.push(await loadUpdateModule(host, m, pkg.dir));
      const sections = new ModuleSections(m.module.name, host);
      const relocs = await planRelocs(m, symbols, sections);
      const patches = await planJumps(matched, sections);
      const status = await handToCore(core, m, { pins, relocs, patches, sections }, opts.log, undo);
      undo.length = 0;
      return {
        id: m.id,
        description: m.description,
        status,
        loadedCore,
        skipped,
        targets: matched.map(({ fn, target }) => ({
          name: fn.name,
          object: fn.object,
          ...(target.module ? { module: target.module } : {}),
          addr: `0x${fn.addr.toString(16)}`,
          ...(fn.via ? { via: fn.via.module } : {}),
        })),
      };
    } catch (e) {
      for (const u of undo.reverse()) await u().catch(() => {});
      throw e;
    } finally {
      pkg.close();
    }
  });
}

/** undoUpdate reverses an applied update and unloads its module. */
export async function undoUpdate(opts: { id: string; log: (line: string) => void }): Promise<UpdateStatus> {
  requireRoot("ksplice undo");
  const host = localHost;
  return withLock(async () => {
    const core = new Core({ host });
    if (!(await core.loaded()) || !(await core.list()).includes(opts.id))
      throw new UserError(`update ${opts.id} is not applied (ksplice view lists what is)`, {
        code: "not_applied",
      });
    const before = await core.status(opts.id);
    if (before.stage !== "applied")
      throw new UserError(`update ${opts.id} is not applied (it is ${before.stage})`, {
        code: "not_applied",
      });
    let st: UpdateStatus;
    try {
      st = await core.reverse(opts.id);
    } catch (e) {
      if (e instanceof CoreError && e.code === "module_busy")
        throw new UserError(
          `update ${opts.id} cannot be undone: update(s) ${e.conflicts.join(", ")} stack on it; undo them first`,
          {
            code: "module_busy",
          },
        );
      throw toUserError(e);
    }
    await core.remove(opts.id).catch(toThrow);
    const name = moduleName(opts.id);
    await exec(host, ["rmmod", name], `unloading ${name}`, "module_busy");
    return st;
  });
}

function toThrow(e: unknown): never {
  throw toUserError(e);
}

/** listUpdates returns the status of every update the core knows (applied first). */
export async function listUpdates(host: CoreHost = localHost): Promise<UpdateStatus[]> {
  const core = new Core({ host });
  if (!(await core.loaded())) return [];
  const out: UpdateStatus[] = [];
  for (const id of await core.list()) out.push(await core.status(id));
  return out.sort((a, b) => a.appliedAt - b.appliedAt || a.id.localeCompare(b.id));
}
