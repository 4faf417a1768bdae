// Talks to Debian's package tools for the lab: installs the host packages the lab uses, finds
// which version of the lab kernel the registry still has, and downloads its .deb files with
// `apt-get download`, each checked against the registry's SHA256.
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { UserError } from "../errors.js";
import { runTool } from "../proc.js";
import { compareDebVersions } from "./debver.js";

/** HOST_PACKAGES are the Debian packages `lab prepare` installs when missing. */
export const HOST_PACKAGES = [
  "qemu-system-x86",
  "busybox-static",
  "cpio",
  "xz-utils",
  "bc",
  "flex",
  "bison",
  "libelf-dev",
  "libssl-dev",
  "gcc-12",
  "make",
  "binutils",
  // scripts/extract-vmlinux: Debian compresses the cloud kernel with lz4.
  "lz4",
  "zstd",
] as const;

/** PINNED is the kernel every figure in docs/ and tests was measured on. */
export const PINNED = { abi: "6.1.0-50", version: "6.1.176-1" } as const;

/** FLAVOUR is Debian's kernel flavour used by the lab. */
export const FLAVOUR = "cloud-amd64";

/** KernelChoice is one ABI and Debian version of the lab kernel. */
export interface KernelChoice {
  /** e.g. `6.1.0-50`: the ABI part of the package names and of the release. */
  abi: string;
  /** Debian version, e.g. `6.1.176-1`. */
  version: string;
}

/** labPackages lists the five packages of one kernel choice, image first, source last. */
export function labPackages(c: KernelChoice): {
  image: string;
  headers: string;
  common: string;
  kbuild: string;
  source: string;
} {
  const series = c.abi.split(".").slice(0, 2).join("."); // 6.1
  return {
    image: `linux-image-${c.abi}-${FLAVOUR}-unsigned`,
    headers: `linux-headers-${c.abi}-${FLAVOUR}`,
    common: `linux-headers-${c.abi}-common`,
    kbuild: `linux-kbuild-${series}`,
    source: `linux-source-${series}`,
  };
}

/** releaseOf is the kernel release (`uname -r`) of a choice. */
export function releaseOf(c: KernelChoice): string {
  return `${c.abi}-${FLAVOUR}`;
}

/** parseMadison reads `apt-cache madison` output into package → versions. */
export function parseMadison(text: string): Map<string, Set<string>> {
  const out = new Map<string, Set<string>>();
  for (const line of text.split("\n")) {
    const cols = line.split("|").map((s) => s.trim());
    if (cols.length < 3 || !cols[0] || !cols[1]) continue;
    const set = out.get(cols[0]) ?? new Set<string>();
    set.add(cols[1]);
    out.set(cols[0], set);
  }
  return out;
}

/** ChoiceResult is the chosen kernel and whether it is the pinned one. */
export interface ChoiceResult extends KernelChoice {
  pinned: boolean;
}

/**
 * chooseKernel picks the pinned kernel when every one of its packages is available, else the newest
 * (ABI, version) for which image, both headers, kbuild and source all exist. Null when none does.
 */
export function chooseKernel(available: Map<string, Set<string>>, pinned: KernelChoice): ChoiceResult | null {
  const complete = (c: KernelChoice) =>
    Object.values(labPackages(c)).every((p) => available.get(p)?.has(c.version) ?? false);
  if (complete(pinned)) return { ...pinned, pinned: true };
  let best: KernelChoice | null = null;
  const imageRe = new RegExp(`^linux-image-(\\d+\\.\\d+\\.\\d+-\\d+)-${FLAVOUR}-unsigned$`);
  for (const [pkg, versions] of available) {
    const m = imageRe.exec(pkg);
    if (!m) continue;
    for (const version of versions) {
      const c = { abi: m[1], version };
      if (complete(c) && (!best || compareDebVersions(version, best.version) > 0)) best = c;
    }
  }
  return best && { ...best, pinned: false };
}

/** parseAptShow reads the fields of the first stanza of `apt-cache show PKG=VERSION`. */
export function parseAptShow(text: string): Record<string, string> {
  const fields: Record<string, string> = {};
  for (const line of text.split("\n")) {
    if (line === "") {
      if (Object.keys(fields).length) break;
      continue;
    }
    const m = /^([A-Za-z0-9-]+):\s?(.*)$/.exec(line);
    if (m) fields[m[1]] = m[2];
  }
  return fields;
}

let updated = false;

/** aptUpdate runs `apt-get update` at most once per process. */
export async function aptUpdate(): Promise<void> {
  if (updated) return;
  updated = true;
  const res = await runTool("apt-get", ["update", "-q"]);
  if (res.code !== 0) {
    throw new UserError(
      `apt-get update failed (exit ${res.code}); check the network and /etc/apt/sources.list, then retry.\n${res.stderr.trim()}`,
      {
        code: "lab_download",
      },
    );
  }
}

/** missingHostPackages lists which of `pkgs` dpkg does not have installed. */
export async function missingHostPackages(pkgs: readonly string[]): Promise<string[]> {
  // dpkg-query's own ${Field} syntax, not a template string.
  const format = ["-f=$", "{Package} $", "{Status}\\n"].join("");
  const res = await runTool("dpkg-query", ["-W", format, ...pkgs]);
  const ok = new Set(
    res.stdout
      .split("\n")
      .filter((l) => l.endsWith(" install ok installed"))
      .map((l) => l.split(" ")[0]),
  );
  return pkgs.filter((p) => !ok.has(p));
}

/** ensureHostPackages installs the missing ones of HOST_PACKAGES (fast no-op when all are there). */
export async function ensureHostPackages(log: (msg: string) => void): Promise<void> {
  const missing = await missingHostPackages(HOST_PACKAGES);
  if (missing.length === 0) return;
  log(`installing Debian packages: ${missing.join(" ")}`);
  await aptUpdate();
  const res = await runTool("apt-get", ["install", "-y", "-q", "--no-install-recommends", ...missing], {
    env: { ...process.env, DEBIAN_FRONTEND: "noninteractive" },
  });
  if (res.code !== 0) {
    throw new UserError(
      `could not install ${missing.join(" ")} (apt-get exit ${res.code}); run 'apt-get install ${missing.join(" ")}' as root and retry.\n${res.stderr.trim().split("\n").slice(-5).join("\n")}`,
      { code: "lab_install" },
    );
  }
}

/** queryAvailable asks apt which versions of the lab's packages it knows (updating lists once if none). */
export async function queryAvailable(pinned: KernelChoice): Promise<Map<string, Set<string>>> {
  const ask = async () => {
    const search = await runTool("apt-cache", [
      "search",
      "--names-only",
      `^linux-image-[0-9.]+-[0-9]+-${FLAVOUR}-unsigned$`,
    ]);
    const images = search.stdout
      .split("\n")
      .map((l) => l.split(" ")[0])
      .filter(Boolean);
    const names = new Set<string>(Object.values(labPackages(pinned)));
    for (const img of images) {
      const m = /^linux-image-(.+)-cloud-amd64-unsigned$/.exec(img);
      if (m) for (const p of Object.values(labPackages({ abi: m[1], version: "" }))) names.add(p);
    }
    const mad = await runTool("apt-cache", ["madison", ...names]);
    return parseMadison(mad.stdout);
  };
  let avail = await ask();
  if (!avail.has(labPackages(pinned).source)) {
    await aptUpdate();
    avail = await ask();
  }
  return avail;
}

/** DebInfo is what the registry says about one package version. */
export interface DebInfo {
  name: string;
  version: string;
  sha256: string;
  size: number;
  /** File name apt-get download writes. */
  file: string;
}

/** debInfo reads the registry's checksum and size for PKG=VERSION. */
export async function debInfo(name: string, version: string): Promise<DebInfo> {
  const res = await runTool("apt-cache", ["show", `${name}=${version}`]);
  const f = parseAptShow(res.stdout);
  if (res.code !== 0 || !f["SHA256"] || !f["Filename"]) {
    throw new UserError(
      `the package registry has no ${name}=${version}; run 'apt-get update' and retry, or pass another --kernel-version.`,
      { code: "lab_missing_version" },
    );
  }
  return {
    name,
    version,
    sha256: f["SHA256"],
    size: Number(f["Size"]),
    file: f["Filename"].split("/").pop()!,
  };
}

/** sha256File hashes a file by streaming it. */
export async function sha256File(path: string): Promise<string> {
  const h = createHash("sha256");
  for await (const chunk of createReadStream(path)) h.update(chunk as Buffer);
  return h.digest("hex");
}

/** aptDownload downloads PKG=VERSION for each package into dir. */
export async function aptDownload(dir: string, debs: DebInfo[], signal?: AbortSignal): Promise<void> {
  const res = await runTool(
    "apt-get",
    ["download", "-q", "-o", "APT::Sandbox::User=root", ...debs.map((d) => `${d.name}=${d.version}`)],
    { cwd: dir, signal },
  );
  if (res.code !== 0) {
    throw new UserError(
      `downloading ${debs.map((d) => `${d.name}=${d.version}`).join(" ")} failed (apt-get exit ${res.code}); check the network and retry 'ksplice lab prepare'.\n${res.stderr.trim().split("\n").slice(-5).join("\n")}`,
      { code: "lab_download" },
    );
  }
}
