// `ksplice create`: build an update package from a prepared kernel tree and a patch.
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { UsageError } from "../../errors.js";
import { cacheRoot } from "../../files.js";
import { buildCore } from "../../kbuild/module.js";
import { createUpdate } from "../../update/create.js";
import { type Command, println, progress } from "../context.js";

const usage = `usage: ksplice create --src DIR --patch FILE [--patch FILE]... [--applied FILE]...
                      [--id ID] [--output-dir DIR] [--description TEXT]
                      [--headers DIR] [--vmlinux FILE] [--json]

Builds ksplice-ID.tar.gz: the replacement code for the running kernel, compiled from DIR (a
prepared tree, as 'ksplice lab prepare' makes) with the patches applied in order. --applied
patches are already live through earlier updates. The tree is never modified.
The last line of standard output is the package's path.`;

/** The `create` verb. */
export const createCommand: Command = {
  name: "create",
  usage,
  async run(args, ctx) {
    const { values, positionals } = parseArgs({
      args,
      options: {
        src: { type: "string" },
        patch: { type: "string", multiple: true },
        applied: { type: "string", multiple: true },
        id: { type: "string" },
        "output-dir": { type: "string" },
        description: { type: "string" },
        headers: { type: "string" },
        vmlinux: { type: "string" },
        json: { type: "boolean" },
      },
      allowPositionals: true,
    });
    if (positionals.length) throw new UsageError(`unexpected argument ${positionals[0]}\n${usage}`);
    if (!values.src) throw new UsageError(`--src DIR is required\n${usage}`);
    if (!values.patch?.length) throw new UsageError(`at least one --patch FILE is required\n${usage}`);
    const abs = (p: string) => resolve(ctx.cwd, p);
    const res = await createUpdate({
      src: abs(values.src),
      patches: values.patch.map(abs),
      applied: (values.applied ?? []).map(abs),
      id: values.id,
      outputDir: abs(values["output-dir"] ?? "."),
      description: values.description,
      headersDir: values.headers ? abs(values.headers) : undefined,
      vmlinux: values.vmlinux ? abs(values.vmlinux) : undefined,
      // The package carries the core module, built for the same kernel, so apply needs no compiler.
      coreModule: (headers) => buildCore(headers, join(cacheRoot(ctx.env), "modules")),
      log: progress(ctx, "create"),
      signal: ctx.signal,
    });
    if (values.json) {
      const { manifest: m } = res;
      println(
        ctx.stdout,
        JSON.stringify(
          {
            id: res.id,
            path: res.path,
            kernel: m.kernel,
            targets: m.targets.map((t) => `${t.object}:${t.name}`),
            newFunctions: m.newFunctions.map((f) => f.name),
            relocations: m.relocations.length,
            timings: res.timings,
          },
          null,
          2,
        ),
      );
    } else {
      println(ctx.stdout, `update ${res.id} for ${res.manifest.kernel.release}: ${res.manifest.description}`);
      for (const t of res.manifest.targets) println(ctx.stdout, `  replaces ${t.name} (${t.object})`);
      for (const f of res.manifest.newFunctions) println(ctx.stdout, `  adds ${f.name} (${f.object})`);
      for (const h of res.manifest.hooks) println(ctx.stdout, `  runs ${h.symbol} as its ${h.kind} hook`);
      for (const i of res.manifest.ignored ?? [])
        println(ctx.stdout, `  leaves out ${i.symbol} (${i.object}): it ${i.reason}`);
      println(ctx.stdout, `  built in ${(res.timings.reduce((a, t) => a + t.ms, 0) / 1000).toFixed(1)} s`);
    }
    println(ctx.stdout, res.path);
    return 0;
  },
};
