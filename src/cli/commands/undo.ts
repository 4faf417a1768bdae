// `ksplice undo ID`: take an applied update out of the running kernel.
import { parseArgs } from "node:util";
import { UsageError } from "../../errors.js";
import { undoUpdate } from "../../kernel/apply.js";
import { type Command, println, progress } from "../context.js";

const usage = `usage: ksplice undo ID [--raw-errors] [--json]

Reverses applied update ID under stop_machine and unloads its module. Updates stacked on top
of it must be undone first.`;

/** The `undo` verb. */
export const undoCommand: Command = {
  name: "undo",
  usage,
  async run(args, ctx) {
    const { values, positionals } = parseArgs({
      args,
      options: { json: { type: "boolean" } },
      allowPositionals: true,
    });
    if (positionals.length !== 1) throw new UsageError(`exactly one update ID is required\n${usage}`);
    const st = await undoUpdate({ id: positionals[0], log: progress(ctx, "undo") });
    if (values.json)
      println(
        ctx.stdout,
        JSON.stringify({ id: st.id, stage: st.stage, pauseNs: st.pauseNs, tries: st.tries }, null, 2),
      );
    else
      println(ctx.stdout, `Update ${st.id} reversed (machine paused ${(st.pauseNs / 1000).toFixed(0)} µs)`);
    return 0;
  },
};
