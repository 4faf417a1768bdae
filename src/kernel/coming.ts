// A module loading after an update that patches it was applied. The core's module notifier sees
// the module coming (relocated, its boot-time sites rewritten, its init not yet run), marks the
// parts waiting for it "coming" and runs this program (`ksplice module-coming MODULE`), waiting
// for it. For each such part, in the order the updates were applied (so a stacked update finds
// the one below it live), it opens the stored copy of the update's package, proves with run-pre
// matching that the module's code is the pre code, and hands the part's plan to the core, which
// writes the jumps under stop_machine; or it tells the core why not, and the module runs
// unpatched, the part marked failed. The module loads either way.
import { UserError } from "../errors.js";
import { runningIdentity } from "../live/identity.js";
import { Kallsyms } from "../live/kallsyms.js";
import { type KcoreMemory, kcoreMemory } from "../live/memory.js";
import { checkKernel, requireRoot, toUserError, withLock } from "./apply.js";
import { Core, type CoreHost, localHost } from "./core.js";
import { ModuleSections, matchTargets, planJumps, planRelocs } from "./matching.js";
import { openStored, STATE_DIR, storedPath } from "./store.js";

/** ComingResult is what became of one update's part in the module. */
export interface ComingResult {
  id: string;
  state: "live" | "failed";
  functions: string[];
  reason?: string;
}

/**
 * comingModule makes the parts waiting for `module` (which is loading) live, or failed with
 * the reason. Only a failure to reach the core itself throws.
 */
export async function comingModule(opts: {
  module: string;
  log: (line: string) => void;
  host?: CoreHost;
  stateDir?: string;
}): Promise<ComingResult[]> {
  requireRoot("ksplice module-coming");
  const host = opts.host ?? localHost;
  const core = new Core({ host });
  return withLock(async () => {
    const parts = (await core.coming()).filter((p) => p.module === opts.module);
    const out: ComingResult[] = [];
    if (!parts.length) return out;
    // Read once for all the parts: kallsyms does not change meanwhile (every update module is
    // loaded already), the code does (each part's jumps): the memory's cache is dropped after each.
    const kallsyms = Kallsyms.read();
    let run: ReturnType<typeof runningIdentity> | undefined;
    let memory: KcoreMemory | undefined;
    for (const { id } of parts) {
      try {
        run ??= runningIdentity();
        memory ??= kcoreMemory();
        const live = { kallsyms, run, memory };
        const functions = await makePart(core, id, opts.module, live, opts.stateDir ?? STATE_DIR);
        opts.log(`update ${id}: ${functions.length} function(s) of ${opts.module} patched`);
        out.push({ id, state: "live", functions });
      } catch (e) {
        const err = toUserError(e);
        const reason = err instanceof UserError ? err.message : `internal error: ${(err as Error).message}`;
        opts.log(`update ${id}: ${opts.module} left unpatched: ${reason}`);
        // The core may have failed the part itself (its jumps aborted): that says the same.
        await core.failPart(id, opts.module, reason).catch(() => {});
        out.push({ id, state: "failed", functions: [], reason });
      } finally {
        memory?.forget();
      }
    }
    memory?.close();
    return out;
  });
}

/** makePart matches update id's part in module and has the core apply it; returns its functions. */
async function makePart(
  core: Core,
  id: string,
  module: string,
  live: { kallsyms: Kallsyms; run: ReturnType<typeof runningIdentity>; memory: KcoreMemory },
  stateDir: string,
): Promise<string[]> {
  const pkg = await openStored(id, stateDir);
  if (!pkg)
    throw new UserError(`the copy of update ${id} kept at apply (${storedPath(id, stateDir)}) is missing`, {
      code: "bad_package",
    });
  try {
    const m = pkg.manifest;
    checkKernel(m, live.run);
    const matching = matchTargets(m, pkg.dir, {
      partial: false,
      scope: (mod) => mod === module,
      kallsyms: live.kallsyms,
      memory: live.memory,
    });
    const sections = new ModuleSections(m.module.name, core.host);
    const relocs = await planRelocs(m, matching.relocs, sections);
    const patches = await planJumps(matching.matched, sections);
    await core.applyPart(id, module, { pins: matching.pins, relocs, patches });
    return matching.matched.map((t) => t.fn.name);
  } finally {
    pkg.close();
  }
}
