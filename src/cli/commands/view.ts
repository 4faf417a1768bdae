// `ksplice view [ID]`: what is applied to the running kernel.
import { parseArgs } from "node:util";
import { UsageError, UserError } from "../../errors.js";
import { listShadows, listUpdates } from "../../kernel/apply.js";
import { targetsOf, type UpdateStatus, type UpdateTarget, VMLINUX } from "../../kernel/core.js";
import { type Command, println } from "../context.js";

const usage = `usage: ksplice view [ID] [--json]

Lists the updates applied to the running kernel (id, description, when, functions replaced,
the pause); with ID, the details of one. A function of a module is shown with it, [module];
one whose module is not loaded yet as [module: pending] (patched when it loads), one whose
module loaded but did not match as [module: failed], with the reason.

Shadow data attached by updates (ksplice-patch.h) is listed by id: how many, and their bytes.

--json: {schemaVersion, updates: [{id, stage, description, appliedAt, pauseNs, tries,
functions, targets: [{name, module, state}], parts: [{module, state, functions, reason?}],
abortCause}], shadows: [{id, count, bytes}]} (with ID, that update's object alone, with
schemaVersion); a state is live, pending, coming or failed.`;

const json = (s: UpdateStatus) => ({
  id: s.id,
  stage: s.stage,
  description: s.description,
  appliedAt: s.appliedAt ? new Date(s.appliedAt * 1000).toISOString() : null,
  pauseNs: s.pauseNs,
  tries: s.tries,
  functions: targetsOf(s).map((t) => t.name),
  targets: targetsOf(s).map(({ name, module, state }) => ({ name, module, state })),
  parts: s.parts.map((p) => ({
    module: p.module,
    state: p.state,
    functions: p.names,
    ...(p.reason ? { reason: p.reason } : {}),
  })),
  abortCause: s.abortCause,
});

/** named shows a function, with its module when it is not in the kernel image, and its state unless live. */
const named = (t: UpdateTarget) => {
  const where = [...(t.module !== VMLINUX ? [t.module] : []), ...(t.state !== "live" ? [t.state] : [])];
  return where.length ? `${t.name} [${where.join(": ")}]` : t.name;
};

/** SCHEMA is the version of view's JSON: 2 added targets' state, parts and shadows. */
const SCHEMA = 2;

/** The `view` verb. */
export const viewCommand: Command = {
  name: "view",
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
    const shadows = await listShadows();
    if (values.json) {
      println(
        ctx.stdout,
        JSON.stringify(
          positionals[0]
            ? { schemaVersion: SCHEMA, ...json(list[0]) }
            : { schemaVersion: SCHEMA, updates: list.map(json), shadows },
          null,
          2,
        ),
      );
      return 0;
    }
    if (!list.length) {
      println(ctx.stdout, "No updates applied.");
      for (const s of shadows) println(ctx.stdout, `Shadows ${s.id}: ${s.count} (${s.bytes} bytes)`);
      return 0;
    }
    for (const s of list) {
      const when = new Date(s.appliedAt * 1000).toISOString();
      println(ctx.stdout, `${s.id}: ${s.description}`);
      const targets = targetsOf(s);
      println(
        ctx.stdout,
        `  applied ${when}, paused ${(s.pauseNs / 1000).toFixed(0)} µs, ${targets.length} function(s): ${targets.map(named).join(", ")}`,
      );
      for (const p of s.parts)
        if (p.state === "pending") println(ctx.stdout, `  ${p.module}: pending, patched when it loads`);
        else if (p.state === "failed")
          println(ctx.stdout, `  ${p.module}: failed, runs unpatched: ${p.reason ?? "no reason given"}`);
    }
    if (!positionals[0])
      for (const s of shadows) println(ctx.stdout, `Shadows ${s.id}: ${s.count} (${s.bytes} bytes)`);
    return 0;
  },
};
