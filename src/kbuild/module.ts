// Building out-of-tree kernel modules against a kernel's headers: the one module builder, for
// the update module (update/module.ts writes its sources) and for the C core (kmod/). A build
// runs `make -C HEADERS M=DIR modules` and fails when the .ko is missing or modpost finds an
// undefined symbol (the module would not load).
import { createHash } from "node:crypto";
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { UserError } from "../errors.js";
import { partialName, replaceDir } from "../files.js";
import { runTool } from "../proc.js";

/** makeModule builds module `name` from the kbuild directory dir; returns the .ko path. */
export async function makeModule(opts: {
  dir: string;
  name: string;
  headersDir: string;
  makeArgs?: string[];
  signal?: AbortSignal;
}): Promise<string> {
  let output = "";
  const r = await runTool(
    "make",
    ["-C", opts.headersDir, `M=${opts.dir}`, ...(opts.makeArgs ?? []), "modules"],
    {
      signal: opts.signal,
      group: true,
      onOutput: (d) => {
        output += d;
      },
    },
  );
  const ko = join(opts.dir, `${opts.name}.ko`);
  if (r.code !== 0 || !existsSync(ko) || /WARNING: modpost: .*undefined!/.test(output))
    throw new UserError(
      `building the module ${opts.name} against ${opts.headersDir} failed:\n${output.trim().split("\n").slice(-30).join("\n")}`,
      { code: "build_failed" },
    );
  return ko;
}

/**
 * buildModule builds a module from srcDir (Kbuild + *.c, *.h) against headersDir into
 * outDir/NAME-HASH/, keyed by the sources and the headers, and returns the .ko path. The
 * sources are copied first so a build never writes into the checkout. `with.files` are more
 * files to copy in (a header of the core); `with.symvers` are Module.symvers files of modules
 * it imports from (the core's).
 */
export async function buildModule(
  srcDir: string,
  name: string,
  headersDir: string,
  outDir: string,
  with_: { files?: string[]; symvers?: string[] } = {},
): Promise<string> {
  const sources = readdirSync(srcDir)
    .filter((f) => f === "Kbuild" || f === "Makefile" || /\.[ch]$/.test(f))
    .map((f) => join(srcDir, f));
  const files = [...sources, ...(with_.files ?? [])].sort((a, b) => basename(a).localeCompare(basename(b)));
  const h = createHash("sha256").update(headersDir);
  for (const f of files) h.update(`\0${basename(f)}\0`).update(readFileSync(f));
  for (const f of [join(headersDir, "Module.symvers"), ...(with_.symvers ?? [])])
    if (existsSync(f)) h.update(readFileSync(f));
  const dest = join(outDir, `${name}-${h.digest("hex").slice(0, 16)}`);
  const ko = join(dest, `${name}.ko`);
  if (existsSync(ko)) return ko;
  const tmp = partialName(dest);
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp, { recursive: true });
  try {
    for (const f of files) copyFileSync(f, join(tmp, basename(f)));
    const extra = with_.symvers?.length ? [`KBUILD_EXTRA_SYMBOLS=${with_.symvers.join(" ")}`] : [];
    await makeModule({ dir: tmp, name, headersDir, makeArgs: extra });
  } catch (e) {
    rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
  replaceDir(tmp, dest);
  return ko;
}

/** repoKmodDir is kmod/ of this checkout (found from src/kbuild or dist/src/kbuild). */
export function repoKmodDir(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, "kmod", "core.c"))) {
    const up = dirname(dir);
    if (up === dir) throw new Error("cannot find kmod/core.c above src/kbuild (is this a ksplice checkout?)");
    dir = up;
  }
  return join(dir, "kmod");
}

/** buildCore builds kmod/ (the core module, `ksplice`) against headersDir, cached under outDir. */
export function buildCore(headersDir: string, outDir: string): Promise<string> {
  return buildModule(repoKmodDir(), "ksplice", headersDir, outDir);
}
