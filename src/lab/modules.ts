// Debian's own modules in a lab guest: a boot may carry some of the image package's modules
// (with what they depend on) so `modprobe NAME` works in the guest. The package has no
// modules.dep (depmod runs at install time), so the dependencies are read from each module's
// .modinfo section and modules.dep is written for the modules carried.
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { ElfFile } from "../elf/reader.js";
import { UserError } from "../errors.js";
import { kernelModuleName } from "../modname.js";

/** ModuleSet is a set of the image's modules, closed under dependencies, as paths in modulesDir. */
export interface ModuleSet {
  release: string;
  modulesDir: string;
  /** Paths relative to modulesDir (kernel/fs/overlayfs/overlay.ko), dependencies first. */
  files: string[];
  /** modules.dep for them. */
  dep: string;
}

/** modinfoDepends reads a module's `depends=` list from its .modinfo section. */
export function modinfoDepends(ko: string): string[] {
  const elf = ElfFile.parse(readFileSync(ko), ko);
  const sec = elf.sectionByName(".modinfo");
  if (!sec) return [];
  for (const field of Buffer.from(elf.sectionData(sec)).toString("latin1").split("\0"))
    if (field.startsWith("depends=")) return field.slice(8).split(",").filter(Boolean);
  return [];
}

/** resolveModules finds modules by name in modules.order and adds what they depend on. */
export function resolveModules(modulesDir: string, release: string, names: string[]): ModuleSet {
  const orderFile = join(modulesDir, "modules.order");
  if (!existsSync(orderFile))
    throw new UserError(`${orderFile} is missing: run 'ksplice lab prepare' again`, { code: "lab_corrupt" });
  const byName = new Map<string, string>();
  for (const line of readFileSync(orderFile, "utf8").split("\n")) {
    const rel = line.trim();
    if (rel) byName.set(kernelModuleName(rel), rel);
  }
  const files: string[] = [];
  const deps = new Map<string, string[]>();
  const visit = (name: string, chain: string[]) => {
    const rel = byName.get(kernelModuleName(name));
    if (!rel)
      throw new UserError(
        `module ${name}${chain.length ? ` (needed by ${chain.join(" <- ")})` : ""} is not among ${release}'s modules (${orderFile})`,
        { code: "lab_with" },
      );
    if (deps.has(rel)) return;
    deps.set(rel, []);
    const needs = modinfoDepends(join(modulesDir, rel));
    for (const d of needs) visit(d, [name, ...chain]);
    deps.set(
      rel,
      needs.map((d) => byName.get(kernelModuleName(d))!),
    );
    files.push(rel);
  };
  for (const n of names) visit(n, []);
  // modules.dep lists every dependency, transitively, each before the ones it needs: modprobe
  // loads them from the end of the line backwards.
  const loadOrder = (rel: string, out: string[] = []): string[] => {
    for (const d of deps.get(rel) ?? [])
      if (!out.includes(d)) {
        loadOrder(d, out);
        out.push(d);
      }
    return out;
  };
  const line = (f: string) => [`${f}:`, ...loadOrder(f).reverse()].join(" ");
  const dep = files.map((f) => `${line(f).trimEnd()}\n`).join("");
  return { release, modulesDir, files, dep };
}
