// The import rules of docs/ARCHITECTURE.md, checked on the sources: which folder may import
// which, nothing below the CLI imports it, no product stage imports the lab, and no cycles.
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { dirname, join, normalize, relative } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const src = join(root, "src");

/** Each part of src/ (a folder, or a file at the top) and the parts it may import. */
const ALLOWED: Record<string, string[]> = {
  "errors.ts": [],
  "collections.ts": [],
  "files.ts": [],
  "modname.ts": [],
  "proc.ts": ["errors.ts"],
  elf: ["errors.ts"],
  x86: [],
  diff: ["elf", "x86", "collections.ts"],
  live: ["elf", "errors.ts", "collections.ts"],
  package: ["elf", "errors.ts"],
  kbuild: ["errors.ts", "files.ts", "proc.ts", "modname.ts"],
  runpre: ["diff", "elf", "x86", "live", "package", "errors.ts"],
  update: ["diff", "elf", "kbuild", "package", "errors.ts", "files.ts", "proc.ts", "collections.ts"],
  kernel: [
    "live",
    "package",
    "runpre",
    "elf",
    "errors.ts",
    "files.ts",
    "proc.ts",
    "modname.ts",
    "collections.ts",
  ],
  stream: ["package", "errors.ts", "files.ts"],
  uptrack: ["kernel", "stream", "live", "package", "errors.ts", "files.ts", "proc.ts"],
  lab: ["kbuild", "kernel", "live", "package", "elf", "errors.ts", "files.ts", "proc.ts", "modname.ts"],
  manager: ["uptrack", "kernel", "stream", "errors.ts", "files.ts"],
  cli: ["*"],
};

function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? sources(join(dir, e.name)) : e.name.endsWith(".ts") ? [join(dir, e.name)] : [],
  );
}

/** imports lists the project files a source file imports (static, re-exports and dynamic). */
function imports(file: string): string[] {
  const text = readFileSync(file, "utf8");
  const specs = [...text.matchAll(/(?:\bfrom\s+|\bimport\s*\(\s*|\bimport\s+)"(\.[^"]+)"/g)].map((m) => m[1]);
  return specs.map((s) => normalize(join(dirname(file), s.replace(/\.js$/, ".ts"))));
}

const part = (file: string) => relative(src, file).split("/")[0];
const graph = new Map(sources(src).map((f) => [f, imports(f)]));

test("each folder imports only the folders below it", () => {
  const wrong: string[] = [];
  for (const [file, deps] of graph) {
    const from = part(file);
    assert.ok(ALLOWED[from], `src/${from} has no entry in the architecture test's table`);
    for (const d of deps) {
      const to = part(d);
      if (to !== from && !ALLOWED[from].includes("*") && !ALLOWED[from].includes(to))
        wrong.push(`${relative(root, file)} imports ${relative(root, d)}`);
    }
  }
  assert.deepEqual(wrong, []);
});

test("only the CLI imports src/cli, and only the lab and its command import src/lab", () => {
  const wrong: string[] = [];
  for (const [file, deps] of graph)
    for (const d of deps) {
      const rel = relative(src, file);
      if (part(d) === "cli" && part(file) !== "cli") wrong.push(`${rel} imports ${relative(src, d)}`);
      if (part(d) === "lab" && part(file) !== "lab" && rel !== "cli/commands/lab.ts")
        wrong.push(`${rel} imports ${relative(src, d)}`);
    }
  assert.deepEqual(wrong, []);
});

test("no import cycle", () => {
  const state = new Map<string, "open" | "done">();
  const cycles: string[] = [];
  const visit = (f: string, path: string[]) => {
    if (state.get(f) === "done") return;
    if (state.get(f) === "open") {
      cycles.push([...path.slice(path.indexOf(f)), f].map((x) => relative(src, x)).join(" -> "));
      return;
    }
    state.set(f, "open");
    for (const d of graph.get(f) ?? []) if (graph.has(d)) visit(d, [...path, f]);
    state.set(f, "done");
  };
  for (const f of graph.keys()) visit(f, []);
  assert.deepEqual(cycles, []);
});
