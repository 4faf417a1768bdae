// Folder src/uptrack: the client of an update stream, Uptrack's verbs: upgrade, install, remove,
// show, uname, and boot (re-apply at boot from the verified cache). It fetches and verifies the
// stream (tuf.ts), plans (plan.ts), applies and undoes through src/kernel, and keeps and
// publishes its state (state.ts). Reads stream formats from src/stream; imports neither
// src/update nor src/lab.
//
// Every change happens under the machine's ksplice lock, after recovering what a command cut
// short left (kernel/recover.ts), and is recorded as it happens: a series that fails half-way is
// undone back to where it started, so a failure leaves what is applied as it was.
import { readdirSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { UserError } from "../errors.js";
import { readJson } from "../files.js";
import { applyUpdate, listUpdates, undoUpdate, withLock } from "../kernel/apply.js";
import { recoverLeftovers } from "../kernel/recover.js";
import { runningIdentity } from "../live/identity.js";
import { crashPoint } from "../proc.js";
import { indexTarget, type KernelIndex } from "../stream/index.js";
import { type ClientConfig, type ClientPaths, clientPaths, readConfig } from "./config.js";
import { type Entry, planInstall, planRemove, planUpgrade, type Step } from "./plan.js";
import {
  effectiveVersion,
  type Installed,
  installedThisBoot,
  logLine,
  publishState,
  readInstalled,
  readStatus,
  type Status,
  stateOf,
  updateStatus,
  writeInstalled,
} from "./state.js";
import { earliestExpiry, StreamClient, verifyCached } from "./tuf.js";

/** ClientOptions are what every client verb needs besides its arguments. */
export interface ClientOptions {
  paths?: ClientPaths;
  log: (line: string) => void;
  /** The program the core runs when a patched module loads later (see kernel/apply.ts). */
  helper?: string[];
}

/** Kernel is the running kernel, as the stream's indexes name kernels. */
export interface Kernel {
  release: string;
  buildId: string | null;
}

function kernelNow(): Kernel {
  const k = runningIdentity();
  return { release: k.release, buildId: k.buildId };
}

/** fetchIndex reads this kernel's index in the configured channel (by build id, then "any"). */
async function fetchIndex(
  client: StreamClient,
  kernel: Kernel,
  channel: string,
): Promise<KernelIndex | undefined> {
  for (const build of [kernel.buildId, null]) {
    const index = await client.fetchJson<KernelIndex>(indexTarget(kernel.release, build, channel));
    if (index) return index;
    if (build === null) break;
  }
  return undefined;
}

/** Check is what a check of the stream found. */
export interface Check {
  kernel: Kernel;
  channel: string;
  /** Undefined: the stream has no updates for this kernel. */
  index?: KernelIndex;
  applied: string[];
  plan: Step[];
}

/** appliedIds lists the updates the core has applied, in the order they were applied. */
async function appliedIds(): Promise<string[]> {
  return (await listUpdates()).filter((s) => s.stage === "applied").map((s) => s.id);
}

/**
 * reconcile makes the installed list agree with the kernel (the core's sysfs is the truth): an
 * update the list has but the kernel does not is dropped; one the kernel has that the stream
 * described but the list lacks (a command killed before it recorded it) is added.
 */
function reconcile(paths: ClientPaths, applied: string[], fetched: Installed[]): Installed[] {
  const known = [...fetched, ...cachedIndexes(paths, kernelNow())];
  const list = readInstalled(paths);
  // A list from before the restart that `ksplice boot` has not re-applied (ksplice=off, the
  // service disabled) stays for the next boot; what is applied now is what the kernel says.
  if (!installedThisBoot(paths) && applied.length === 0) return [];
  const kept = list.filter((u) => applied.includes(u.id));
  for (const id of applied)
    if (!kept.some((u) => u.id === id)) {
      const u = known.find((x) => x.id === id);
      if (u) kept.push(u);
    }
  kept.sort((a, b) => applied.indexOf(a.id) - applied.indexOf(b.id));
  if (JSON.stringify(kept) !== JSON.stringify(list)) writeInstalled(paths, kept);
  return kept;
}

/** startOver clears what a command cut short left: in the kernel (recover.ts), and in the cache. */
async function startOver(paths: ClientPaths): Promise<void> {
  for (const line of await recoverLeftovers()) logLine(paths, line);
  let names: string[] = [];
  try {
    names = readdirSync(paths.cache);
  } catch {}
  for (const n of names)
    if (n.includes(".partial-")) {
      rmSync(join(paths.cache, n), { recursive: true, force: true });
      logLine(paths, `removed ${n}, a file a command cut short was writing`);
    }
}

/** cachedIndexes lists the updates of this kernel's indexes in the cache (any build, any channel). */
function cachedIndexes(paths: ClientPaths, kernel: Kernel): Installed[] {
  const dir = join(paths.cache, "targets", "kernels", kernel.release);
  const out: Installed[] = [];
  let builds: string[] = [];
  try {
    builds = readdirSync(dir);
  } catch {}
  for (const build of builds) {
    let files: string[] = [];
    try {
      files = readdirSync(join(dir, build)).filter((f) => f.endsWith(".json"));
    } catch {}
    for (const f of files) out.push(...(readJson<KernelIndex>(join(dir, build, f))?.updates ?? []));
  }
  return out;
}

/** publish writes the status files from what the client knows now. */
async function publish(paths: ClientPaths, status: Status): Promise<void> {
  const kernel = kernelNow();
  publishState(paths, {
    release: kernel.release,
    installed: readInstalled(paths),
    status,
    metadataExpires: earliestExpiry(paths),
  });
}

/** failed records a failure in the status and the log, and publishes it. */
async function failed(paths: ClientPaths, what: string, e: unknown): Promise<never> {
  const code = e instanceof UserError ? e.code : "failed";
  const message = e instanceof Error ? e.message : String(e);
  logLine(paths, `${what} failed: ${code}: ${message}`);
  const status = updateStatus(paths, { lastError: { code, message, at: new Date().toISOString() } });
  await publish(paths, status).catch(() => {});
  throw e;
}

/** check refreshes the stream and plans an upgrade (nothing changes). */
async function check(client: StreamClient, config: ClientConfig, paths: ClientPaths): Promise<Check> {
  const kernel = kernelNow();
  await client.refresh();
  const index = await fetchIndex(client, kernel, config.channel);
  const applied = await appliedIds();
  const known = index?.updates ?? [];
  reconcile(paths, applied, known);
  const plan = index ? planUpgrade(index.updates, applied) : [];
  const now = new Date().toISOString();
  updateStatus(paths, {
    lastCheck: now,
    lastSuccess: now,
    supported: index !== undefined,
    available: plan.map((s) => s.id),
  });
  return { kernel, channel: config.channel, index, applied, plan };
}

/** unsupported is the error for a kernel the stream has no updates for. */
function unsupported(c: Check): UserError {
  return new UserError(
    `the stream has no updates for kernel ${c.kernel.release} (build ${c.kernel.buildId ?? "unknown"}) in channel ${c.channel}`,
    { code: "unsupported_kernel" },
  );
}

/**
 * execute applies and undoes a plan's steps in order, recording each; when one fails, the steps
 * it made are reversed, newest first, and the error is thrown.
 */
async function execute(
  steps: Step[],
  o: ClientOptions & { paths: ClientPaths; client?: StreamClient; index?: KernelIndex },
): Promise<void> {
  const done: Step[] = [];
  const entry = (id: string) =>
    o.index?.updates.find((u) => u.id === id) ?? readInstalled(o.paths).find((u) => u.id === id);
  const record = (id: string, add: boolean) => {
    const list = readInstalled(o.paths).filter((u) => u.id !== id);
    if (add) list.push(entry(id)!);
    writeInstalled(o.paths, list);
  };
  const run = async (s: Step) => {
    if (s.action === "install") {
      const u = entry(s.id)!;
      const file = await o.client!.fetchFile(u.target);
      o.log(`installing ${u.id}: ${u.name}`);
      await applyUpdate({ path: file, log: o.log, helper: o.helper });
      crashPoint("client:applied");
      record(u.id, true);
      logLine(o.paths, `installed ${u.id}: ${u.name}`);
    } else {
      o.log(`removing ${s.id}`);
      await undoUpdate({ id: s.id, log: o.log });
      record(s.id, false);
      logLine(o.paths, `removed ${s.id}`);
    }
  };
  try {
    for (const s of steps) {
      await run(s);
      done.push(s);
      if (s !== steps[steps.length - 1]) crashPoint("client:between");
    }
  } catch (e) {
    for (const s of done.reverse()) {
      const back: Step = { action: s.action === "install" ? "remove" : "install", id: s.id };
      o.log(`undoing ${s.action} of ${s.id}: the series failed`);
      await run(back).catch((again) =>
        o.log(`could not undo ${s.action} of ${s.id}: ${(again as Error).message}`),
      );
    }
    throw e;
  }
}

/** UpgradeResult is what an upgrade, install or remove did (or would do). */
export interface ChangeResult {
  plan: Step[];
  done: boolean;
  kernel: Kernel;
}

/**
 * upgrade installs every update of the stream for this kernel not applied (dryRun: says which;
 * auto: installs only when the configuration says autoinstall = yes, as the timer runs it).
 */
export async function upgrade(
  o: ClientOptions & { dryRun?: boolean; auto?: boolean },
): Promise<ChangeResult> {
  return change(
    "upgrade",
    o,
    async (c) => {
      if (!c.index) throw unsupported(c);
      return c.plan;
    },
    o.dryRun,
    o.auto,
  );
}

/** install installs the given updates and what they stack on. */
export async function install(o: ClientOptions & { ids: string[]; dryRun?: boolean }): Promise<ChangeResult> {
  return change(
    "install",
    o,
    async (c) => {
      if (!c.index) throw unsupported(c);
      return planInstall(c.index.updates, c.applied, o.ids);
    },
    o.dryRun,
  );
}

/** remove removes the given updates (or all) and what stacks on them; it needs no network. */
export async function remove(
  o: ClientOptions & { ids: string[] | "all"; dryRun?: boolean },
): Promise<ChangeResult> {
  const paths = o.paths ?? clientPaths();
  return withLock(async () => {
    try {
      await startOver(paths);
      const applied = await appliedIds();
      const installed = reconcile(paths, applied, []);
      const plan = planRemove(installed as Entry[], o.ids);
      if (!o.dryRun) await execute(plan, { ...o, paths });
      const status = updateStatus(paths, {
        lastSuccess: new Date().toISOString(),
        available: [...new Set([...(readStatus(paths).available ?? []), ...plan.map((s) => s.id)])],
      });
      await publish(paths, status);
      return { plan, done: !o.dryRun, kernel: kernelNow() };
    } catch (e) {
      return failed(paths, "remove", e);
    }
  });
}

async function change(
  what: string,
  o: ClientOptions,
  plan: (c: Check) => Promise<Step[]>,
  dryRun = false,
  auto = false,
): Promise<ChangeResult> {
  const paths = o.paths ?? clientPaths();
  return withLock(async () => {
    try {
      await startOver(paths);
      const config = readConfig(paths);
      if (auto && !config.autoinstall) dryRun = true;
      const client = new StreamClient(paths, config);
      const c = await check(client, config, paths);
      const steps = await plan(c);
      if (!dryRun && steps.length) await execute(steps, { ...o, paths, client, index: c.index });
      const left = c.index ? planUpgrade(c.index.updates, await appliedIds()).map((s) => s.id) : [];
      const status = updateStatus(paths, { lastSuccess: new Date().toISOString(), available: left });
      await publish(paths, status);
      return { plan: steps, done: !dryRun, kernel: c.kernel };
    } catch (e) {
      return failed(paths, what, e);
    }
  });
}

/** ShowResult is what show reports. */
export interface ShowResult {
  kernel: Kernel;
  effective: string;
  installed: Installed[];
  /** Applied updates the stream did not install (ksplice apply by hand). */
  others: string[];
  /** With available: what the stream offers for this kernel that is not applied. */
  available?: KernelIndex["updates"];
  status: Status;
  state: ReturnType<typeof stateOf>;
}

/** show reports what is installed (and, with available, checks the stream for more). */
export async function show(o: ClientOptions & { available?: boolean }): Promise<ShowResult> {
  const paths = o.paths ?? clientPaths();
  const kernel = kernelNow();
  const applied = await appliedIds();
  let available: KernelIndex["updates"] | undefined;
  if (o.available) {
    try {
      const config = readConfig(paths);
      const client = new StreamClient(paths, config);
      const c = await check(client, config, paths);
      available = c.index ? c.plan.map((s) => c.index!.updates.find((u) => u.id === s.id)!) : [];
    } catch (e) {
      return failed(paths, "check", e);
    }
  }
  const installed = reconcile(paths, applied, available ?? []);
  const status = readStatus(paths);
  await publish(paths, status).catch(() => {});
  return {
    kernel,
    effective: effectiveVersion(installed, kernel.release),
    installed,
    others: applied.filter((id) => !installed.some((u) => u.id === id)),
    available,
    status,
    state: stateOf(status),
  };
}

/** uname reports the running kernel with its effective version. */
export function uname(o: { paths?: ClientPaths } = {}): {
  release: string;
  effective: string;
  version: string;
} {
  const paths = o.paths ?? clientPaths();
  const k = runningIdentity();
  const effective = effectiveVersion(readInstalled(paths), k.release);
  let version = "";
  try {
    version = readFileSync("/proc/sys/kernel/version", "utf8").trim();
  } catch {}
  return { release: k.release, effective, version };
}

/** BootResult is what the boot re-apply did. */
export interface BootResult {
  skipped?: string;
  applied: string[];
  failed: Array<{ id: string; reason: string }>;
}

/**
 * boot re-applies, in order, the updates installed before the machine restarted, from the
 * verified cache alone: no network, no metadata refresh. Honours ksplice=off on the kernel
 * command line, the disable file and install_on_reboot = no. An update for another kernel (the
 * machine booted a fixed one) is left out and forgotten.
 */
export async function boot(o: ClientOptions): Promise<BootResult> {
  const paths = o.paths ?? clientPaths();
  const skip = (why: string): BootResult => {
    logLine(paths, `boot: not applying updates: ${why}`);
    return { skipped: why, applied: [], failed: [] };
  };
  let cmdline = "";
  try {
    cmdline = readFileSync(paths.cmdline, "utf8");
  } catch {}
  if (/(^|\s)ksplice=off(\s|$)/.test(cmdline)) return skip("ksplice=off is on the kernel command line");
  try {
    readFileSync(paths.disabled);
    return skip(`${paths.disabled} exists`);
  } catch {}
  let config: ClientConfig | undefined;
  try {
    config = readConfig(paths);
  } catch {}
  if (config && !config.installOnReboot) return skip("install_on_reboot = no");
  return withLock(async () => {
    await startOver(paths);
    const kernel = kernelNow();
    const wanted = readInstalled(paths);
    const applied = await appliedIds();
    const out: BootResult = { applied: [], failed: [] };
    const kept: Installed[] = [];
    for (const u of wanted) {
      if (applied.includes(u.id)) {
        kept.push(u);
        continue;
      }
      if (
        u.kernel.release !== kernel.release ||
        (u.kernel.buildId && kernel.buildId && u.kernel.buildId !== kernel.buildId)
      ) {
        logLine(
          paths,
          `boot: ${u.id} is for kernel ${u.kernel.release}, not the running ${kernel.release}: forgotten`,
        );
        continue;
      }
      // What it stacks on must be back first.
      const missing = u.stacksOn.filter((b) => !kept.some((k) => k.id === b));
      if (missing.length) {
        out.failed.push({ id: u.id, reason: `it stacks on ${missing.join(", ")}, which did not come back` });
        continue;
      }
      try {
        const file = await verifyCached(paths, u.target);
        await applyUpdate({ path: file, log: o.log, helper: o.helper });
        kept.push(u);
        out.applied.push(u.id);
        logLine(paths, `boot: re-applied ${u.id}: ${u.name}`);
      } catch (e) {
        const reason = e instanceof Error ? e.message : String(e);
        out.failed.push({ id: u.id, reason });
        logLine(paths, `boot: could not re-apply ${u.id}: ${reason}`);
      }
    }
    // What failed stays listed, so the next boot (or a fixed cache) tries again.
    writeInstalled(
      paths,
      wanted.filter((u) => kept.includes(u) || out.failed.some((f) => f.id === u.id)),
    );
    const status = updateStatus(paths, { bootReapplyFailed: out.failed.length > 0 });
    await publish(paths, status).catch(() => {});
    return out;
  });
}
