// `ksplice module-coming MODULE`: run by the core module, not by people, while MODULE loads and
// an applied update has a part waiting for it (src/kernel/coming.ts).
import { parseArgs } from "node:util";
import { UsageError } from "../../errors.js";
import { comingModule } from "../../kernel/coming.js";
import { type Command, println, progress } from "../context.js";

const usage = `usage: ksplice module-coming MODULE [--json]

Run by the ksplice core (as a kernel usermode helper) while MODULE loads, before its init
runs, when an applied update patches it: matches MODULE's code against each such update's pre
code and has the core patch it, or mark the update's part failed (the module then runs
unpatched; the kernel log and ksplice view say why). Not meant to be run by hand.`;

/** The longest the core waits for us: a module load blocks meanwhile. */
const DEADLINE_MS = 120_000;

/** The `module-coming` verb. */
export const comingCommand: Command = {
  name: "module-coming",
  usage,
  async run(args, ctx) {
    const { values, positionals } = parseArgs({
      args,
      options: { json: { type: "boolean" } },
      allowPositionals: true,
    });
    if (positionals.length !== 1) throw new UsageError(`exactly one MODULE is required\n${usage}`);
    // The module load waits for this process: never longer than the deadline. Parts not made
    // live by then are failed by the core, with the exit status as the reason.
    const watchdog = setTimeout(() => process.exit(124), DEADLINE_MS);
    watchdog.unref();
    try {
      const res = await comingModule({ module: positionals[0], log: progress(ctx, "module-coming") });
      if (values.json)
        println(
          ctx.stdout,
          JSON.stringify({ schemaVersion: 1, module: positionals[0], parts: res }, null, 2),
        );
      return 0;
    } finally {
      clearTimeout(watchdog);
    }
  },
};
