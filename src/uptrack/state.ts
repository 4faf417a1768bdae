// What the client keeps and tells: the updates it installed (in order, with what the stream said
// of them), its last check, and the status it publishes for people and for machines:
// /run/ksplice/effective_version and /run/ksplice/cves, and a node_exporter textfile. Every file
// is written whole (write and rename), so a crash leaves the old one or the new one.
import { appendFileSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { buildFileAtomic, readJson, writeFileAtomic, writeJsonAtomic } from "../files.js";
import { crashPoint } from "../proc.js";
import type { KernelIndex } from "../stream/index.js";
import type { ClientPaths } from "./config.js";

/** Installed is an update the client installed, as the stream described it. */
export type Installed = KernelIndex["updates"][number];

/** installedPath is where the list of installed updates lives. */
function installedPath(paths: ClientPaths): string {
  return join(paths.cache, "installed.json");
}

/** readInstalled returns the updates the client installed, in the order it applied them. */
export function readInstalled(paths: ClientPaths): Installed[] {
  return readJson<{ updates: Installed[] }>(installedPath(paths))?.updates ?? [];
}

/** bootIdNow is the running kernel's id of this boot ("" when it cannot be read). */
export function bootIdNow(paths: ClientPaths): string {
  try {
    return readFileSync(paths.bootId, "utf8").trim();
  } catch {
    return "";
  }
}

/**
 * installedThisBoot says whether the list was written since this boot. One written before the
 * restart is what `ksplice boot` re-applies; until then (ksplice=off, a disabled service), the
 * kernel not having its updates does not mean they were removed.
 */
export function installedThisBoot(paths: ClientPaths): boolean {
  const written = readJson<{ bootId?: string }>(installedPath(paths))?.bootId;
  return written === undefined || written === bootIdNow(paths);
}

/** writeInstalled records the installed updates (whole, atomically). */
export function writeInstalled(paths: ClientPaths, updates: Installed[]): void {
  mkdirSync(paths.cache, { recursive: true });
  buildFileAtomic(installedPath(paths), (tmp) => {
    const bootId = bootIdNow(paths);
    writeFileSync(tmp, `${JSON.stringify({ schemaVersion: 1, bootId, updates }, null, 2)}\n`);
    crashPoint("client:recording"); // the new list written, not yet in place
  });
}

/** Status is what the client last found, kept across commands for `show` and the metrics. */
export interface Status {
  /** The last time the stream was checked, and whether that worked. */
  lastCheck?: string;
  lastSuccess?: string;
  lastError?: { code: string; message: string; at: string };
  /** From the last check: updates for this kernel not applied; whether the stream has this kernel. */
  available?: string[];
  supported?: boolean;
  /** The last boot's re-apply failed (until one succeeds). */
  bootReapplyFailed?: boolean;
}

function statusPath(paths: ClientPaths): string {
  return join(paths.cache, "status.json");
}

/** readStatus returns the kept status. */
export function readStatus(paths: ClientPaths): Status {
  return readJson<Status>(statusPath(paths)) ?? {};
}

/** updateStatus merges changes into the kept status. */
export function updateStatus(paths: ClientPaths, change: Partial<Status>): Status {
  const s = { ...readStatus(paths), ...change };
  mkdirSync(paths.cache, { recursive: true });
  writeJsonAtomic(statusPath(paths), s);
  return s;
}

/** effectiveVersion is the newest applied update's effective version, or the running release. */
export function effectiveVersion(installed: Installed[], release: string): string {
  for (let i = installed.length - 1; i >= 0; i--) if (installed[i].effective) return installed[i].effective!;
  return release;
}

/** State is what the published status files say. */
export type ClientState = "up_to_date" | "updates_available" | "unsupported_kernel" | "not_checked" | "error";

/** stateOf names the client's state from its status. */
export function stateOf(s: Status): ClientState {
  if (s.lastError && (!s.lastSuccess || s.lastError.at > s.lastSuccess)) return "error";
  if (s.supported === false) return "unsupported_kernel";
  if (s.available === undefined) return "not_checked";
  return s.available.length ? "updates_available" : "up_to_date";
}

const STATES: ClientState[] = [
  "up_to_date",
  "updates_available",
  "unsupported_kernel",
  "not_checked",
  "error",
];

/** metricsText is the node_exporter textfile: the client's state as ksplice_* metrics. */
export function metricsText(o: {
  release: string;
  effective: string;
  installed: Installed[];
  status: Status;
  metadataExpires?: Date;
}): string {
  const s = o.status;
  const secs = (iso?: string) => (iso ? Math.floor(new Date(iso).getTime() / 1000) : 0);
  const esc = (v: string) => v.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n");
  const state = stateOf(s);
  const lines = [
    "# HELP ksplice_updates_applied Updates from the stream applied to the running kernel.",
    "# TYPE ksplice_updates_applied gauge",
    `ksplice_updates_applied ${o.installed.length}`,
    "# HELP ksplice_updates_available Updates for this kernel not applied yet, at the last check.",
    "# TYPE ksplice_updates_available gauge",
    `ksplice_updates_available ${s.available?.length ?? 0}`,
    "# HELP ksplice_kernel_supported 1 when the stream has updates for the running kernel.",
    "# TYPE ksplice_kernel_supported gauge",
    `ksplice_kernel_supported ${s.supported === false ? 0 : 1}`,
    "# HELP ksplice_last_check_timestamp_seconds When the stream was last checked.",
    "# TYPE ksplice_last_check_timestamp_seconds gauge",
    `ksplice_last_check_timestamp_seconds ${secs(s.lastCheck)}`,
    "# HELP ksplice_last_success_timestamp_seconds When a check or change last succeeded.",
    "# TYPE ksplice_last_success_timestamp_seconds gauge",
    `ksplice_last_success_timestamp_seconds ${secs(s.lastSuccess)}`,
    "# HELP ksplice_metadata_expiry_timestamp_seconds When the cached stream metadata expires.",
    "# TYPE ksplice_metadata_expiry_timestamp_seconds gauge",
    `ksplice_metadata_expiry_timestamp_seconds ${o.metadataExpires ? Math.floor(o.metadataExpires.getTime() / 1000) : 0}`,
    "# HELP ksplice_boot_reapply_failed 1 when the last boot could not re-apply every update.",
    "# TYPE ksplice_boot_reapply_failed gauge",
    `ksplice_boot_reapply_failed ${s.bootReapplyFailed ? 1 : 0}`,
    "# HELP ksplice_state The client's state: 1 for the one it is in.",
    "# TYPE ksplice_state gauge",
    ...STATES.map((x) => `ksplice_state{state="${x}"} ${x === state ? 1 : 0}`),
    "# HELP ksplice_info The running kernel and its effective version.",
    "# TYPE ksplice_info gauge",
    `ksplice_info{release="${esc(o.release)}",effective="${esc(o.effective)}"} 1`,
  ];
  return `${lines.join("\n")}\n`;
}

/** publishState writes /run/ksplice/{effective_version,cves} and the metrics textfile. */
export function publishState(
  paths: ClientPaths,
  o: { release: string; installed: Installed[]; status: Status; metadataExpires?: Date },
): void {
  const effective = effectiveVersion(o.installed, o.release);
  mkdirSync(paths.run, { recursive: true });
  writeFileAtomic(join(paths.run, "effective_version"), `${effective}\n`);
  const cves = [...new Set(o.installed.flatMap((u) => u.cves))].sort();
  writeFileAtomic(join(paths.run, "cves"), cves.length ? `${cves.join("\n")}\n` : "");
  mkdirSync(dirname(paths.textfile), { recursive: true });
  writeFileAtomic(paths.textfile, metricsText({ ...o, effective }));
}

/** logLine appends one line to the client's log, with the time. */
export function logLine(paths: ClientPaths, line: string): void {
  mkdirSync(dirname(paths.log), { recursive: true });
  appendFileSync(paths.log, `${new Date().toISOString()} ${line.replace(/\n/g, " | ")}\n`);
}
