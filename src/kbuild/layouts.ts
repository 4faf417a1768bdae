// Structure layouts, from C source: which structures and unions a translation unit defines (in
// its preprocessed text), their members, and a probe that makes the compiler state each one's
// layout: size, alignment, and every named member's offset and size, as an array of constants
// in an object file. create compares the probes of the pre and post builds: a patch that changes
// the layout of a structure whose instances already exist cannot be applied by replacing code.
//
// The parsing is a tokenizer and a brace counter, not a C parser: it finds `struct TAG {` and
// `union TAG {` bodies (and `typedef struct {...} NAME;`) at any depth outside functions, and
// the declarators of their members. What it cannot name it leaves out of the probe; the sizes
// still tell a changed layout.

/** Definition is one structure or union a translation unit defines. */
export interface Definition {
  /** `struct NAME`, `union NAME`, or a typedef name of an anonymous one. */
  key: string;
  /** The tag or typedef name alone (what ksplice_layout_change names). */
  name: string;
  /** The body's tokens, space-separated: equal bodies are one definition. */
  body: string;
  /** Named members, anonymous members' members included, bitfields and flexible arrays left out. */
  members: string[];
}

const TOKEN = /\s*([A-Za-z_]\w*|0[xX][0-9a-fA-F]+|\d+|"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|\S)/y;

/** tokens splits preprocessed C into tokens (identifiers, numbers, literals, punctuation). */
export function tokens(text: string): string[] {
  const out: string[] = [];
  TOKEN.lastIndex = 0;
  for (let m = TOKEN.exec(text); m; m = TOKEN.exec(text)) out.push(m[1]);
  return out;
}

/** matching returns the index of the brace closing the one at `open`. */
function matching(t: string[], open: number): number {
  let depth = 0;
  for (let i = open; i < t.length; i++) {
    if (t[i] === "{") depth++;
    else if (t[i] === "}" && --depth === 0) return i;
  }
  return t.length;
}

/**
 * definitionsOf lists the structures and unions a preprocessed translation unit defines, by key.
 * A body inside a function (a local structure) is not listed.
 */
export function definitionsOf(preprocessed: string): Map<string, Definition> {
  const t = tokens(preprocessed);
  const out = new Map<string, Definition>();
  const add = (key: string, name: string, open: number, close: number) => {
    const body = t.slice(open + 1, close);
    if (!out.has(key)) out.set(key, { key, name, body: body.join(" "), members: membersOf(body) });
  };
  let i = 0;
  while (i < t.length) {
    const word = t[i];
    if ((word === "struct" || word === "union") && t[i + 1] === "{") {
      // Anonymous: listed by its typedef name (typedef struct { ... } NAME;), if it has one.
      const close = matching(t, i + 1);
      if (t[i - 1] === "typedef" || t[i - 2] === "typedef") {
        const names = stripAttributes(t.slice(close + 1, t.indexOf(";", close))).filter(isIdent);
        const name = names[names.length - 1];
        if (name) add(`typedef ${name}`, name, i + 1, close);
      }
      i += 2; // its inner tagged definitions are definitions too
      continue;
    }
    if ((word === "struct" || word === "union") && isIdent(t[i + 1]) && t[i + 2] === "{") {
      const close = matching(t, i + 2);
      add(`${word} ${t[i + 1]}`, t[i + 1], i + 2, close);
      i += 3;
      continue;
    }
    // A function body (`) {`, attributes included): its local structures are not listed.
    if (word === "{" && t[i - 1] === ")") {
      i = matching(t, i) + 1;
      continue;
    }
    i++;
  }
  return out;
}

const isIdent = (x: string | undefined): x is string => x !== undefined && /^[A-Za-z_]\w*$/.test(x);

/** stripAttributes drops __attribute__((...)) from a token list. */
function stripAttributes(ts: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < ts.length; i++) {
    if (ts[i] === "__attribute__" || ts[i] === "__attribute") {
      let depth = 0;
      let j = i + 1;
      for (; j < ts.length; j++) {
        if (ts[j] === "(") depth++;
        else if (ts[j] === ")" && --depth === 0) break;
      }
      i = j;
      continue;
    }
    out.push(ts[i]);
  }
  return out;
}

/** membersOf names the members of a body's tokens (recursing into anonymous structs and unions). */
export function membersOf(body: string[]): string[] {
  const out: string[] = [];
  let start = 0;
  for (let i = 0; i < body.length; i++) {
    if (body[i] === "{") {
      const close = matching(body, i);
      const semi = body.indexOf(";", close);
      const after = stripAttributes(body.slice(close + 1, semi < 0 ? body.length : semi));
      // An anonymous member (struct { ... }; or union { ... };) brings its members up; a
      // nested definition with declarators (struct { ... } a, b[2];) names those.
      if (after.filter(isIdent).length === 0) {
        if (body.slice(start, i).some((x) => x === "struct" || x === "union"))
          out.push(...membersOf(body.slice(i + 1, close)));
      } else declarators(["int", ...after], out);
      if (semi < 0) break;
      i = semi;
      start = i + 1;
      continue;
    }
    if (body[i] === ";") {
      declarators(body.slice(start, i), out);
      start = i + 1;
    }
  }
  return out;
}

/** declarators adds the member names of one declaration (`int a, *b[4], (*fn)(void)`). */
function declarators(decl: string[], out: string[]): void {
  // typeof(...) is a type: one word will do.
  const d: string[] = [];
  const plain = stripAttributes(decl);
  for (let i = 0; i < plain.length; i++) {
    if (["typeof", "__typeof__", "_Atomic"].includes(plain[i]) && plain[i + 1] === "(") {
      let depth = 0;
      let j = i + 1;
      for (; j < plain.length; j++) {
        if (plain[j] === "(") depth++;
        else if (plain[j] === ")" && --depth === 0) break;
      }
      d.push("int");
      i = j;
      continue;
    }
    d.push(plain[i]);
  }
  let depth = 0;
  let part: string[] = [];
  const parts: string[][] = [];
  for (const x of d) {
    if (x === "(" || x === "[") depth++;
    else if (x === ")" || x === "]") depth--;
    if (x === "," && depth === 0) {
      parts.push(part);
      part = [];
    } else part.push(x);
  }
  parts.push(part);
  parts.forEach((p, k) => {
    if (p.includes(":")) return; // a bitfield: no offsetof
    const brackets = p.indexOf("[");
    if (brackets >= 0 && p[brackets + 1] === "]") return; // a flexible array
    // The name is the identifier inside '(*NAME...)' for a function pointer, else the last one
    // before any '['. The first declarator follows its type: it needs two words at least.
    const fp = p.findIndex((x, j) => x === "(" && p[j + 1] === "*");
    let name: string | undefined;
    if (fp >= 0) name = p.slice(fp + 2).find(isIdent);
    else {
      const upto = brackets >= 0 ? p.slice(0, brackets) : p;
      const idents = upto.filter(isIdent);
      if (k > 0 || idents.length >= 2) name = idents[idents.length - 1];
    }
    if (name && !KEYWORDS.has(name)) out.push(name);
  });
}

const KEYWORDS = new Set([
  "struct",
  "union",
  "enum",
  "const",
  "volatile",
  "unsigned",
  "signed",
  "int",
  "long",
  "short",
  "char",
  "float",
  "double",
  "void",
  "_Bool",
  "restrict",
  "__restrict",
]);

/** Layout is what the compiler said of one definition: size, alignment, members' offsets and sizes. */
export interface Layout {
  size: number;
  align: number;
  members: Map<string, { offset: number; size: number }>;
}

/** typeOf spells a definition's type for C (`struct X`, or the typedef name). */
function typeOf(d: Definition): string {
  return d.key.startsWith("typedef ") ? d.name : d.key;
}

/**
 * probeSource is C to append to the translation unit: one array per definition, named
 * `ksplice_layout_probe_N`, holding sizeof, __alignof__, then offset and size of each member.
 */
export function probeSource(defs: Definition[]): string {
  return defs
    .map((d, n) => {
      const T = typeOf(d);
      const values = [
        `sizeof(${T})`,
        `__alignof__(${T})`,
        ...d.members.flatMap((m) => [`__builtin_offsetof(${T}, ${m})`, `sizeof(((${T} *)0)->${m})`]),
      ];
      return `const unsigned long ksplice_layout_probe_${n}[] __attribute__((used)) = { ${values.join(", ")} };`;
    })
    .join("\n");
}

/** layoutOf reads one definition's probe back (the array's values, in probeSource's order). */
export function layoutOf(d: Definition, values: bigint[]): Layout {
  const members = new Map<string, { offset: number; size: number }>();
  d.members.forEach((m, k) => {
    members.set(m, { offset: Number(values[2 + 2 * k]), size: Number(values[3 + 2 * k]) });
  });
  return { size: Number(values[0]), align: Number(values[1]), members };
}

/**
 * layoutChange says how the post layout differs from the pre one, or undefined when it does
 * not: same size and alignment, and the same (offset, size) of every member in order, whatever
 * their names (a renamed member is no new layout).
 */
export function layoutChange(pre: Layout, post: Layout): string | undefined {
  const shape = (l: Layout) =>
    [...l.members.values()]
      .map((m) => `${m.offset}:${m.size}`)
      .sort()
      .join(",");
  if (pre.size === post.size && pre.align === post.align && shape(pre) === shape(post)) return undefined;
  const parts: string[] = [];
  if (pre.size !== post.size) parts.push(`${pre.size} → ${post.size} bytes`);
  const added = [...post.members].filter(([m]) => !pre.members.has(m));
  const removed = [...pre.members.keys()].filter((m) => !post.members.has(m));
  const resized = [...post.members].filter(([m, v]) => {
    const p = pre.members.get(m);
    return p && p.size !== v.size;
  });
  const moved = [...post.members].filter(([m, v]) => {
    const p = pre.members.get(m);
    return p && p.offset !== v.offset;
  });
  const some = (
    list: Array<[string, { offset: number; size: number }]>,
    say: (m: string, v: { offset: number; size: number }) => string,
  ) =>
    `${list
      .slice(0, 4)
      .map(([m, v]) => say(m, v))
      .join(", ")}${list.length > 4 ? ` and ${list.length - 4} more` : ""}`;
  if (added.length) parts.push(`adds ${added.map(([m, v]) => `${m} at +${v.offset}`).join(", ")}`);
  if (removed.length) parts.push(`removes ${removed.join(", ")}`);
  if (resized.length) parts.push(`resizes ${some(resized, (m, v) => `${m} to ${v.size} bytes`)}`);
  if (moved.length) parts.push(`moves ${some(moved, (m, v) => `${m} to +${v.offset}`)}`);
  if (pre.align !== post.align) parts.push(`alignment ${pre.align} → ${post.align}`);
  return parts.join("; ") || "its members' places change";
}

/**
 * bodiesTouched tells whether any of the given lines of a source file (1-based) lies inside a
 * structure or union body, or opens one: a quick test, on the file as written, before
 * preprocessing anything. A brace opens a body when `struct` or `union` (and maybe a tag) comes
 * right before it, on its line or the line before.
 */
export function bodiesTouched(source: string, lines: number[]): boolean {
  if (!lines.length) return false;
  const want = new Set(lines);
  const text = source.split("\n").map((l) => l.replace(/\/\/.*$/, ""));
  const stack: boolean[] = []; // per open brace: does it open a struct or union body?
  const OPENS = /\b(struct|union)(\s+\w+)?\s*$/;
  for (let n = 0; n < text.length; n++) {
    const line = text[n];
    if (want.has(n + 1) && (stack.includes(true) || /\b(struct|union)\b[^;=()]*\{/.test(line))) return true;
    for (let k = 0; k < line.length; k++) {
      if (line[k] === "{") {
        const before = line.slice(0, k).trim() || (text[n - 1] ?? "").trim();
        stack.push(OPENS.test(before));
      } else if (line[k] === "}") stack.pop();
    }
  }
  return false;
}
