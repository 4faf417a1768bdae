// The update manifest: what an update package holds and everything apply needs to know,
// as JSON (manifest.json at the top of the package). formatVersion changes when a reader
// of an older version could misunderstand a newer manifest.
import type { KernelReloc } from "./extract.js";
import type { HookKind } from "./hooks.js";

/** FORMAT_VERSION is the manifest version this tool writes and reads. */
export const FORMAT_VERSION = 1;

/** Target is a function of the running kernel that the update replaces. */
export interface ManifestTarget {
  /** Name in the pre build as shipped (pre/OBJECT), which is how the kernel names it too. */
  name: string;
  object: string;
  size: number;
  /** Checksum of the pre code modulo relocations (diff/correlate.checksum). */
  preChecksum: string;
  /** The replacement: function name and section in the update module. */
  replacement: { name: string; section: string; size: number };
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
  objects: Array<{ path: string; pre: string }>;
  targets: ManifestTarget[];
  newFunctions: Array<{ name: string; object: string; section: string; size: number }>;
  newData: Array<{ name: string; object: string; section: string; size: number }>;
  relocations: KernelReloc[];
  /** Changes of the patch left out because they cannot reach the running kernel (__init code). */
  ignored?: Array<{ object: string; symbol: string; reason: string }>;
  /** Functions of the update module the core calls at a hook point (update/hooks.ts). */
  hooks: Array<{ kind: HookKind; symbol: string; section: string; offset: number }>;
  files: PackagedFile[];
}
