// `ksplice view [ID]`: what is applied to the running kernel.
import { parseArgs } from "node:util";
import { UsageError, UserError } from "../../errors.js";
import { listUpdates } from "../../kernel/apply.js";
import type { UpdateStatus } from "../../kernel/core.js";
import { type Command, println } from "../context.js";

const usage = `usage: ksplice view [ID] [--json]

Lists the updates applied to the running kernel (id, description, when, functions replaced,
the pause); with ID, the details of one.`;

const json = (s: UpdateStatus) => ({
  id: s.id,
  stage: s.stage,
  description: s.description,
  appliedAt: s.appliedAt ? new Date(s.appliedAt * 1000).toISOString() : null,
  pauseNs: s.pauseNs,
  tries: s.tries,
  functions: s.patches.map((p) => p.name),
  targets: s.patches.map((p) => ({ name: p.name, module: p.module ?? "vmlinux" })),
  abortCause: s.abortCause,
});

/** named shows a replaced function, with its module when it is not in the kernel image. */
const named = (p: { name: string; module?: string }) =>
  p.module && p.module !== "vmlinux" ? `${p.name} [${p.module}]` : p.name;

/** The `view` verb. */
export const viewCommand: Command = {
  name: "view",
  summary: "list the updates applied to the running kernel",
  usage,
  async run(args, ctx) {
    const { values, positionals } = parseArgs({
      args,
      options: { json: { type: "boolean" } },
      allowPositionals: true,
    });
    if (positionals.length > 1) throw new UsageError(usage);
    let list = (await listUpdates()).filter((s) => s.stage === "applied");
    if (positionals[0]) {
      list = list.filter((s) => s.id === positionals[0]);
      if (!list.length)
        throw new UserError(`update ${positionals[0]} is not applied`, { code: "not_applied" });
    }
    if (values.json) {
      println(
        ctx.stdout,
        JSON.stringify(positionals[0] ? json(list[0]) : { updates: list.map(json) }, null, 2),
      );
      return 0;
    }
    if (!list.length) {
      println(ctx.stdout, "No updates applied.");
      return 0;
    }
    for (const s of list) {
      const when = new Date(s.appliedAt * 1000).toISOString();
      println(ctx.stdout, `${s.id}: ${s.description}`);
      println(
        ctx.stdout,
        `  applied ${when}, paused ${(s.pauseNs / 1000).toFixed(0)} µs, ${s.patches.length} function(s): ${s.patches.map(named).join(", ")}`,
      );
    }
    return 0;
  },
};
