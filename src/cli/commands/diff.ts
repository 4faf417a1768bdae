// `ksplice diff PRE.o POST.o [--json]`: which functions and data changed between two builds
// of one source file, compared modulo relocations.
import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { parseArgs } from "node:util";
import { diffObjects, report } from "../../diff/index.js";
import { ElfFile, ElfFormatError } from "../../elf/reader.js";
import { UsageError, UserError } from "../../errors.js";
import { type Command, type Context, println } from "../context.js";

const usage = `usage: ksplice diff PRE.o POST.o [--json]

Compares two builds of one source file (relocatable objects) function by function,
modulo relocations, and lists changed, new and removed functions and changed data.
  --json   print {"changed","new","removed","dataChanged",...} as JSON`;

function load(ctx: Context, path: string): ElfFile {
  const full = resolve(ctx.cwd, path);
  let bytes: Buffer;
  try {
    bytes = readFileSync(full);
  } catch (e) {
    throw new UserError(`cannot read ${path}: ${(e as Error).message}`, { code: "bad_input", cause: e });
  }
  try {
    return ElfFile.parse(bytes, path);
  } catch (e) {
    if (e instanceof ElfFormatError) throw new UserError(e.message, { code: "bad_input", cause: e });
    throw e;
  }
}

/** The `diff` verb. */
export const diffCommand: Command = {
  name: "diff",
  usage,
  async run(args, ctx) {
    const { values, positionals } = parseArgs({
      args,
      options: { json: { type: "boolean" } },
      allowPositionals: true,
    });
    if (positionals.length !== 2) throw new UsageError(`diff takes two object files\n${usage}`);
    const [prePath, postPath] = positionals;
    const rep = report(diffObjects(load(ctx, prePath), load(ctx, postPath)));
    if (values.json) {
      println(ctx.stdout, JSON.stringify(rep, null, 2));
      return 0;
    }
    const section = (title: string, names: string[], detail = false) => {
      if (!names.length) return;
      println(ctx.stdout, `${title} (${names.length}):`);
      for (const n of names) {
        const d = rep.details[n];
        println(ctx.stdout, detail && d ? `  ${n}  (at +0x${d.offset.toString(16)}: ${d.reason})` : `  ${n}`);
      }
    };
    const total =
      rep.changed.length +
      rep.new.length +
      rep.removed.length +
      rep.dataChanged.length +
      rep.newData.length +
      rep.removedData.length;
    if (total === 0) {
      println(ctx.stdout, `${prePath} and ${postPath}: no differences modulo relocations`);
      return 0;
    }
    section("changed functions", rep.changed, true);
    section("new functions", rep.new);
    section("removed functions", rep.removed);
    section("changed data", rep.dataChanged, true);
    section("new data", rep.newData);
    section("removed data", rep.removedData);
    return 0;
  },
};
