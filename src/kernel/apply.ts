// apply, undo and view on the machine whose kernel is being updated. apply runs the update's
// plan in this order, and on any failure undoes exactly what it did, in reverse:
//   lock → open and verify the package → check the running kernel is the update's →
//   load the core → run-pre match every target (nothing loaded yet) → load the update module →
//   resolve its kernel relocations from the match → hand relocations and jumps to the core →
//   the core applies under stop_machine.
// Nothing here writes kernel memory: the core module does, after checking the plan again.
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, rmSync, writeSync } from "node:fs";
import { dirname, join } from "node:path";
import { UserError } from "../cli/errors.js";
import { ElfFile } from "../elf/reader.js";
import { type LiveMemory, type MatchedFunction, RunPre } from "../runpre/match.js";
import { runningIdentity } from "../update/identity.js";
import type { Manifest } from "../update/manifest.js";
import { openPackage } from "../update/package.js";
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
import { Kallsyms } from "./kallsyms.js";

/** FTRACE_NOP is the 5-byte nop the kernel leaves at a traceable function's entry. */
export const FTRACE_NOP = Buffer.from([0x0f, 0x1f, 0x44, 0x00, 0x00]);
const LOCK = "/run/ksplice.lock";

/** ApplyResult says what an apply did. */
export interface ApplyResult {
  id: string;
  description: string;
  status: UpdateStatus;
  targets: Array<{ name: string; object: string; addr: string; via?: string }>;
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

/** kcoreMemory reads live kernel memory through /proc/kcore (kept open for the run). */
export function kcoreMemory(path = "/proc/kcore"): LiveMemory & { close(): void } {
  const elf = ElfFile.open(path);
  return { read: (addr, len) => elf.readVirtual(addr, len), close: () => elf.close() };
}

async function exec(host: CoreHost, argv: string[], what: string, code: string): Promise<void> {
  const r = await host.exec(argv);
  if (r.code !== 0)
    throw new UserError(`${what} (${argv.join(" ")}) failed: ${(r.stderr || r.stdout).trim()}`, { code });
}

/** planPatch computes the jump for one matched function: after the ftrace site when there is one. */
export function planPatch(
  m: MatchedFunction,
  head: Uint8Array,
  replacement: { addr: bigint; size: bigint },
): Patch {
  const traced = Buffer.from(head.subarray(0, 5)).equals(FTRACE_NOP) || head[0] === 0xe8;
  const at = traced ? 5 : 0;
  if (m.size < BigInt(at + 5))
    throw new UserError(`${m.name} is ${m.size} bytes long: too short for a 5-byte jump`, {
      code: "no_match",
    });
  return {
    name: m.name,
    site: m.addr + BigInt(at),
    newAddr: replacement.addr,
    fstart: m.addr,
    fsize: m.size,
    nstart: replacement.addr,
    nsize: replacement.size,
    expected: head.subarray(at, at + 5),
  };
}

/** applyUpdate applies a package to the running kernel (run as root on the target). */
export async function applyUpdate(opts: {
  path: string;
  /** Apply what matches, leaving out functions whose running code differs. */
  partial?: boolean;
  log: (line: string) => void;
  host?: CoreHost;
}): Promise<ApplyResult> {
  requireRoot("ksplice apply");
  const host = opts.host ?? localHost;
  return withLock(async () => {
    const pkg = await openPackage(opts.path);
    const undo: Array<() => Promise<void>> = [];
    try {
      const m = pkg.manifest;
      checkKernel(m);
      const core = new Core({ host });
      let loadedCore = false;
      if (!(await core.loaded())) {
        if (!m.core)
          throw new UserError(`the ksplice core is not loaded and update ${m.id} does not carry it`, {
            code: "not_loaded",
          });
        loadedCore = await core.ensureLoaded(join(pkg.dir, m.core.file)).catch((e) => {
          throw toUserError(e);
        });
      }
      const known = await core.list();
      if (known.includes(m.id)) {
        const st = await core.status(m.id);
        if (st.stage === "applied")
          throw new UserError(`update ${m.id} is already applied`, { code: "already_applied" });
        await core.remove(m.id); // a leftover of an aborted run
      }

      opts.log(`matching ${m.targets.length} function(s) against the running kernel`);
      const kallsyms = Kallsyms.read();
      const mem = kcoreMemory();
      let matched: MatchedFunction[];
      const skipped: ApplyResult["skipped"] = [];
      let symbols: bigint[];
      let heads: Uint8Array[];
      const runpre = new RunPre(kallsyms, mem);
      try {
        for (const o of m.objects)
          runpre.addObject(o.path, ElfFile.parse(readFileSync(join(pkg.dir, o.pre)), o.pre));
        const targets: typeof m.targets = [];
        matched = [];
        for (const t of m.targets) {
          try {
            matched.push(runpre.matchFunction(t.object, t.name));
            targets.push(t);
          } catch (e) {
            // --partial leaves out functions whose running code differs, if any match.
            if (
              !opts.partial ||
              !(e instanceof UserError) ||
              !["no_match", "failed_to_find"].includes(e.code)
            )
              throw e;
            skipped.push({ name: t.name, object: t.object, reason: e.message });
          }
        }
        if (matched.length === 0 && m.targets.length > 0)
          throw new UserError(
            `no function of update ${m.id} matches the running kernel:\n${skipped.map((x) => x.reason).join("\n")}`,
            { code: "no_match" },
          );
        m.targets = targets;
        // Resolve every kernel relocation before loading anything.
        symbols = m.relocations.map((r) => runpre.addressOf(r.object, r.preSymbol, r.local));
        heads = matched.map((f) => mem.read(f.addr, 10));
      } finally {
        mem.close();
      }

      const modName = m.module.name;
      if (existsSync(`/sys/module/${modName}`))
        await exec(host, ["rmmod", modName], `unloading a leftover ${modName}`, "module_busy");
      await exec(
        host,
        ["insmod", join(pkg.dir, m.module.file)],
        `loading the update module ${modName}`,
        "load_failed",
      );
      undo.push(() => exec(host, ["rmmod", modName], `unloading ${modName}`, "module_busy"));
      const secCache = new Map<string, bigint>();
      const sec = async (name: string) => {
        let v = secCache.get(name);
        if (v === undefined) {
          v = await moduleSection(modName, name, host);
          secCache.set(name, v);
        }
        return v;
      };
      const relocs: Reloc[] = [];
      for (const [i, r] of m.relocations.entries()) {
        if (
          !(
            r.type in { R_X86_64_64: 1, R_X86_64_PC32: 1, R_X86_64_PLT32: 1, R_X86_64_32: 1, R_X86_64_32S: 1 }
          )
        )
          throw new UserError(`relocation ${r.type} for ${r.symbol} is not supported by the core`, {
            code: "bad_package",
          });
        relocs.push({
          dest: (await sec(r.section)) + BigInt(r.offset),
          type: r.type as Reloc["type"],
          symbol: symbols[i],
          addend: BigInt(r.addend),
        });
      }
      const patches: Patch[] = [];
      for (const [i, t] of m.targets.entries()) {
        const addr = await sec(t.replacement.section);
        patches.push(planPatch(matched[i], heads[i], { addr, size: BigInt(t.replacement.size) }));
      }
      try {
        await core.newUpdate(m.id, modName);
        undo.push(() => core.remove(m.id));
        await core.reloc(m.id, relocs);
        await core.patch(m.id, patches);
        for (const h of m.hooks) await core.hook(m.id, h.kind, (await sec(h.section)) + BigInt(h.offset));
        await core.describe(m.id, m.description);
        opts.log(`applying ${m.id}: ${patches.length} jump(s) under stop_machine`);
        const status = await core.apply(m.id);
        undo.length = 0;
        return {
          id: m.id,
          description: m.description,
          status,
          loadedCore,
          skipped,
          targets: matched.map((f) => ({
            name: f.name,
            object: f.object,
            addr: `0x${f.addr.toString(16)}`,
            ...(f.via ? { via: f.via.module } : {}),
          })),
        };
      } catch (e) {
        throw toUserError(e);
      }
    } catch (e) {
      for (const u of undo.reverse()) await u().catch(() => {});
      throw e;
    } finally {
      pkg.close();
    }
  });
}

/** undoUpdate reverses an applied update and unloads its module. */
export async function undoUpdate(opts: {
  id: string;
  log: (line: string) => void;
  host?: CoreHost;
}): Promise<UpdateStatus> {
  requireRoot("ksplice undo");
  const host = opts.host ?? localHost;
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
    await exec(host, ["rmmod", `ksplice_${opts.id}`], `unloading ksplice_${opts.id}`, "module_busy");
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
