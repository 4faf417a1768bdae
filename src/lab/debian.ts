// The lab's second guest: Debian 12 with systemd, on a persistent disk, so units run for real and
// the machine can be restarted with its files kept.
//
// - The root file system is built once from Debian's packages with mmdebstrap and cached as a
//   tarball (lab/debian/), keyed by what it holds.
// - Each test gets its own disk image (ext4, `mkfs.ext4 -d`): that root, the lab kernel's modules
//   (depmod'ed), the host's node, this checkout and its `ksplice` commands, the repository's
//   systemd units (enabled), the guest agent as a unit on ttyS1, and the test's --with paths.
// - A tiny initrd (busybox, virtio_pci and virtio_blk of Debian's image) mounts the disk and
//   switch_roots to systemd. Restarting the guest = rebooting it (qemu ends on reboot) and
//   booting again from the same disk.
import { createHash } from "node:crypto";
import {
  closeSync,
  copyFileSync,
  cpSync,
  existsSync,
  lstatSync,
  mkdirSync,
  openSync,
  readdirSync,
  realpathSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { basename, dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { UserError } from "../errors.js";
import { buildFileAtomic, readJson, writeJsonAtomic } from "../files.js";
import { mustRun, mustRunSync, runTool } from "../proc.js";
import { aptUpdate, missingHostPackages } from "./apt.js";
import { CpioWriter } from "./cpio.js";
import { COMMAND_NAMES, GUEST_AGENT, repoRoot, repoRuntimePaths, sharedLibraries } from "./initramfs.js";
import { resolveModules } from "./modules.js";
import type { LabPaths } from "./prepare.js";

/** What the cached root holds: Debian 12 (minbase) with systemd and the tools tests use. */
const SUITE = "bookworm";
const MIRROR = "http://deb.debian.org/debian";
const PACKAGES = ["systemd", "systemd-sysv", "udev", "kmod", "ifupdown", "iproute2", "procps"];
const ROOTFS_LAYOUT = 1;
/** Units of the root that would reach for the network or the disk in the background: masked. */
const MASKED = [
  "apt-daily.timer",
  "apt-daily-upgrade.timer",
  "e2scrub_all.timer",
  "e2scrub_reap.service",
  "fstrim.timer",
  "systemd-timesyncd.service",
];
/** The name the guest agent's unit has. */
const AGENT_UNIT = "ksplice-lab-agent.service";

/** SystemImage is one Debian guest's disk and the initrd that boots it. */
export interface SystemImage {
  disk: string;
  initrd: string;
}

/** debianRoot returns the cached tarball of the guest's root file system, building it once. */
export async function debianRoot(labDir: string, log: (l: string) => void = () => {}): Promise<string> {
  const key = createHash("sha256")
    .update(JSON.stringify({ layout: ROOTFS_LAYOUT, SUITE, MIRROR, PACKAGES }))
    .digest("hex")
    .slice(0, 16);
  const dir = join(labDir, "debian");
  const path = join(dir, `${SUITE}-systemd-${key}.tar`);
  const stampPath = `${path}.json`;
  const stamp = readJson<{ size: number }>(stampPath);
  if (stamp && existsSync(path) && lstatSync(path).size === stamp.size) return path;
  const missing = await missingHostPackages(["mmdebstrap", "e2fsprogs"]);
  if (missing.length) {
    log(`installing Debian packages: ${missing.join(" ")}`);
    await aptUpdate();
    const res = await runTool("apt-get", ["install", "-y", "-q", "--no-install-recommends", ...missing], {
      env: { ...process.env, DEBIAN_FRONTEND: "noninteractive" },
    });
    if (res.code !== 0)
      throw new UserError(
        `could not install ${missing.join(" ")} (apt-get exit ${res.code}); run 'apt-get install ${missing.join(" ")}' as root and retry`,
        { code: "lab_install" },
      );
  }
  log(`building a Debian ${SUITE} root with systemd (mmdebstrap, once; a few minutes)`);
  mkdirSync(dir, { recursive: true });
  await buildFileAtomic(path, async (tmp) => {
    const res = await runTool(
      "mmdebstrap",
      ["--variant=minbase", `--include=${PACKAGES.join(",")}`, "--format=tar", "--quiet", SUITE, tmp, MIRROR],
      { env: { ...process.env, DEBIAN_FRONTEND: "noninteractive" } },
    );
    if (res.code !== 0)
      throw new UserError(
        `mmdebstrap could not build the Debian guest's root (exit ${res.code}):\n${res.stderr.trim().split("\n").slice(-8).join("\n")}`,
        { code: "lab_install" },
      );
  });
  writeJsonAtomic(stampPath, { size: lstatSync(path).size, packages: PACKAGES });
  return path;
}

/** SystemImageOptions say what a Debian guest's disk carries besides the root. */
export interface SystemImageOptions {
  paths: LabPaths;
  labDir: string;
  /** Where the disk and initrd are written (the test's own directory). */
  dir: string;
  /** Host paths copied into the disk at the same absolute path. */
  withPaths?: string[];
  /** Disk size; default 3 GiB (sparse). */
  sizeMb?: number;
  log?: (l: string) => void;
}

/** buildSystemImage writes a new disk image and its initrd into opts.dir. */
export async function buildSystemImage(o: SystemImageOptions): Promise<SystemImage> {
  const log = o.log ?? (() => {});
  const tarball = await debianRoot(o.labDir, log);
  mkdirSync(o.dir, { recursive: true });
  const root = join(o.dir, "root.partial-image");
  rmSync(root, { recursive: true, force: true });
  mkdirSync(root);
  try {
    log("building the Debian guest's disk");
    await mustRun("tar", ["-xpf", tarball, "--numeric-owner", "-C", root]);
    populate(root, o);
    const disk = join(o.dir, "disk.raw");
    rmSync(disk, { force: true });
    await mustRun("truncate", ["-s", `${o.sizeMb ?? 3072}M`, disk]);
    await mustRun("mkfs.ext4", ["-q", "-F", "-L", "ksplice-root", "-d", root, disk]);
    const initrd = join(o.dir, "initrd.cpio");
    writeBootInitrd(o.paths, initrd);
    return { disk, initrd };
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
}

/** populate adds to the unpacked root everything the lab needs in it. */
function populate(root: string, o: SystemImageOptions): void {
  const at = (p: string) => join(root, p);
  const write = (p: string, text: string, mode = 0o644) => {
    mkdirSync(dirname(at(p)), { recursive: true });
    writeFileSync(at(p), text, { mode });
  };
  const link = (p: string, target: string) => {
    mkdirSync(dirname(at(p)), { recursive: true });
    rmSync(at(p), { force: true });
    symlinkSync(target, at(p));
  };
  // The lab kernel's modules, with the modules.dep the package leaves to depmod.
  const modules = `usr/lib/modules/${o.paths.release}`;
  cpSync(o.paths.modulesDir, at(modules), { recursive: true });
  // The root's own depmod (kmod is in it; the host may lack it).
  mustRunSync("chroot", [root, "/usr/sbin/depmod", "-a", o.paths.release]);
  // The host's node and the libraries the root lacks.
  const node = realpathSync(process.execPath);
  copyFileSync(node, at("usr/local/bin/node"));
  for (const lib of sharedLibraries(process.execPath)) {
    const real = realpathSync(lib);
    const guest = real.replace(/^\/(lib|lib64|bin|sbin)\//, "/usr/$1/");
    if (!existsSync(at(guest))) {
      mkdirSync(dirname(at(guest)), { recursive: true });
      copyFileSync(real, at(guest));
    }
  }
  // This checkout, its commands, and the test's files, at their host paths.
  const repo = repoRoot();
  for (const p of [...repoRuntimePaths(repo), ...(o.withPaths ?? [])]) copyIn(root, p);
  for (const name of COMMAND_NAMES) link(`usr/local/bin/${name}`, join(repo, "bin", name));
  mkdirSync(at(dirname(GUEST_AGENT)), { recursive: true });
  copyFileSync(join(dirname(fileURLToPath(import.meta.url)), "guest", "agent.js"), at(GUEST_AGENT));
  // The agent as a unit; when it ends on its own (poweroff request, host gone) the guest powers
  // off. Stopped by systemd (a reboot), its shell goes with it.
  write(
    `etc/systemd/system/${AGENT_UNIT}`,
    `[Unit]
Description=ksplice lab agent on ttyS1
After=local-fs.target

[Service]
ExecStartPre=/usr/bin/stty -F /dev/ttyS1 raw -echo
ExecStart=/bin/sh -c 'node ${GUEST_AGENT} /dev/ttyS1 30000; systemctl --force --force poweroff'
Environment=PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin HOME=/root

[Install]
WantedBy=multi-user.target
`,
  );
  link(`etc/systemd/system/multi-user.target.wants/${AGENT_UNIT}`, `/etc/systemd/system/${AGENT_UNIT}`);
  // The repository's own units, installed and enabled as a package would.
  const unitsDir = join(repo, "systemd");
  for (const unit of readdirSync(unitsDir))
    copyFileSync(join(unitsDir, unit), at(`etc/systemd/system/${unit}`));
  link("etc/systemd/system/sysinit.target.wants/ksplice.service", "/etc/systemd/system/ksplice.service");
  link(
    "etc/systemd/system/timers.target.wants/ksplice-upgrade.timer",
    "/etc/systemd/system/ksplice-upgrade.timer",
  );
  for (const unit of MASKED) link(`etc/systemd/system/${unit}`, "/dev/null");
  write("etc/fstab", "/dev/vda / ext4 rw,errors=remount-ro 0 1\n");
  // The test's files may live under /tmp: Debian empties it at boot (tmpfiles' "D /tmp"); keep it.
  write("etc/tmpfiles.d/tmp.conf", "d /tmp 1777 root root -\n");
  write("etc/hostname", "ksplice-lab-debian\n");
  write("etc/network/interfaces", "auto lo\niface lo inet loopback\n");
}

/** copyIn copies a host path into root at the same absolute path (symlinks kept as they are). */
function copyIn(root: string, path: string): void {
  if (!existsSync(path))
    throw new UserError(`--with ${path}: no such file or directory`, { code: "lab_with" });
  const dest = join(root, path);
  mkdirSync(dirname(dest), { recursive: true });
  cpSync(path, dest, {
    recursive: true,
    verbatimSymlinks: true,
    filter: (src) => !basename(src).includes(".partial-"),
  });
}

/** writeBootInitrd writes the initrd that mounts /dev/vda and hands over to systemd. */
function writeBootInitrd(paths: LabPaths, out: string): void {
  const busybox = ["/bin/busybox", "/usr/bin/busybox"].find((p) => existsSync(p));
  if (!busybox)
    throw new UserError("busybox is not installed; run 'ksplice lab prepare' (it installs busybox-static).", {
      code: "lab_missing_tool",
    });
  const set = resolveModules(paths.modulesDir, paths.release, ["virtio_pci", "virtio_blk"]);
  const fd = openSync(out, "w");
  try {
    const w = new CpioWriter(fd);
    for (const d of ["/bin", "/dev", "/proc", "/sys", "/newroot", "/lib/modules"]) w.dir(d);
    w.hostFile(busybox, "/bin/busybox");
    for (const a of ["sh", "mount", "umount", "modprobe", "switch_root", "sleep", "echo"])
      w.symlink(`/bin/${a}`, "busybox");
    const mods = `/lib/modules/${set.release}`;
    for (const rel of set.files) {
      w.dir(dirname(`${mods}/${rel}`));
      w.hostFile(join(set.modulesDir, rel), `${mods}/${rel}`);
    }
    w.dir(mods);
    w.file(`${mods}/modules.dep`, set.dep);
    w.file(
      "/init",
      `#!/bin/sh
# ksplice lab: mount the Debian guest's disk and start its systemd (src/lab/debian.ts)
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
modprobe virtio_pci && modprobe virtio_blk
i=0
while [ ! -b /dev/vda ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
mount -t ext4 -o rw /dev/vda /newroot || { echo "ksplice-lab: cannot mount /dev/vda"; sleep 2; exit 1; }
umount /proc /sys
mount --move /dev /newroot/dev
exec switch_root /newroot /sbin/init
`,
      0o755,
    );
    w.end();
  } finally {
    closeSync(fd);
  }
}
