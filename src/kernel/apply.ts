// apply, undo and view on the machine whose kernel is being updated. apply runs the update's
// plan in this order, and on any failure undoes exactly what it did, in reverse:
//   lock → open and verify the package → check the running kernel is the update's →
//   load the core → which modules it patches are not loaded (their parts wait for the module
//   to load) → run-pre match every other target (nothing loaded yet) → load the update module
//   → resolve its kernel relocations from the match → keep a copy of the package (store.ts) →
//   hand parts, relocations and jumps to the core → the core applies under stop_machine.
// A module with a pending part loading later is matched by the helper (coming.ts), which the
// core runs while the module is coming. Nothing here writes kernel memory: the core module
// does, after checking the plan again.
//
// One command reads each source of truth about the running kernel once per plan: its identity
// (/proc/version, /sys/kernel/notes), /proc/kallsyms (parsed once, passed down) and /proc/kcore
// (opened once, read in cached blocks); planning asks the update module's sections once each.
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, rmSync, writeSync } from "node:fs";
import { dirname, join } from "node:path";
import { groupBy } from "../collections.js";
import { type AbortCode, UserError } from "../errors.js";
import { runningIdentity } from "../live/identity.js";
import { Kallsyms } from "../live/kallsyms.js";
import { kernelModuleName } from "../modname.js";
import { moduleName } from "../package/id.js";
import type { Manifest } from "../package/manifest.js";
import { type OpenedPackage, openPackage } from "../package/package.js";
import { crashPoint } from "../proc.js";
import {
  CORE_PROTOCOL,
  Core,
  CoreError,
  type CoreHost,
  localHost,
  type Patch,
  type Reloc,
  type Shadows,
  type UpdateStatus,
} from "./core.js";
import {
  type MatchedTarget,
  ModuleSections,
  matchTargets,
  partName,
  planJumps,
  planRelocs,
  type Scope,
} from "./matching.js";
import { recoverLeftovers } from "./recover.js";
import { removeStored, storePackage } from "./store.js";

const LOCK = "/run/ksplice.lock";

/** ApplyResult says what an apply did. */
export interface ApplyResult {
  id: string;
  description: string;
  status: UpdateStatus;
  /** Each target: live (its jump is in; where it runs) or pending (its module is not loaded). */
  targets: Array<{
    name: string;
    object: string;
    module?: string;
    state: "live" | "pending";
    addr?: string;
    via?: string;
  }>;
  loadedCore: boolean;
  /** With --partial: targets left out because their running code differs. */
  skipped: Array<{ name: string; object: string; reason: string }>;
  timings: ApplyTimings;
}

/**
 * ApplyTimings are the milliseconds apply spent in each step (summed over its attempts when a
 * module loading meanwhile made it plan again), and in all.
 */
export interface ApplyTimings {
  /** Waiting for the machine-wide lock. */
  lockMs: number;
  /** Clearing what a command cut short left. */
  recoverMs: number;
  /** Opening and verifying the package. */
  openMs: number;
  /** Checking the running kernel is the update's. */
  checkMs: number;
  /** Loading (or checking) the core module and clearing a leftover of this update. */
  coreMs: number;
  /** Reading and parsing /proc/kallsyms. */
  kallsymsMs: number;
  /** Finding which patched modules are not loaded (their parts wait). */
  pendingMs: number;
  /** Run-pre matching: every target against the running code, every relocation resolved. */
  matchMs: number;
  /** Loading the update module. */
  loadMs: number;
  /** Planning relocations and jumps from the match and the module's sections. */
  planMs: number;
  /** Keeping a copy of the package. */
  storeMs: number;
  /** Handing the plan to the core and its apply under stop_machine. */
  applyMs: number;
  totalMs: number;
}

const TIMING_KEYS = [
  "lockMs",
  "recoverMs",
  "openMs",
  "checkMs",
  "coreMs",
  "kallsymsMs",
  "pendingMs",
  "matchMs",
  "loadMs",
  "planMs",
  "storeMs",
  "applyMs",
  "totalMs",
] as const satisfies ReadonlyArray<keyof ApplyTimings>;

/** Laps measures consecutive steps: each lap adds the time since the previous one to its key. */
class Laps {
  readonly timings = Object.fromEntries(TIMING_KEYS.map((k) => [k, 0])) as unknown as ApplyTimings;
  private readonly start = performance.now();
  private last = this.start;
  lap(key: Exclude<keyof ApplyTimings, "totalMs">): void {
    const now = performance.now();
    this.timings[key] += now - this.last;
    this.last = now;
  }
  /** done sets the total and rounds every figure to 0.1 ms. */
  done(): ApplyTimings {
    this.timings.totalMs = performance.now() - this.start;
    for (const k of TIMING_KEYS) this.timings[k] = Math.round(this.timings[k] * 10) / 10;
    return this.timings;
  }
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

/** Locks this process holds, and how deep: withLock is re-entrant (an upgrade applies updates). */
const held = new Map<string, number>();

/** withLock runs fn holding the machine-wide ksplice lock (one apply or undo at a time). */
export async function withLock<T>(fn: () => Promise<T>, lockPath = LOCK): Promise<T> {
  const depth = held.get(lockPath) ?? 0;
  if (depth > 0) {
    held.set(lockPath, depth + 1);
    try {
      return await fn();
    } finally {
      held.set(lockPath, depth);
    }
  }
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
  held.set(lockPath, 1);
  try {
    return await fn();
  } finally {
    held.delete(lockPath);
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

/**
 * checkKernel refuses an update made for another kernel, before anything is loaded. It takes
 * the running kernel's identity when the caller has read it already, and returns it.
 */
export function checkKernel(
  m: Manifest,
  run: ReturnType<typeof runningIdentity> = runningIdentity(),
): ReturnType<typeof runningIdentity> {
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
  return run;
}

async function exec(host: CoreHost, argv: string[], what: string, code: AbortCode): Promise<void> {
  const r = await host.exec(argv);
  if (r.code !== 0)
    throw new UserError(`${what} (${argv.join(" ")}) failed: ${(r.stderr || r.stdout).trim()}`, { code });
}

/**
 * Step: which modules the update has targets in are not loaded now. Their parts wait: the core
 * makes them when the module loads. A module that is not even installed is named as missing.
 */
function pendingModules(m: Manifest, kallsyms: Kallsyms, release: string): Set<string> {
  const pending = new Set<string>();
  let installed: Set<string> | undefined;
  for (const mod of new Set(m.objects.flatMap((o) => (o.module ? [o.module] : [])))) {
    if (kallsyms.loaded(mod)) continue;
    installed ??= installedModules(release);
    if (!installed.has(kernelModuleName(mod)))
      throw new UserError(
        `update ${m.id} patches module ${mod}, which is neither loaded nor installed in /lib/modules/${release}`,
        { code: "module_missing" },
      );
    pending.add(mod);
  }
  return pending;
}

/**
 * Step: the hooks run when the update is applied, so none may use a module that is not loaded
 * (their references into it could not be filled yet).
 */
function checkHooks(m: Manifest, pending: Set<string>): void {
  const moduleOf = new Map(m.objects.map((o) => [o.path, o.module]));
  for (const h of m.hooks) {
    const fn = m.newFunctions.find((f) => f.section === h.section && f.name === h.symbol);
    const mod = fn ? moduleOf.get(fn.object) : undefined;
    if (mod && pending.has(mod))
      throw new UserError(
        `update ${m.id} has a ${h.kind} hook (${h.symbol}) in module ${mod}, which is not loaded: hooks run at apply, so load it (modprobe ${mod}) and apply again`,
        { code: "module_not_loaded" },
      );
  }
}

/** installedModules lists the modules /lib/modules/RELEASE has (modules.dep, modules.order), by kernel name. */
function installedModules(release: string): Set<string> {
  const out = new Set<string>();
  for (const list of ["modules.dep", "modules.order"]) {
    let text: string;
    try {
      text = readFileSync(`/lib/modules/${release}/${list}`, "utf8");
    } catch {
      continue;
    }
    for (const line of text.split("\n")) {
      const path = line.split(":")[0].trim();
      if (path) out.add(kernelModuleName(path));
    }
  }
  return out;
}

/**
 * Step: the core module is loaded (from the package when it is not) and speaks our protocol;
 * a loaded core of another version is replaced when it holds no applied update. True when
 * loaded now.
 */
async function ensureCore(core: Core, m: Manifest, dir: string): Promise<boolean> {
  if (await core.loaded()) {
    const version = await core.version();
    if (version === CORE_PROTOCOL) return false;
    const applied = (await listUpdates(core.host)).filter((u) => u.stage === "applied");
    if (applied.length)
      throw new UserError(
        `the loaded ksplice core speaks protocol ${version}, this ksplice ${CORE_PROTOCOL}, and it holds applied update(s) ${applied.map((u) => u.id).join(", ")}: undo them with the ksplice that applied them, then apply again`,
        { code: "load_failed" },
      );
    await exec(core.host, ["rmmod", "ksplice"], "unloading the older ksplice core", "load_failed");
  }
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

/** Step: load the update module (its code runs only once the core has spliced it in); returns its undo. */
async function loadUpdateModule(host: CoreHost, m: Manifest, dir: string): Promise<() => Promise<void>> {
  const name = m.module.name;
  if (existsSync(`/sys/module/${name}`))
    await exec(host, ["rmmod", name], `unloading a leftover ${name}`, "module_busy");
  await exec(host, ["insmod", join(dir, m.module.file)], `loading the update module ${name}`, "load_failed");
  return () => exec(host, ["rmmod", name], `unloading ${name}`, "module_busy");
}

/** Step: hand the plan to the core and have it apply it under stop_machine; returns the core's undo. */
async function handToCore(
  core: Core,
  m: Manifest,
  plan: {
    matched: MatchedTarget[];
    pending: Set<string>;
    helper?: string[];
    pins: bigint[];
    relocs: Reloc[];
    patches: Patch[];
    sections: ModuleSections;
  },
  log: (line: string) => void,
  undo: Array<() => Promise<void>>,
): Promise<UpdateStatus> {
  try {
    await core.newUpdate(m.id, m.module.name);
    undo.push(() => core.remove(m.id));
    // Every part, named by its functions: those matched now, and those of modules not loaded.
    const named = [
      ...plan.matched.map((t) => t.target),
      ...m.targets.filter((t) => t.module && plan.pending.has(t.module)),
    ];
    for (const [part, ts] of groupBy(named, (t) => partName(t.module)))
      await core.target(
        m.id,
        part,
        ts.map((t) => t.name),
      );
    if (plan.helper && m.objects.some((o) => o.module)) await core.setHelper(plan.helper);
    await core.pending(m.id, [...plan.pending].sort());
    await core.pin(m.id, plan.pins);
    await core.reloc(m.id, plan.relocs);
    await core.patch(m.id, plan.patches);
    for (const h of m.hooks)
      await core.hook(m.id, h.kind, (await plan.sections.addr(h.section)) + BigInt(h.offset));
    await core.describe(m.id, m.description);
    crashPoint("apply:planned");
    log(`applying ${m.id}: ${plan.patches.length} jump(s) under stop_machine`);
    return await core.apply(m.id);
  } catch (e) {
    throw toUserError(e);
  }
}

/** How often apply plans again when a module it patches loads or goes meanwhile. */
const MODULE_CHANGED_TRIES = 3;

/** ApplyOptions are what applyUpdate needs besides the package. */
export interface ApplyOptions {
  path: string;
  /** Apply what matches, leaving out functions whose running code differs. */
  partial?: boolean;
  log: (line: string) => void;
  /**
   * The program the core runs (with the module's name appended) when a module the update
   * patches loads later: this ksplice's `module-coming` command. Without it, an update with
   * a module that is not loaded is refused.
   */
  helper?: string[];
}

/** applyUpdate applies a package to the running kernel (run as root on the target). */
export async function applyUpdate(opts: ApplyOptions): Promise<ApplyResult> {
  requireRoot("ksplice apply");
  const laps = new Laps();
  return withLock(async () => {
    laps.lap("lockMs");
    for (const line of await recoverLeftovers()) opts.log(line);
    laps.lap("recoverMs");
    const pkg = await openPackage(opts.path);
    laps.lap("openMs");
    try {
      for (let attempt = 1; ; attempt++) {
        try {
          const res = await applyOnce(pkg, opts, laps);
          return { ...res, timings: laps.done() };
        } catch (e) {
          if (!(e instanceof UserError && e.code === "module_changed") || attempt >= MODULE_CHANGED_TRIES)
            throw e;
          laps.lap("applyMs"); // the refused hand-over and its undo
          opts.log("a module the update patches loaded or went while it was planned: planning again");
        }
      }
    } finally {
      pkg.close();
    }
  });
}

async function applyOnce(
  pkg: OpenedPackage,
  opts: ApplyOptions,
  laps: Laps,
): Promise<Omit<ApplyResult, "timings">> {
  const host = localHost;
  // What was done so far, undone in reverse when a later step fails.
  const undo: Array<() => Promise<void>> = [];
  try {
    const m = pkg.manifest;
    const { release } = checkKernel(m);
    laps.lap("checkMs");
    const core = new Core({ host });
    const loadedCore = await ensureCore(core, m, pkg.dir);
    await clearLeftover(core, m.id);
    laps.lap("coreMs");
    const kallsyms = Kallsyms.read();
    laps.lap("kallsymsMs");
    const pending = pendingModules(m, kallsyms, release);
    if (pending.size && !opts.helper)
      throw new UserError(
        `update ${m.id} patches module(s) ${[...pending].join(", ")}, not loaded, and this caller cannot follow a later load: load them and apply again`,
        { code: "module_not_loaded" },
      );
    checkHooks(m, pending);
    laps.lap("pendingMs");
    const scope: Scope = (mod) => mod === undefined || !pending.has(mod);
    const later = m.targets.filter((t) => !scope(t.module));
    opts.log(
      `matching ${m.targets.length - later.length} function(s) against the running kernel` +
        (later.length ? `; ${later.length} wait for module(s) ${[...pending].join(", ")} to load` : ""),
    );
    const matching = matchTargets(m, pkg.dir, { partial: opts.partial ?? false, scope, kallsyms });
    laps.lap("matchMs");
    undo.push(await loadUpdateModule(host, m, pkg.dir));
    crashPoint("apply:module-loaded");
    laps.lap("loadMs");
    const sections = new ModuleSections(m.module.name, host);
    const relocs = await planRelocs(m, matching.relocs, sections);
    const patches = await planJumps(matching.matched, sections);
    laps.lap("planMs");
    const unstore = storePackage(pkg);
    undo.push(async () => unstore());
    laps.lap("storeMs");
    const status = await handToCore(
      core,
      m,
      { ...matching, pending, helper: opts.helper, relocs, patches, sections },
      opts.log,
      undo,
    );
    laps.lap("applyMs");
    undo.length = 0;
    return {
      id: m.id,
      description: m.description,
      status,
      loadedCore,
      skipped: matching.skipped,
      targets: [
        ...matching.matched.map(({ fn, target }) => ({
          name: fn.name,
          object: fn.object,
          ...(target.module ? { module: target.module } : {}),
          state: "live" as const,
          addr: `0x${fn.addr.toString(16)}`,
          ...(fn.via ? { via: fn.via.module } : {}),
        })),
        ...later.map((t) => ({
          name: t.name,
          object: t.object,
          module: t.module,
          state: "pending" as const,
        })),
      ],
    };
  } catch (e) {
    for (const u of undo.reverse()) await u().catch(() => {});
    throw e;
  }
}

/** undoUpdate reverses an applied update and unloads its module. */
export async function undoUpdate(opts: { id: string; log: (line: string) => void }): Promise<UpdateStatus> {
  requireRoot("ksplice undo");
  const host = localHost;
  return withLock(async () => {
    for (const line of await recoverLeftovers(host)) opts.log(line);
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
    crashPoint("undo:reversed");
    await core.remove(opts.id).catch(toThrow);
    removeStored(opts.id);
    const name = moduleName(opts.id);
    await exec(host, ["rmmod", name], `unloading ${name}`, "module_busy");
    return st;
  });
}

function toThrow(e: unknown): never {
  throw toUserError(e);
}

/** listShadows returns the core's accounting of shadow data (none when the core is not loaded). */
export async function listShadows(host: CoreHost = localHost): Promise<Shadows> {
  const core = new Core({ host });
  return (await core.loaded()) ? core.shadows() : [];
}

/** listUpdates returns the status of every update the core knows (applied first). */
export async function listUpdates(host: CoreHost = localHost): Promise<UpdateStatus[]> {
  const core = new Core({ host });
  if (!(await core.loaded())) return [];
  const out: UpdateStatus[] = [];
  for (const id of await core.list()) out.push(await core.status(id));
  return out.sort((a, b) => a.appliedAt - b.appliedAt || a.id.localeCompare(b.id));
}
