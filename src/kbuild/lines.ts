// Line-level facts for telling why a patch that compiles changes no code: which lines a patch
// adds and removes, and which lines of a source file hold code (not only comments or blanks).

/** ChangedLines are the line numbers a patch removes (in the old file) and adds (in the new one). */
export interface ChangedLines {
  removed: number[];
  added: number[];
}

/** changedLines reads a unified diff's hunks, by file path (-p1). */
export function changedLines(patch: string): Map<string, ChangedLines> {
  const out = new Map<string, ChangedLines>();
  let cur: ChangedLines | undefined;
  let oldLine = 0;
  let newLine = 0;
  for (const line of patch.split("\n")) {
    if (line.startsWith("+++ ")) {
      const path = line.slice(4).split("\t")[0].trim();
      const rel = path === "/dev/null" ? undefined : path.slice(path.indexOf("/") + 1);
      cur = rel === undefined ? undefined : (out.get(rel) ?? { removed: [], added: [] });
      if (rel !== undefined && cur) out.set(rel, cur);
      continue;
    }
    if (line.startsWith("--- ")) continue;
    const hunk = /^@@ -(\d+)(?:,\d+)? \+(\d+)(?:,\d+)? @@/.exec(line);
    if (hunk) {
      oldLine = Number(hunk[1]);
      newLine = Number(hunk[2]);
      continue;
    }
    if (!cur) continue;
    if (line.startsWith("-")) cur.removed.push(oldLine++);
    else if (line.startsWith("+")) cur.added.push(newLine++);
    else if (line.startsWith(" ") || line === "") {
      oldLine++;
      newLine++;
    }
  }
  return out;
}

/** codeLines returns the numbers of the lines of C source that hold anything but comments and white space. */
export function codeLines(source: string): Set<number> {
  const code = new Set<number>();
  let line = 1;
  let inBlock = false;
  for (let i = 0; i < source.length; i++) {
    const c = source[i];
    if (c === "\n") {
      line++;
      continue;
    }
    if (inBlock) {
      if (c === "*" && source[i + 1] === "/") {
        inBlock = false;
        i++;
      }
      continue;
    }
    if (c === "/" && source[i + 1] === "*") {
      inBlock = true;
      i++;
      continue;
    }
    if (c === "/" && source[i + 1] === "/") {
      while (i + 1 < source.length && source[i + 1] !== "\n") i++;
      continue;
    }
    if (c === " " || c === "\t" || c === "\r" || c === "\f" || c === "\v") continue;
    code.add(line);
    if (c === '"' || c === "'") {
      // Skip the literal, so comment markers inside it are not taken for comments.
      for (i++; i < source.length && source[i] !== c && source[i] !== "\n"; i++) if (source[i] === "\\") i++;
    }
  }
  return code;
}
