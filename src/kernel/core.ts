// The running kernel, changed through the ksplice core module (kmod/core.c). This folder owns
// the core's sysfs protocol (here), jump planning (plan.ts) and apply/undo/view (apply.ts). It
// reads the package through src/package and the live kernel through src/live; it must not
// import src/update (create), src/kbuild or src/lab.
//
// This file: the user-space side of the core module. It loads it and drives /sys/kernel/ksplice/
// with the text protocol the module speaks. The module executes a plan and verifies each step; this file only formats the plan, splits it
// into writes the kernel accepts, and turns refusals into a typed CoreError that carries the
// module's abort code and conflicts. All filesystem and process access goes through CoreHost, so
// tests run it against a fake sysfs and the lab drives a guest's sysfs from the host.
import { closeSync, existsSync, openSync, readdirSync, readFileSync, writeSync } from "node:fs";
import { UserError } from "../errors.js";
import { ID_RULE_TEXT, isValidId } from "../package/id.js";
import { type HookKind, KERNEL_RELOC_TYPES, type KernelRelocType } from "../package/manifest.js";
import { runTool } from "../proc.js";

/** SYSFS_ROOT is where the core module publishes its files. */
export const SYSFS_ROOT = "/sys/kernel/ksplice";

/** MAX_WRITE is the most the module takes in one write(2) to control (a page, less its NUL). */
export const MAX_WRITE = 4095;

/**
 * CORE_PROTOCOL is the version of the control protocol this file speaks (the core's `version`
 * file; a core without one speaks 1). 2 added parts: modules loaded after an update.
 */
export const CORE_PROTOCOL = 2;

/** VMLINUX names the kernel image's part of an update (a module's part is named by the module). */
export const VMLINUX = "vmlinux";

/** Stage is an update's state as the module reports it. */
export type Stage = "preparing" | "applied" | "reversed";

/** AbortCause is why the module refused to apply or undo (or `none`). */
export type AbortCause =
  | "none"
  | "code_busy"
  | "module_busy"
  | "unexpected_code"
  | "already_patched"
  | "call_failed"
  | "module_changed"
  | "bad_plan";

/** CoreErrorCode is an abort cause, or what went wrong around the module. */
export type CoreErrorCode =
  | Exclude<AbortCause, "none">
  | "bad_command"
  | "not_loaded"
  | "load_failed"
  | "build_failed";

/** Reloc asks the module to store S + A (minus DEST when pc-relative) at DEST in the update module. */
export interface Reloc {
  dest: bigint;
  type: KernelRelocType;
  symbol: bigint;
  addend: bigint;
}

/** Patch is one jump: at apply, `jmp newAddr` is written at site, where `expected` is now. */
export interface Patch {
  name: string;
  site: bigint;
  newAddr: bigint;
  /** The function being replaced (checked against every task's stack on apply). */
  fstart: bigint;
  fsize: bigint;
  /** The replacement (checked on undo). */
  nstart: bigint;
  nsize: bigint;
  /** The 5 bytes at site now. */
  expected: Uint8Array;
  /** The part the jump belongs to: the target's module, or VMLINUX (the default). */
  part?: string;
}

/**
 * PartState is where an update stands in one image: live (its jumps are in), pending (the
 * module is not loaded; the jumps go in when it loads), coming (it is loading and the helper is
 * matching it), failed (it loaded, and runs unpatched: `reason` says why).
 */
export type PartState = "live" | "pending" | "coming" | "failed";

/** Part is an update's targets in one image: the kernel (VMLINUX) or one loadable module. */
export interface Part {
  module: string;
  state: PartState;
  /** The functions it replaces there. */
  names: string[];
  reason?: string;
}

/** UpdateStatus is everything /sys/kernel/ksplice/ID/ says about one update. */
export interface UpdateStatus {
  id: string;
  stage: Stage;
  abortCause: AbortCause;
  conflicts: string[];
  pauseNs: number;
  tries: number;
  appliedAt: number;
  description: string;
  /**
   * Each jump: the function, where, to where, the module it is in (absent: the kernel image),
   * the part it belongs to and whether it is written.
   */
  patches: { name: string; site: bigint; newAddr: bigint; module?: string; part: string; live: boolean }[];
  /** The update's parts (a core of protocol 1 reports none). */
  parts: Part[];
}

/** CoreError is a refusal by the core module (code = its abort cause) or a failure around it. */
export class CoreError extends Error {
  readonly code: CoreErrorCode;
  readonly conflicts: string[];
  constructor(code: CoreErrorCode, message: string, opts: { conflicts?: string[]; cause?: unknown } = {}) {
    super(message, { cause: opts.cause });
    this.name = "CoreError";
    this.code = code;
    this.conflicts = opts.conflicts ?? [];
  }
}

/** CoreHost is the filesystem and process access Core needs; swap it for tests or a remote guest. */
export interface CoreHost {
  readFile(path: string): Promise<string>;
  /** writeFile must issue exactly one write(2) of data (sysfs takes one command batch per write). */
  writeFile(path: string, data: string): Promise<void>;
  exists(path: string): Promise<boolean>;
  readdir(path: string): Promise<string[]>;
  exec(argv: string[]): Promise<{ code: number; stdout: string; stderr: string }>;
}

/** localHost is CoreHost on this machine. */
export const localHost: CoreHost = {
  async readFile(path) {
    return readFileSync(path, "utf8");
  },
  async writeFile(path, data) {
    const fd = openSync(path, "w");
    try {
      const buf = Buffer.from(data);
      const n = writeSync(fd, buf, 0, buf.length);
      if (n !== buf.length) throw new Error(`short write to ${path}: ${n} of ${buf.length} bytes`);
    } finally {
      closeSync(fd);
    }
  },
  async exists(path) {
    return existsSync(path);
  },
  async readdir(path) {
    return readdirSync(path);
  },
  exec(argv) {
    return runTool(argv[0], argv.slice(1));
  },
};

const hex = (v: bigint): string => v.toString(16);

/** splitWrites groups lines into chunks of at most `max` bytes, never splitting a line. */
export function splitWrites(lines: string[], max = MAX_WRITE): string[] {
  const chunks: string[] = [];
  let cur = "";
  for (const line of lines) {
    if (line.includes("\n"))
      throw new CoreError("bad_command", `control command contains a newline: ${JSON.stringify(line)}`);
    const l = `${line}\n`;
    if (Buffer.byteLength(l) > max)
      throw new CoreError("bad_command", `control command longer than ${max} bytes: ${line.slice(0, 80)}…`);
    if (cur && Buffer.byteLength(cur) + Buffer.byteLength(l) > max) {
      chunks.push(cur);
      cur = "";
    }
    cur += l;
  }
  if (cur) chunks.push(cur);
  return chunks;
}

/** relocLine formats a `reloc` command. */
export function relocLine(id: string, r: Reloc): string {
  return `${id} ${relocArgs(r)}`;
}

function relocArgs(r: Reloc): string {
  return `reloc ${hex(r.dest)} ${KERNEL_RELOC_TYPES[r.type]} ${hex(r.symbol)} ${r.addend}`;
}

/** patchLine formats a `patch` command. */
export function patchLine(id: string, p: Patch): string {
  return `${id} ${patchArgs(p)} ${p.part ?? VMLINUX}`;
}

function patchArgs(p: Patch): string {
  if (p.expected.length !== 5)
    throw new CoreError("bad_command", `patch ${p.name}: expected bytes must be 5, got ${p.expected.length}`);
  if (!/^\S+$/.test(p.name))
    throw new CoreError("bad_command", `patch name ${JSON.stringify(p.name)} must be one word`);
  const exp = Buffer.from(p.expected).toString("hex");
  return `patch ${hex(p.site)} ${hex(p.newAddr)} ${hex(p.fstart)} ${hex(p.fsize)} ${hex(p.nstart)} ${hex(p.nsize)} ${exp} ${p.name}`;
}

/** partLines formats the plan of one part whose module is loading: "ID part MODULE ...", then apply. */
export function partLines(
  id: string,
  module: string,
  plan: { pins: bigint[]; relocs: Reloc[]; patches: Patch[] },
): string[] {
  return [
    ...plan.pins.map((a) => `pin ${hex(a)}`),
    ...plan.relocs.map(relocArgs),
    ...plan.patches.map(patchArgs),
    "apply",
  ].map((l) => `${id} part ${module} ${l}`);
}

/** Shadows is the core's accounting of shadow data: per id (hex), how many and their bytes. */
export type Shadows = Array<{ id: string; count: number; bytes: number }>;

/** parseShadows reads the core's `shadows` file: "ID COUNT BYTES" per line (ID in hex). */
export function parseShadows(text: string): Shadows {
  return text
    .split("\n")
    .map((l) => /^([0-9a-f]+) (\d+) (\d+)$/.exec(l.trim()))
    .filter((m): m is RegExpExecArray => m !== null)
    .map((m) => ({ id: `0x${m[1]}`, count: Number(m[2]), bytes: Number(m[3]) }));
}

/** UpdateTarget is one function an update replaces, its part and where that part stands. */
export interface UpdateTarget {
  name: string;
  /** Its part: the module, or VMLINUX. */
  module: string;
  state: PartState;
  reason?: string;
}

/**
 * targetsOf lists an update's functions: those whose jump is written (live), then those of
 * parts waiting for their module (pending, coming) or whose module runs unpatched (failed).
 */
export function targetsOf(st: UpdateStatus): UpdateTarget[] {
  const live: UpdateTarget[] = st.patches
    .filter((p) => p.live)
    .map((p) => ({ name: p.name, module: p.part, state: "live" }));
  const waiting = st.parts
    .filter((p) => p.state !== "live")
    .flatMap((p) =>
      p.names.map((name) => ({
        name,
        module: p.module,
        state: p.state,
        ...(p.reason ? { reason: p.reason } : {}),
      })),
    );
  return [...live, ...waiting];
}

/** parseParts reads a core's `parts` file: "MODULE STATE NAME,NAME... [REASON]" per line. */
export function parseParts(text: string): Part[] {
  const out: Part[] = [];
  for (const line of text.split("\n")) {
    const m = /^(\S+) (live|pending|coming|failed) (\S+)(?: (.*))?$/.exec(line.trim());
    if (!m) continue;
    out.push({
      module: m[1],
      state: m[2] as PartState,
      names: m[3] === "-" ? [] : m[3].split(","),
      ...(m[4] ? { reason: m[4] } : {}),
    });
  }
  return out;
}

/** parseStatus reads an update's files (as a map name → contents) into an UpdateStatus. */
export function parseStatus(id: string, files: Record<string, string>): UpdateStatus {
  const lines = (s: string | undefined) => (s ?? "").split("\n").filter((l) => l.trim() !== "");
  return {
    id,
    stage: (files.stage ?? "").trim() as Stage,
    abortCause: ((files.abort_cause ?? "none").trim() || "none") as AbortCause,
    conflicts: lines(files.conflicts),
    pauseNs: Number((files.pause_ns ?? "0").trim()),
    tries: Number((files.tries ?? "0").trim()),
    appliedAt: Number((files.applied_at ?? "0").trim()),
    description: (files.description ?? "").replace(/\n$/, ""),
    patches: lines(files.patches).map((l) => {
      const [name, site, newAddr, module, part, live] = l.trim().split(/\s+/);
      return {
        name,
        site: BigInt(`0x${site}`),
        newAddr: BigInt(`0x${newAddr}`),
        // The module a jump is in; absent for the kernel image (the core says "vmlinux").
        ...(module && module !== VMLINUX ? { module } : {}),
        // A core of protocol 1 has neither column: its jumps are the kernel's or a module's, all written.
        part: part ?? module ?? VMLINUX,
        live: live === undefined ? (files.stage ?? "").trim() === "applied" : live === "live",
      };
    }),
    parts: parseParts(files.parts ?? ""),
  };
}

const STATUS_FILES = [
  "stage",
  "abort_cause",
  "conflicts",
  "pause_ns",
  "tries",
  "applied_at",
  "description",
  "patches",
  "parts",
];

/** Core drives a loaded ksplice core module through its sysfs files. */
export class Core {
  readonly host: CoreHost;
  readonly root: string;

  constructor(opts: { host?: CoreHost; root?: string } = {}) {
    this.host = opts.host ?? localHost;
    this.root = opts.root ?? SYSFS_ROOT;
  }

  /** loaded says whether the core module is loaded (its sysfs directory exists). */
  async loaded(): Promise<boolean> {
    return (
      (await this.host.exists("/sys/module/ksplice")) && (await this.host.exists(`${this.root}/control`))
    );
  }

  /** ensureLoaded inserts the core from koPath unless it is loaded; returns true when it loaded it now. */
  async ensureLoaded(
    koPath: string,
    params: Record<string, string | number | boolean> = {},
  ): Promise<boolean> {
    if (await this.loaded()) return false;
    const args = Object.entries(params).map(([k, v]) => `${k}=${typeof v === "boolean" ? (v ? 1 : 0) : v}`);
    const r = await this.host.exec(["insmod", koPath, ...args]);
    if (r.code !== 0)
      throw new CoreError(
        "load_failed",
        `loading the ksplice core (insmod ${koPath}) failed: ${(r.stderr || r.stdout).trim()}; check that it was built for this kernel (uname -r) and that you are root`,
      );
    if (!(await this.loaded()))
      throw new CoreError(
        "load_failed",
        `insmod ${koPath} succeeded but ${this.root}/control did not appear`,
      );
    return true;
  }

  /** control sends commands, split at line boundaries into writes the module accepts. */
  async control(lines: string[]): Promise<void> {
    if (!(await this.host.exists(`${this.root}/control`)))
      throw new CoreError(
        "not_loaded",
        `the ksplice core is not loaded (${this.root}/control is missing); load it first`,
      );
    for (const chunk of splitWrites(lines)) {
      try {
        await this.host.writeFile(`${this.root}/control`, chunk);
      } catch (err) {
        const why = (await this.lastError()) || (err as Error).message;
        const code: CoreErrorCode = why.startsWith("already_patched:") ? "already_patched" : "bad_command";
        throw new CoreError(code, `the ksplice core refused a command: ${why}`, { cause: err });
      }
    }
  }

  /** lastError is the module's explanation of the last refused command (`none` after a success). */
  async lastError(): Promise<string> {
    try {
      return (await this.host.readFile(`${this.root}/last_error`)).trim();
    } catch {
      return "";
    }
  }

  /** newUpdate starts update `id` whose code is in the loaded update module `module`. */
  async newUpdate(id: string, module: string): Promise<void> {
    if (!isValidId(id))
      throw new CoreError("bad_command", `update id ${JSON.stringify(id)} must be ${ID_RULE_TEXT}`);
    await this.control([`new ${id} ${module}`]);
  }

  /** reloc fills relocations in the update module (before apply). */
  async reloc(id: string, relocs: Reloc[]): Promise<void> {
    await this.control(relocs.map((r) => relocLine(id, r)));
  }

  /** patch adds jumps to write at apply. */
  async patch(id: string, patches: Patch[]): Promise<void> {
    await this.control(patches.map((p) => patchLine(id, p)));
  }

  /** pin holds a loadable module loaded while the update exists; addr is its __this_module. */
  async pin(id: string, addrs: bigint[]): Promise<void> {
    await this.control(addrs.map((a) => `${id} pin ${hex(a)}`));
  }

  /** target names the functions the update replaces in one part (VMLINUX or a module). */
  async target(id: string, part: string, names: string[]): Promise<void> {
    await this.control(names.map((n) => `${id} target ${part} ${n}`));
  }

  /** pending says a module part's module is not loaded: the core patches it when it loads. */
  async pending(id: string, modules: string[]): Promise<void> {
    await this.control(modules.map((m) => `${id} pending ${m}`));
  }

  /** setHelper names the program (argv; the core appends the module's name) run when such a module loads. */
  async setHelper(argv: string[]): Promise<void> {
    if (!argv.length || argv.some((a) => !/^\S+$/.test(a)) || !argv[0].startsWith("/"))
      throw new CoreError(
        "bad_command",
        `the helper must be an absolute path and words without spaces: ${argv.join(" ")}`,
      );
    await this.control([`helper ${argv.join(" ")}`]);
  }

  /** coming lists the parts whose module is loading now, in the order their updates were applied. */
  async coming(): Promise<Array<{ id: string; module: string }>> {
    const text = await this.host.readFile(`${this.root}/coming`);
    return text
      .split("\n")
      .map((l) => l.trim().split(/\s+/))
      .filter((w) => w.length === 2)
      .map(([id, module]) => ({ id, module }));
  }

  /** part sends the plan of one coming part (pins, relocations, jumps) and applies it. */
  async applyPart(
    id: string,
    module: string,
    plan: { pins: bigint[]; relocs: Reloc[]; patches: Patch[] },
  ): Promise<void> {
    await this.control(partLines(id, module, plan));
  }

  /** failPart marks a coming part failed: the module runs unpatched, and the log says why. */
  async failPart(id: string, module: string, reason: string): Promise<void> {
    const text = reason.replace(/\s+/g, " ").trim().slice(0, 200) || "no reason given";
    await this.control([`${id} part ${module} fail ${text}`]);
  }

  /** shadows lists how many shadows of each id exist (ksplice-patch.h), and their data's bytes. */
  async shadows(): Promise<Shadows> {
    const path = `${this.root}/shadows`;
    if (!(await this.host.exists(path))) return [];
    return parseShadows(await this.host.readFile(path));
  }

  /** version is the control protocol the loaded core speaks. */
  async version(): Promise<number> {
    const path = `${this.root}/version`;
    if (!(await this.host.exists(path))) return 1;
    return Number((await this.host.readFile(path)).trim());
  }

  /** hook registers a hook function at addr for the given point. */
  async hook(id: string, kind: HookKind, addr: bigint): Promise<void> {
    await this.control([`${id} hook ${kind} ${hex(addr)}`]);
  }

  /** describe stores a one-line description shown by status. */
  async describe(id: string, text: string): Promise<void> {
    await this.control([`${id} description ${text.replace(/\s+/g, " ").trim()}`]);
  }

  /** apply applies an update; throws CoreError(abort cause, conflicts) when the module refuses. */
  async apply(id: string): Promise<UpdateStatus> {
    return this.transition(id, "applied");
  }

  /** reverse undoes an applied update; throws CoreError like apply. */
  async reverse(id: string): Promise<UpdateStatus> {
    return this.transition(id, "reversed");
  }

  /** remove deletes an update that is not applied, releasing its module. */
  async remove(id: string): Promise<void> {
    await this.control([`delete ${id}`]);
  }

  /** status reads everything the module reports about one update. */
  async status(id: string): Promise<UpdateStatus> {
    const dir = `${this.root}/${id}`;
    if (!(await this.host.exists(`${dir}/stage`)))
      throw new CoreError("bad_command", `no update ${id} in the ksplice core (${dir} is missing)`);
    const files: Record<string, string> = {};
    for (const f of STATUS_FILES)
      if (f !== "parts" || (await this.host.exists(`${dir}/${f}`)))
        files[f] = await this.host.readFile(`${dir}/${f}`);
    return parseStatus(id, files);
  }

  /** list names the updates the module knows, in no particular order. */
  async list(): Promise<string[]> {
    if (!(await this.host.exists(this.root))) return [];
    const out: string[] = [];
    for (const name of await this.host.readdir(this.root))
      if (isValidId(name) && (await this.host.exists(`${this.root}/${name}/stage`))) out.push(name);
    return out.sort();
  }

  /**
   * benchStopMachine returns the median ns of n stop_machine calls (core loaded with bench=1):
   * empty, or writing 5 bytes of code through an alias as an apply does; back to back, or cold
   * (20 ms apart, as an apply's single call is).
   */
  async benchStopMachine(n: number, opts: { write?: boolean; cold?: boolean } = {}): Promise<number> {
    const mode = `${opts.write ? " write" : ""}${opts.cold ? " cold" : ""}`;
    await this.control([`bench_stop_machine ${n}${mode}`]);
    return Number((await this.host.readFile(`${this.root}/bench_ns`)).trim());
  }

  private async transition(id: string, to: "applied" | "reversed"): Promise<UpdateStatus> {
    const verb = to === "applied" ? "applying" : "reversing";
    try {
      await this.host.writeFile(`${this.root}/${id}/stage`, to);
    } catch (err) {
      const st = await this.status(id).catch(() => undefined);
      if (st && st.abortCause !== "none" && st.stage !== to) {
        const list = st.conflicts.length ? `: ${st.conflicts.join("; ")}` : "";
        const tries = st.abortCause === "code_busy" && st.tries > 1 ? ` after ${st.tries} attempts` : "";
        throw new CoreError(st.abortCause, `${verb} update ${id} aborted${tries}: ${st.abortCause}${list}`, {
          conflicts: st.conflicts,
          cause: err,
        });
      }
      throw new CoreError(
        "bad_command",
        `${verb} update ${id} failed: ${(await this.lastError()) || (err as Error).message}`,
        { cause: err },
      );
    }
    return this.status(id);
  }
}

/** moduleSection reads a loaded module's section address from /sys/module/NAME/sections/SEC. */
export async function moduleSection(
  name: string,
  section: string,
  host: CoreHost = localHost,
): Promise<bigint> {
  const path = `/sys/module/${name}/sections/${section}`;
  const text = (await host.readFile(path)).trim();
  if (!/^0x[0-9a-f]+$/i.test(text))
    throw new UserError(
      `reading ${path}: expected a hex address, got ${JSON.stringify(text)}: read it as root (it shows zero otherwise)`,
      { code: "permission_denied" },
    );
  return BigInt(text);
}
