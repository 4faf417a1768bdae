// Folder src/cli: thin verbs over the stages. Nothing outside src/cli imports it.
//
// Entry point of the `ksplice` command: dispatches to one short file per verb and turns
// errors into exit codes (0 ok, 1 failure, 2 usage). Domain logic lives below src/cli.
import { basename } from "node:path";
import { UserError } from "../errors.js";
import { VERBS } from "./commands.js";
import { type Context, println } from "./context.js";
import { EXIT_FAILURE, EXIT_USAGE, exitCodeOf } from "./errors.js";

function help(ctx: Context): void {
  println(ctx.stdout, "usage: ksplice <command> [options]\n\ncommands:");
  for (const c of VERBS) println(ctx.stdout, `  ${c.name.padEnd(10)} ${c.summary}`);
  println(ctx.stdout, "\nRun 'ksplice <command> --help' for a command's options.");
}

/** main runs one command line in a context and returns the exit code. */
export async function main(argv: string[], ctx: Context, argv0 = "ksplice"): Promise<number> {
  // `ksplice-apply`, `uptrack-upgrade` and friends are the same program under another name.
  const alias = /^(?:ksplice|uptrack)-(\w+)$/.exec(basename(argv0));
  const [verb, ...rest] = alias ? [alias[1], ...argv] : argv;
  if (!verb || verb === "--help" || verb === "-h" || verb === "help") {
    help(ctx);
    return verb ? 0 : EXIT_USAGE;
  }
  const found = VERBS.find((c) => c.name === verb);
  if (!found) {
    println(ctx.stderr, `ksplice: unknown command '${verb}' (try 'ksplice --help')`);
    return EXIT_USAGE;
  }
  const cmd = await found.load();
  if (rest.includes("--help") || rest.includes("-h")) {
    println(ctx.stdout, cmd.usage);
    return 0;
  }
  // --raw-errors is understood by every command: main prints the abort code.
  // (only before a `--`, after which arguments belong to someone else).
  const dashdash = rest.indexOf("--") < 0 ? rest.length : rest.indexOf("--");
  const raw = rest.slice(0, dashdash).includes("--raw-errors");
  try {
    return await cmd.run(
      rest.filter((a, i) => i >= dashdash || a !== "--raw-errors"),
      raw ? { ...ctx, rawErrors: true } : ctx,
    );
  } catch (err) {
    return reportError(err, ctx, raw);
  }
}

/** reportError prints an error the way the user should see it and returns its exit code. */
export function reportError(err: unknown, ctx: Context, rawErrors = false): number {
  if (err instanceof UserError) {
    if (rawErrors) println(ctx.stderr, err.code);
    println(ctx.stderr, `ksplice: ${err.message}`);
    return exitCodeOf(err);
  }
  // util.parseArgs reports bad options with this code: a usage error.
  const code = (err as { code?: string } | undefined)?.code;
  if (typeof code === "string" && code.startsWith("ERR_PARSE_ARGS")) {
    if (rawErrors) println(ctx.stderr, "usage");
    println(ctx.stderr, `ksplice: ${(err as Error).message}`);
    return EXIT_USAGE;
  }
  if (rawErrors) println(ctx.stderr, "failed");
  println(
    ctx.stderr,
    `ksplice: internal error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`,
  );
  return EXIT_FAILURE;
}
