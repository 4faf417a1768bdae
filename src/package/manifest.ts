// The update package is the contract between `create` and `apply`, and this folder owns it:
// the manifest schema (here), the id rule (id.ts), reading, writing and verifying a package
// (package.ts) and which kernel an update is for (identity.ts). create writes a package, apply
// reads it; neither reaches into the other. Imports only src/elf and src/errors.
//
// The manifest (manifest.json at the top of the package) says what the package holds and
// everything apply needs to know. formatVersion changes when a reader of an older version could
// misunderstand a newer manifest.

/**
 * FORMAT_VERSION is the manifest version this tool writes. Version 2 added targets in loadable
 * modules (`module` on objects and targets), which a version-1 reader would look for in the
 * kernel image; READABLE_VERSIONS are those it reads.
 */
export const FORMAT_VERSION = 2;
export const READABLE_VERSIONS: readonly number[] = [1, 2];

/** HOOK_KINDS names the points where the core calls an update's hooks (kmod/core.c's order). */
export const HOOK_KINDS = [
  "pre_apply",
  "check_apply",
  "apply",
  "post_apply",
  "fail_apply",
  "pre_reverse",
  "check_reverse",
  "reverse",
  "post_reverse",
  "fail_reverse",
] as const;
export type HookKind = (typeof HOOK_KINDS)[number];

/**
 * KERNEL_RELOC_TYPES are the relocation types the core writes into an update module at apply
 * (the fields that point into the running kernel), by name with their ELF numbers.
 */
export const KERNEL_RELOC_TYPES = {
  R_X86_64_64: 1,
  R_X86_64_PC32: 2,
  R_X86_64_PLT32: 4,
  R_X86_64_32: 10,
  R_X86_64_32S: 11,
} as const;
export type KernelRelocType = keyof typeof KERNEL_RELOC_TYPES;

/** isKernelRelocType tells whether a relocation type name is one the core writes. */
export function isKernelRelocType(name: string): name is KernelRelocType {
  return Object.hasOwn(KERNEL_RELOC_TYPES, name);
}

/** KernelReloc is a relocation the core module applies at apply time. */
export interface KernelReloc {
  /** Section of the update module holding the field, and the field's offset in it. */
  section: string;
  offset: number;
  type: KernelRelocType;
  addend: string;
  /** The kernel symbol: its name in the post build, and whether it is local to `object`. */
  symbol: string;
  local: boolean;
  object: string;
  /** Name of the same symbol in the pre build (differs for renumbered clones and statics). */
  preSymbol: string;
}

/** ManifestTarget is a function of the running kernel that the update replaces. */
export interface ManifestTarget {
  /** Name in the pre build as shipped (pre/OBJECT), which is how the kernel names it too. */
  name: string;
  object: string;
  size: number;
  /** Checksum of the pre code modulo relocations (diff/correlate.checksum). */
  preChecksum: string;
  /** The replacement: function name and section in the update module. */
  replacement: { name: string; section: string; size: number };
  /** The loadable module the function is in; absent for the kernel image. */
  module?: string;
}

/** ManifestHook is a function of the update module the core calls at a hook point. */
export interface ManifestHook {
  kind: HookKind;
  symbol: string;
  section: string;
  offset: number;
}

/** PackagedFile is a file of the package with its checksum. */
export interface PackagedFile {
  path: string;
  sha256: string;
  size: number;
}

/** Manifest describes one update package. */
export interface Manifest {
  format: "ksplice-update";
  formatVersion: number;
  id: string;
  description: string;
  createdAt: string;
  tool: string;
  kernel: { release: string; buildId: string | null; banner: string | null };
  patches: Array<{ name: string; sha256: string; text: string }>;
  applied: Array<{ name: string; sha256: string }>;
  module: { name: string; file: string };
  core: { file: string } | null;
  /** Pre objects, each with the loadable module it is part of (absent for the kernel image). */
  objects: Array<{ path: string; pre: string; module?: string }>;
  targets: ManifestTarget[];
  newFunctions: Array<{ name: string; object: string; section: string; size: number }>;
  newData: Array<{ name: string; object: string; section: string; size: number }>;
  relocations: KernelReloc[];
  /** Changes of the patch left out because they cannot reach the running kernel (__init code). */
  ignored?: Array<{ object: string; symbol: string; reason: string }>;
  hooks: ManifestHook[];
  files: PackagedFile[];
}
