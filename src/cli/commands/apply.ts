// `ksplice apply UPDATE`: match, load and splice an update into the running kernel.
import { resolve } from "node:path";
import { parseArgs } from "node:util";
import { UsageError } from "../../errors.js";
import { applyUpdate } from "../../kernel/apply.js";
import { type Command, println, progress } from "../context.js";

const usage = `usage: ksplice apply UPDATE [--partial] [--raw-errors] [--json]

Applies UPDATE (ksplice-ID.tar.gz or its unpacked directory) to the running kernel: checks it
was made for this kernel, proves its pre code equals the running code, loads its module and
writes the jumps under stop_machine. Nothing changes when any step fails. Functions of a
module that is installed but not loaded are pending: they are patched when it loads, after
the same proof (ksplice view says whether each part is live, pending or failed).
--partial applies the functions that match and leaves out those whose running code differs.
--raw-errors puts the abort code alone on the first line of standard error.`;

/** The `apply` verb. */
export const applyCommand: Command = {
  name: "apply",
  usage,
  async run(args, ctx) {
    const { values, positionals } = parseArgs({
      args,
      options: { partial: { type: "boolean" }, json: { type: "boolean" } },
      allowPositionals: true,
    });
    if (positionals.length !== 1) throw new UsageError(`exactly one UPDATE is required\n${usage}`);
    const res = await applyUpdate({
      path: resolve(ctx.cwd, positionals[0]),
      partial: values.partial,
      log: progress(ctx, "apply"),
      helper: ctx.self ? [...ctx.self, "module-coming"] : undefined,
    });
    const us = (res.status.pauseNs / 1000).toFixed(0);
    if (values.json) {
      println(
        ctx.stdout,
        JSON.stringify(
          {
            schemaVersion: 1,
            id: res.id,
            description: res.description,
            stage: res.status.stage,
            pauseNs: res.status.pauseNs,
            tries: res.status.tries,
            targets: res.targets,
            skipped: res.skipped,
            loadedCore: res.loadedCore,
            timings: res.timings,
          },
          null,
          2,
        ),
      );
    } else {
      println(ctx.stdout, `Update ${res.id} applied: ${res.description}`);
      for (const t of res.targets)
        println(
          ctx.stdout,
          `  ${t.name} (${t.object}${t.module ? `, module ${t.module}` : ""}) ${
            t.state === "pending"
              ? `pending: patched when ${t.module} loads`
              : `at ${t.addr}${t.via ? `, via ${t.via}` : ""}`
          }`,
        );
      for (const t of res.skipped)
        println(ctx.stdout, `  left out ${t.name} (${t.object}): its running code differs (--partial)`);
      println(
        ctx.stdout,
        `  machine paused ${us} µs (${res.status.tries} attempt${res.status.tries === 1 ? "" : "s"})`,
      );
    }
    return 0;
  },
};
