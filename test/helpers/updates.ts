// Makes update packages from the lab's prepared source for lab tests: one output directory
// (shared with the guest) and one core module build for all of them.
import { buildCore } from "../../src/kbuild/module.js";
import type { LabPaths } from "../../src/lab/index.js";
import { createUpdate } from "../../src/update/create.js";

/** updateMaker returns make(id, patch or patches, applied?) → path of ksplice-ID.tar.gz in outDir. */
export function updateMaker(lab: LabPaths, outDir: string, coreDir: string) {
  return async (id: string, patch: string | string[], applied: string[] = []): Promise<string> => {
    const res = await createUpdate({
      src: lab.sourceDir,
      patches: typeof patch === "string" ? [patch] : patch,
      applied,
      id,
      outputDir: outDir,
      coreModule: (h) => buildCore(h, coreDir),
      log: () => {},
      signal: new AbortController().signal,
    });
    return res.path;
  };
}
