// A small evaluator for the part of GNU make that kbuild Makefiles use to list objects:
// assignments (=, :=, ::=, +=, ?=), conditionals (ifeq, ifneq, ifdef, ifndef, else, endif),
// variable references in both spellings ($(X) and ${X}), substitution references
// ($(X:m=y)) and the text functions (subst, patsubst, filter, if, addprefix, ...). Rules,
// recipes, define blocks and includes are skipped; $(call ...), $(shell ...) and $(wildcard ...)
// expand to nothing, which is what a list of objects needs from them. Every assignment is
// expanded at once, as kbuild's lists are built in order.

/** MakeVars maps variable names to their (expanded) values. */
export type MakeVars = Map<string, string>;

/** Lookup supplies variables the Makefile does not set (CONFIG_*, ARCH, obj, srctree...). */
export type Lookup = (name: string) => string | undefined;

const FUNCTIONS = new Set([
  "subst",
  "patsubst",
  "filter",
  "filter-out",
  "if",
  "or",
  "and",
  "strip",
  "addprefix",
  "addsuffix",
  "findstring",
  "sort",
  "notdir",
  "dir",
  "basename",
  "word",
  "firstword",
  "lastword",
  "foreach",
  // Expand to nothing: they run programs, look at files or define macros.
  "call",
  "shell",
  "wildcard",
  "eval",
  "info",
  "warning",
  "error",
  "origin",
  "value",
  "realpath",
  "abspath",
]);

const words = (s: string) => s.split(/\s+/).filter(Boolean);

/** patternMatch matches a make pattern (one %) against a word, returning the stem. */
function patternMatch(pattern: string, word: string): string | undefined {
  const i = pattern.indexOf("%");
  if (i < 0) return pattern === word ? "" : undefined;
  const pre = pattern.slice(0, i);
  const post = pattern.slice(i + 1);
  if (word.length < pre.length + post.length || !word.startsWith(pre) || !word.endsWith(post))
    return undefined;
  return word.slice(pre.length, word.length - post.length);
}

function patsubst(pattern: string, replacement: string, text: string): string {
  return words(text)
    .map((w) => {
      const stem = patternMatch(pattern, w);
      if (stem === undefined) return w;
      return replacement.includes("%") ? replacement.replace("%", stem) : replacement;
    })
    .join(" ");
}

/** splitArgs splits a function's argument text at top-level commas. */
function splitArgs(s: string): string[] {
  const out: string[] = [];
  let depth = 0;
  let start = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s[i];
    if (c === "(" || c === "{") depth++;
    else if (c === ")" || c === "}") depth--;
    else if (c === "," && depth === 0) {
      out.push(s.slice(start, i));
      start = i + 1;
    }
  }
  out.push(s.slice(start));
  return out;
}

/** closing finds the index of the bracket closing the one opened at `open`. */
function closing(s: string, open: number): number {
  const o = s[open];
  const c = o === "(" ? ")" : "}";
  let depth = 0;
  for (let i = open; i < s.length; i++) {
    if (s[i] === o) depth++;
    else if (s[i] === c && --depth === 0) return i;
  }
  return -1;
}

/** MakeEval holds the variables of one Makefile as it is read. */
export class MakeEval {
  readonly vars: MakeVars = new Map();

  constructor(private readonly lookup: Lookup = () => undefined) {}

  /** get returns a variable's value: the Makefile's own, else the lookup's, else empty. */
  get(name: string): string {
    return this.vars.get(name) ?? this.lookup(name) ?? "";
  }

  /** expand expands every reference in s. */
  expand(s: string): string {
    let out = "";
    for (let i = 0; i < s.length; i++) {
      const ch = s[i];
      if (ch !== "$") {
        out += ch;
        continue;
      }
      const next = s[i + 1];
      if (next === "$") {
        out += "$";
        i++;
      } else if (next === "(" || next === "{") {
        const end = closing(s, i + 1);
        if (end < 0) return out + s.slice(i);
        out += this.reference(s.slice(i + 2, end));
        i = end;
      } else if (next !== undefined) {
        // $@, $<, $x: automatic or one-letter variables, empty outside a rule.
        out += this.get(next);
        i++;
      }
    }
    return out;
  }

  private reference(body: string): string {
    const fn = /^([a-z-]+)[ \t]/.exec(body);
    if (fn && FUNCTIONS.has(fn[1])) return this.call(fn[1], body.slice(fn[0].length));
    const name = this.expand(body);
    const sub = /^([^:=]+):([^=]*)=(.*)$/.exec(name);
    if (sub) {
      const pat = sub[2].includes("%") ? sub[2] : `%${sub[2]}`;
      const rep = sub[3].includes("%") ? sub[3] : `%${sub[3]}`;
      return patsubst(pat, rep, this.get(sub[1]));
    }
    return this.get(name.trim());
  }

  private call(fn: string, argText: string): string {
    const raw = splitArgs(argText);
    const arg = (i: number) => this.expand(raw[i] ?? "");
    switch (fn) {
      case "subst":
        return arg(2).split(arg(0)).join(arg(1));
      case "patsubst":
        return patsubst(arg(0).trim(), arg(1).trim(), arg(2));
      case "filter":
      case "filter-out": {
        const pats = words(arg(0));
        const keep = (w: string) => pats.some((p) => patternMatch(p, w) !== undefined);
        return words(arg(1))
          .filter((w) => keep(w) === (fn === "filter"))
          .join(" ");
      }
      case "if":
        return arg(0).trim() ? arg(1) : arg(2);
      case "or":
        for (let i = 0; i < raw.length; i++) if (arg(i).trim()) return arg(i);
        return "";
      case "and": {
        let last = "";
        for (let i = 0; i < raw.length; i++) {
          last = arg(i);
          if (!last.trim()) return "";
        }
        return last;
      }
      case "strip":
        return words(arg(0)).join(" ");
      case "addprefix":
        return words(arg(1))
          .map((w) => arg(0).trim() + w)
          .join(" ");
      case "addsuffix":
        return words(arg(1))
          .map((w) => w + arg(0).trim())
          .join(" ");
      case "findstring":
        return arg(1).includes(arg(0)) ? arg(0) : "";
      case "sort":
        return [...new Set(words(arg(0)))].sort().join(" ");
      case "notdir":
        return words(arg(0))
          .map((w) => w.slice(w.lastIndexOf("/") + 1))
          .join(" ");
      case "dir":
        return words(arg(0))
          .map((w) => (w.includes("/") ? w.slice(0, w.lastIndexOf("/") + 1) : "./"))
          .join(" ");
      case "basename":
        return words(arg(0))
          .map((w) => w.replace(/\.[^./]*$/, ""))
          .join(" ");
      case "word":
        return words(arg(1))[Number(arg(0)) - 1] ?? "";
      case "firstword":
        return words(arg(0))[0] ?? "";
      case "lastword":
        return words(arg(0)).at(-1) ?? "";
      case "foreach": {
        const v = arg(0).trim();
        const saved = this.vars.get(v);
        const out = words(arg(1)).map((w) => {
          this.vars.set(v, w);
          return this.expand(raw[2] ?? "");
        });
        if (saved === undefined) this.vars.delete(v);
        else this.vars.set(v, saved);
        return out.join(" ");
      }
      default:
        return "";
    }
  }

  /** evaluate reads a Makefile's text, applying its assignments under its conditionals. */
  evaluate(text: string): this {
    const lines = text.replace(/\\\r?\n/g, " ").split("\n");
    // One frame per open conditional: is its current branch taken, was any branch taken.
    const stack: Array<{ on: boolean; taken: boolean }> = [];
    const active = () => stack.every((f) => f.on);
    let inDefine = 0;
    let inRecipe = false;
    for (const raw of lines) {
      // A tab starts a recipe line only after a rule; elsewhere it is indentation.
      if (raw.startsWith("\t") && inRecipe) continue;
      const line = raw.replace(/(^|[^\\])#.*$/, "$1").trim();
      if (!line) continue;
      if (/^define\b/.test(line) || /^(export|override)\s+define\b/.test(line)) {
        inDefine++;
        continue;
      }
      if (inDefine) {
        if (/^endef\b/.test(line)) inDefine--;
        continue;
      }
      const cond = /^(ifeq|ifneq|ifdef|ifndef)\b\s*(.*)$/.exec(line);
      if (cond) {
        const on = active() && this.condition(cond[1], cond[2]);
        stack.push({ on, taken: on });
        continue;
      }
      const els = /^else\b\s*(.*)$/.exec(line);
      if (els) {
        const f = stack.at(-1);
        if (!f) continue;
        const outer = stack.slice(0, -1).every((x) => x.on);
        const more = /^(ifeq|ifneq|ifdef|ifndef)\b\s*(.*)$/.exec(els[1]);
        const on = outer && !f.taken && (more ? this.condition(more[1], more[2]) : true);
        f.on = on;
        f.taken ||= on;
        continue;
      }
      if (/^endif\b/.test(line)) {
        stack.pop();
        continue;
      }
      if (!active()) continue;
      inRecipe = this.assignment(line.replace(/^(export|override)\s+/, "")) === "rule";
    }
    return this;
  }

  private condition(kind: string, rest: string): boolean {
    if (kind === "ifdef" || kind === "ifndef") {
      const set = this.get(this.expand(rest).trim()).trim() !== "";
      return kind === "ifdef" ? set : !set;
    }
    let a: string;
    let b: string;
    const r = rest.trim();
    if (r.startsWith("(")) {
      const end = closing(r, 0);
      const args = splitArgs(r.slice(1, end < 0 ? r.length : end));
      a = args[0] ?? "";
      b = args.slice(1).join(",");
    } else {
      const q = /^(["'])(.*?)\1\s+(["'])(.*?)\3/.exec(r);
      if (!q) return false;
      a = q[2];
      b = q[4];
    }
    const eq = this.expand(a).trim() === this.expand(b).trim();
    return kind === "ifeq" ? eq : !eq;
  }

  private assignment(line: string): "rule" | undefined {
    // Find the operator at the top level (outside references); a ':' before it is a rule.
    let depth = 0;
    for (let i = 0; i < line.length; i++) {
      const c = line[i];
      if (c === "$" && (line[i + 1] === "(" || line[i + 1] === "{")) {
        depth++;
        i++;
        continue;
      }
      if ((c === ")" || c === "}") && depth > 0) {
        depth--;
        continue;
      }
      if (depth) continue;
      let op: string | undefined;
      if (line.startsWith("::=", i)) op = "::=";
      else if (line.startsWith(":=", i)) op = ":=";
      else if (line.startsWith("+=", i)) op = "+=";
      else if (line.startsWith("?=", i)) op = "?=";
      else if (line.startsWith("!=", i)) op = "!=";
      else if (c === "=") op = "=";
      else if (c === ":") return "rule"; // or a target-specific assignment
      if (!op) continue;
      const name = this.expand(line.slice(0, i)).trim();
      if (!name || /\s/.test(name)) return undefined;
      const value = op === "!=" ? "" : this.expand(line.slice(i + op.length)).trim();
      if (op === "+=") {
        const old = this.vars.get(name) ?? this.lookup(name) ?? "";
        this.vars.set(name, old ? (value ? `${old} ${value}` : old) : value);
      } else if (op === "?=") {
        if (!this.vars.has(name) && this.lookup(name) === undefined) this.vars.set(name, value);
      } else this.vars.set(name, value);
      return undefined;
    }
    return undefined;
  }

  /** list returns a variable's value as words. */
  list(name: string): string[] {
    return words(this.get(name));
  }
}
