// Builds the guest's initramfs in two layers, since the kernel unpacks concatenated cpio archives
// one after the other (later entries win):
// - the base (busybox-static and the host's `node` with its shared libraries, ~100 MB) is built
//   once and cached, keyed by what it was built from;
// - a small per-run archive holds /init, the agent, this checkout's `ksplice` and each `--with`
//   path, so changing any of those costs nothing at boot.
// Left uncompressed: under TCG, decompressing 100 MB in the guest costs more than copying it.
import { createHash } from "node:crypto";
import {
  closeSync,
  copyFileSync,
  existsSync,
  lstatSync,
  mkdirSync,
  openSync,
  readlinkSync,
  realpathSync,
  statSync,
} from "node:fs";
import { basename, dirname, isAbsolute, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { UserError } from "../errors.js";
import { buildFileAtomic, readJson, writeJsonAtomic } from "../files.js";
import { mustRunSync } from "../proc.js";
import { CpioWriter } from "./cpio.js";
import type { ModuleSet } from "./modules.js";

/** Where the agent lives in the guest. */
export const GUEST_AGENT = "/ksplice-lab/agent.mjs";

/** The repository root of this checkout (src/lab → ../..; from dist/src/lab → ../../..). */
export function repoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, "package.json"))) {
    const up = dirname(dir);
    if (up === dir) throw new Error("cannot find the ksplice checkout (no package.json above src/lab)");
    dir = up;
  }
  return dir;
}

const BASE_LAYOUT = 1;

/** sharedLibraries lists the shared objects a dynamically linked binary loads (from `ldd`). */
export function sharedLibraries(binary: string): string[] {
  const out = mustRunSync("ldd", [binary]);
  const libs: string[] = [];
  for (const line of out.split("\n")) {
    const m = /(?:=>\s*)?(\/\S+)\s+\(0x[0-9a-f]+\)/.exec(line);
    if (m) libs.push(m[1]);
  }
  return libs;
}

/**
 * hostProgram readies a program of the host to run in a guest: a copy in dir (named
 * host-NAME, since busybox provides many names itself) and its shared libraries, which the
 * guest finds at the same paths. Returns the copy's path and the paths to pass as `with`.
 */
export function hostProgram(path: string, dir: string): { path: string; with: string[] } {
  if (!existsSync(path))
    throw new UserError(`${path} is not installed on this host (scripts/install-deps.sh installs it)`, {
      code: "lab_missing_tool",
    });
  mkdirSync(dir, { recursive: true });
  const copy = join(dir, `host-${basename(path)}`);
  copyFileSync(path, copy);
  return { path: copy, with: [copy, ...sharedLibraries(path)] };
}

/** baseInitramfs returns the cached base archive for the host's node and busybox, building it if needed. */
export function baseInitramfs(labDir: string, log: (l: string) => void = () => {}): string {
  const node = realpathSync(process.execPath);
  const busybox = ["/bin/busybox", "/usr/bin/busybox"].find((p) => existsSync(p));
  if (!busybox)
    throw new UserError("busybox is not installed; run 'ksplice lab prepare' (it installs busybox-static).", {
      code: "lab_missing_tool",
    });
  const inputs = [node, busybox, ...sharedLibraries(process.execPath)];
  const key = createHash("sha256")
    .update(
      JSON.stringify({
        layout: BASE_LAYOUT,
        node: process.execPath,
        files: inputs.map((f) => [f, statSync(f).size, statSync(f).mtimeMs]),
      }),
    )
    .digest("hex")
    .slice(0, 16);
  const dir = join(labDir, "initramfs");
  const path = join(dir, `base-${key}.cpio`);
  const stampPath = `${path}.json`;
  const stamp = readJson<{ size: number }>(stampPath);
  if (stamp && existsSync(path) && statSync(path).size === stamp.size) return path;
  log(`building the base initramfs (busybox + ${process.execPath})`);
  mkdirSync(dir, { recursive: true });
  buildFileAtomic(path, (tmp) => {
    const fd = openSync(tmp, "w");
    try {
      const w = new CpioWriter(fd);
      for (const d of BASE_DIRS) w.dir(d);
      w.dir("/tmp", 0o1777);
      for (const [link, target] of MERGED_USR) w.symlink(link, target);
      w.hostFile(busybox, "/usr/bin/busybox");
      const applets = mustRunSync(busybox, ["--list-full"]).split("\n").filter(Boolean);
      for (const a of applets) {
        const guest = `/${a}`.replace(/^\/(s?bin)\//, "/usr/$1/");
        if (guest !== "/usr/bin/busybox") w.symlink(guest, "/usr/bin/busybox");
      }
      addHostFile(w, process.execPath);
      for (const lib of sharedLibraries(process.execPath)) addHostFile(w, lib);
      w.file("/etc/passwd", "root:x:0:0:root:/root:/bin/sh\n");
      w.file("/etc/group", "root:x:0:\n");
      w.end();
    } finally {
      closeSync(fd);
    }
  });
  writeJsonAtomic(stampPath, { size: statSync(path).size, inputs });
  return path;
}

/** addHostFile adds a host file at its real path, and a symlink at the given path when that differs. */
function addHostFile(w: CpioWriter, path: string): void {
  const real = realpathSync(path);
  w.hostFile(real, real);
  if (real !== path && !isUnderMergedLink(path)) w.symlink(path, real);
  else if (real !== path) {
    // e.g. /lib64/ld-linux-x86-64.so.2: /lib64 is a link to usr/lib64 in the guest.
    const guest = path.replace(/^\/(bin|sbin|lib|lib64)\//, "/usr/$1/");
    if (guest !== real) w.symlink(guest, real);
  }
}

function isUnderMergedLink(path: string): boolean {
  return /^\/(bin|sbin|lib|lib64)\//.test(path);
}

/** The base's directories: a merged-/usr layout like Debian 12's, whatever the host looks like. */
const BASE_DIRS = [
  "/usr/bin",
  "/usr/sbin",
  "/usr/lib",
  "/usr/lib64",
  "/usr/local/bin",
  "/etc",
  "/root",
  "/proc",
  "/sys",
  "/dev",
  "/run",
  "/var",
  "/mnt",
];
const MERGED_USR = [
  ["/bin", "usr/bin"],
  ["/sbin", "usr/sbin"],
  ["/lib", "usr/lib"],
  ["/lib64", "usr/lib64"],
];

/** RunLayer says what the per-run archive carries. */
export interface RunLayer {
  /** Host paths to show in the guest at the same absolute path. */
  withPaths: string[];
  /** Seconds without a frame from the host after which the guest powers itself off. */
  watchdogSeconds: number;
  /** Modules of the image to carry under /lib/modules/RELEASE (modprobe works for them). */
  modules?: ModuleSet;
}

/** initScript is the guest's /init: mounts, raw serial, then the agent; powers off when it ends. */
export function initScript(watchdogSeconds: number): string {
  return `#!/bin/sh
# ksplice lab guest init: written by src/lab/initramfs.ts
export PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin HOME=/root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tracefs tracefs /sys/kernel/tracing
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
mkdir -p /dev/pts /dev/shm && mount -t devpts devpts /dev/pts
hostname ksplice-lab
ip link set lo up
stty -F /dev/ttyS1 raw -echo
node ${GUEST_AGENT} /dev/ttyS1 ${watchdogSeconds * 1000}
echo "ksplice-lab: agent exited ($?); powering off"
poweroff -f
`;
}

/**
 * buildInitrd writes base + per-run layer into `out`: the base copied, then a second cpio archive
 * appended with /init, the agent, this checkout's ksplice and the `--with` paths.
 */
export function buildInitrd(base: string, out: string, layer: RunLayer): void {
  copyFileSync(base, out);
  const fd = openSync(out, "a");
  try {
    const w = new CpioWriter(fd, statSync(out).size);
    // The base's skeleton, so parents are known to exist and merged-/usr links are not replaced.
    for (const d of [...BASE_DIRS, "/tmp"]) w.markExisting(d);
    for (const [link] of MERGED_USR) w.markExisting(link);
    w.file("/init", initScript(layer.watchdogSeconds), 0o755);
    w.hostFile(join(dirname(fileURLToPath(import.meta.url)), "guest", "agent.js"), GUEST_AGENT);
    const repo = repoRoot();
    for (const p of repoRuntimePaths(repo)) addWithPath(w, p);
    for (const name of COMMAND_NAMES) w.symlink(`/usr/local/bin/${name}`, join(repo, "bin", name));
    for (const p of layer.withPaths) addWithPath(w, p);
    if (layer.modules) addModules(w, layer.modules);
    w.end();
  } finally {
    closeSync(fd);
  }
}

/** COMMAND_NAMES are the names the checkout's bin/ launcher answers to, on a guest's PATH. */
export const COMMAND_NAMES = [
  "ksplice",
  "ksplice-apply",
  "ksplice-undo",
  "ksplice-view",
  "uptrack-upgrade",
  "uptrack-install",
  "uptrack-remove",
  "uptrack-show",
  "uptrack-uname",
];

/** repoRuntimePaths lists what the guest needs of this checkout to run `ksplice`. */
export function repoRuntimePaths(repo: string): string[] {
  const paths = ["package.json", "bin", "dist"].map((p) => join(repo, p));
  // Production dependencies only (transitively); dev tools like tsc and biome stay out.
  const seen = new Set<string>();
  const visit = (pkgJson: string) => {
    const deps = Object.keys(
      readJson<{ dependencies?: Record<string, string> }>(pkgJson)?.dependencies ?? {},
    );
    for (const d of deps) {
      const dir = join(repo, "node_modules", d);
      if (seen.has(dir) || !existsSync(dir)) continue;
      seen.add(dir);
      paths.push(dir);
      visit(join(dir, "package.json"));
    }
  };
  visit(join(repo, "package.json"));
  return paths;
}

/**
 * addWithPath shows a host path at the same absolute path in the guest, recreating each symlink
 * met on the way (so /a/b works when /a is a link on the host).
 */
export function addWithPath(w: CpioWriter, path: string): void {
  if (!isAbsolute(path)) path = resolve(path);
  if (!existsSync(path))
    throw new UserError(`--with ${path}: no such file or directory`, { code: "lab_with" });
  const parts = path.split("/").filter(Boolean);
  let cur = "";
  for (let i = 0; i < parts.length; i++) {
    cur += `/${parts[i]}`;
    const st = lstatSync(cur);
    if (st.isSymbolicLink()) {
      const target = readlinkSync(cur);
      if (!w.has(cur)) w.symlink(cur, target);
      addWithPath(w, join(resolve(dirname(cur), target), ...parts.slice(i + 1)));
      return;
    }
    if (i < parts.length - 1) w.dir(cur);
    else w.tree(cur, cur, (name) => name.includes(".partial-"));
  }
}

/** addModules carries modules of the image at /lib/modules/RELEASE, with their modules.dep. */
function addModules(w: CpioWriter, set: ModuleSet): void {
  // /lib is the merged-/usr link to usr/lib in the guest.
  const root = `/usr/lib/modules/${set.release}`;
  for (const rel of set.files) {
    w.dir(dirname(`${root}/${rel}`));
    w.hostFile(join(set.modulesDir, rel), `${root}/${rel}`);
  }
  w.dir(root);
  w.file(`${root}/modules.dep`, set.dep);
}
