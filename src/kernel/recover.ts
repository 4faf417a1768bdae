// Recovery after a ksplice command was cut short (kill -9, a crash in user space). The kernel
// is never half-changed: the core applies and reverses an update under stop_machine, all of it
// or nothing. What can be left is user space's part: an update module loaded that no update of
// the core uses (killed after insmod), an update the core holds that is not applied (killed
// while it was prepared, or after it was reversed), the stored copy of a package whose update is
// not applied. Every command that changes something starts here, holding the lock: it reads the
// true state from the core's sysfs and /proc/modules, and clears what is left.
import { readdirSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { isValidId, MODULE_PREFIX, moduleName } from "../package/id.js";
import { Core, type CoreHost, localHost } from "./core.js";
import { removeStored, STATE_DIR } from "./store.js";

/** recoverLeftovers clears what a command cut short left, and says what it cleared. */
export async function recoverLeftovers(host: CoreHost = localHost, stateDir = STATE_DIR): Promise<string[]> {
  const done: string[] = [];
  const core = new Core({ host });
  const applied = new Set<string>();
  if (await core.loaded()) {
    for (const id of await core.list()) {
      const st = await core.status(id).catch(() => undefined);
      if (!st) continue;
      if (st.stage === "applied") {
        applied.add(id);
        continue;
      }
      await core.remove(id).catch(() => {});
      done.push(`forgot update ${id}, left ${st.stage} by a command cut short`);
    }
  }
  let modules: string[] = [];
  try {
    modules = readFileSync("/proc/modules", "utf8")
      .split("\n")
      .map((l) => l.split(" ")[0]);
  } catch {}
  for (const name of modules) {
    if (!name.startsWith(MODULE_PREFIX)) continue;
    const id = name.slice(MODULE_PREFIX.length);
    if (!isValidId(id) || applied.has(id) || name !== moduleName(id)) continue;
    const r = await host.exec(["rmmod", name]);
    done.push(
      r.code === 0
        ? `unloaded ${name}, an update module no applied update uses`
        : `could not unload ${name}: ${(r.stderr || r.stdout).trim()}`,
    );
  }
  let stored: string[] = [];
  try {
    stored = readdirSync(join(stateDir, "updates"));
  } catch {}
  for (const name of stored) {
    if (applied.has(name)) continue;
    if (isValidId(name)) removeStored(name, stateDir);
    else rmSync(join(stateDir, "updates", name), { recursive: true, force: true }); // a partial copy
    done.push(`removed the stored copy ${name}, of no applied update`);
  }
  return done;
}
