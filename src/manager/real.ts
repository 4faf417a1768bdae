// The manager's real backend: this machine, through the Uptrack client (src/uptrack) and what
// the core says is applied (src/kernel, as `ksplice view` shows it).
import { readdirSync, readFileSync } from "node:fs";
import { hostname } from "node:os";
import { join } from "node:path";
import { readJson } from "../files.js";
import { listUpdates } from "../kernel/apply.js";
import { targetsOf, VMLINUX } from "../kernel/core.js";
import type { KernelIndex } from "../stream/index.js";
import { type ClientPaths, clientPaths } from "../uptrack/config.js";
import { install, remove, show, uname, upgrade } from "../uptrack/index.js";
import { availableMessage, planMessage } from "../uptrack/plan.js";
import { readStatus } from "../uptrack/state.js";
import {
  type AppliedView,
  type AvailableView,
  type Backend,
  hintFor,
  type ManagerState,
  type Progress,
} from "./backend.js";

/** LOG_LINES is how much of the client's log the page shows. */
const LOG_LINES = 40;

/** tail returns the last n lines of a file (none when it cannot be read). */
function tail(file: string, n: number): string[] {
  try {
    return readFileSync(file, "utf8").split("\n").filter(Boolean).slice(-n);
  } catch {
    return [];
  }
}

/** cachedUpdates lists what the verified cache's indexes say of this kernel's updates. */
function cachedUpdates(paths: ClientPaths, release: string): KernelIndex["updates"] {
  const dir = join(paths.cache, "targets", "kernels", release);
  const out: KernelIndex["updates"] = [];
  const list = (d: string) => {
    try {
      return readdirSync(d);
    } catch {
      return [];
    }
  };
  for (const build of list(dir))
    for (const f of list(join(dir, build)).filter((x) => x.endsWith(".json")))
      out.push(...(readJson<KernelIndex>(join(dir, build, f))?.updates ?? []));
  return out;
}

/** realBackend is this machine. helper: the `module-coming` command line (see kernel/apply.ts). */
export function realBackend(o: { paths?: ClientPaths; helper?: string[] } = {}): Backend {
  const paths = o.paths ?? clientPaths();
  return {
    async state(): Promise<ManagerState> {
      const shown = await show({ paths, log: () => {} });
      const u = uname({ paths });
      const statuses = (await listUpdates()).filter((s) => s.stage === "applied");
      const applied: AppliedView[] = statuses.map((s) => {
        const mine = shown.installed.find((x) => x.id === s.id);
        const functions = targetsOf(s).map((t) => ({
          name: t.name,
          module: t.module,
          state: t.state,
          ...(t.reason ? { reason: t.reason } : {}),
        }));
        return {
          id: s.id,
          name: mine?.name ?? s.description,
          cves: mine?.cves ?? [],
          appliedAt: s.appliedAt ? new Date(s.appliedAt * 1000).toISOString() : null,
          pauseUs: s.pauseNs ? Math.round(s.pauseNs / 1000) : null,
          functions,
          modules: [...new Set(functions.map((f) => f.module).filter((m) => m !== VMLINUX))],
          fromStream: mine !== undefined,
        };
      });
      const known = cachedUpdates(paths, shown.kernel.release);
      const available: AvailableView[] = (readStatus(paths).available ?? [])
        .filter((id) => !applied.some((a) => a.id === id))
        .map((id) => {
          const x = known.find((k) => k.id === id);
          return {
            id,
            name: x?.name ?? id,
            cves: x?.cves ?? [],
            stacksOn: x?.stacksOn ?? [],
            effective: x?.effective ?? null,
          };
        });
      const err = shown.state === "error" ? shown.status.lastError : undefined;
      return {
        hostname: hostname(),
        kernel: { release: shown.kernel.release, buildId: shown.kernel.buildId, version: u.version },
        effective: shown.effective,
        state: shown.state,
        applied,
        available,
        lastCheck: shown.status.lastCheck ?? null,
        lastError: err ? { ...err, hint: hintFor(err.code) } : null,
        bootReapplyFailed: shown.status.bootReapplyFailed ?? false,
        log: tail(paths.log, LOG_LINES),
      };
    },
    async check(log: Progress): Promise<string> {
      log("checking the stream");
      const r = await show({ paths, log, available: true });
      return availableMessage(r.available ?? [], r.state !== "unsupported_kernel");
    },
    async install(ids: string[] | "all", log: Progress): Promise<string> {
      const r =
        ids === "all"
          ? await upgrade({ paths, log, helper: o.helper })
          : await install({ paths, log, helper: o.helper, ids });
      return planMessage(r.plan, r.done);
    },
    async remove(ids: string[], log: Progress): Promise<string> {
      const r = await remove({ paths, log, ids });
      return planMessage(r.plan, r.done);
    },
  };
}
