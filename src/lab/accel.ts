// Chooses QEMU's accelerator. KVM is much faster, but on these machines (nested virtualisation)
// /dev/kvm exists and a KVM guest hangs right after the boot loader. So KVM is used only after a
// probe boot under KVM reached the agent; the probe runs once per host kernel and its result is
// cached in the lab's cache, so later boots never wait for a timeout.
import { accessSync, constants } from "node:fs";
import { release } from "node:os";
import { join } from "node:path";
import { readJson, writeJsonAtomic } from "../files.js";

/** Accel is a QEMU accelerator the lab knows how to use. */
export type Accel = "kvm" | "tcg";

/** How long a KVM probe guest may take to reach its agent (a working KVM boots in ~1 s). */
export const PROBE_TIMEOUT_MS = 8000;

/** KvmProbe boots a guest under KVM and says whether it reached its agent (vm.ts provides it). */
export type KvmProbe = () => Promise<{ ok: boolean; detail: string }>;

interface ProbeRecord {
  hostRelease: string;
  accel: Accel;
  detail: string;
}

/** chooseAccel returns the accelerator to use: $KSPLICE_LAB_ACCEL, else the cached or fresh probe result. */
export async function chooseAccel(
  labDir: string,
  env: NodeJS.ProcessEnv,
  log: (l: string) => void,
  probe: KvmProbe,
): Promise<Accel> {
  const forced = env["KSPLICE_LAB_ACCEL"];
  if (forced === "kvm" || forced === "tcg") return forced;
  try {
    accessSync("/dev/kvm", constants.R_OK | constants.W_OK);
  } catch {
    return "tcg";
  }
  const recordPath = join(labDir, "accel.json");
  const record = readJson<ProbeRecord>(recordPath);
  if (record && record.hostRelease === release()) return record.accel;
  log(`probing whether KVM works here (once; the result is kept in ${recordPath})`);
  const { ok, detail } = await probe();
  const accel: Accel = ok ? "kvm" : "tcg";
  log(`${detail}; using ${accel}`);
  writeJsonAtomic(recordPath, { hostRelease: release(), accel, detail } satisfies ProbeRecord);
  return accel;
}
