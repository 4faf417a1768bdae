// Unified diffs: which files a patch touches (as `patch -p1` sees them), and whether it
// creates or deletes them. Applying is left to GNU patch inside the build overlay.
import { UserError } from "../errors.js";

/** PatchedFile is one file a patch touches, by its path relative to the tree root. */
export interface PatchedFile {
  path: string;
  created: boolean;
  deleted: boolean;
}

function strip1(p: string): string | undefined {
  const path = p.split("\t")[0].trim();
  if (path === "/dev/null") return undefined;
  const i = path.indexOf("/");
  return i < 0 ? path : path.slice(i + 1);
}

/** hunkLength is how many lines follow a hunk header `@@ -a,b +c,d @@` (b old, d new; 1 when omitted). */
function hunkLength(header: string): { old: number; new: number } | undefined {
  const m = /^@@ -\d+(?:,(\d+))? \+\d+(?:,(\d+))? @@/.exec(header);
  return m ? { old: Number(m[1] ?? 1), new: Number(m[2] ?? 1) } : undefined;
}

/** skipHunk returns the index of the first line after the hunk whose header is at i. */
function skipHunk(lines: string[], i: number): number {
  const n = hunkLength(lines[i]);
  if (!n) return i + 1;
  let old = n.old;
  let add = n.new;
  let j = i + 1;
  // Lines starting with '-' count as old, '+' as new, ' ' (or an empty line) as both.
  for (; j < lines.length && (old > 0 || add > 0); j++) {
    const c = lines[j][0];
    if (c === "-") old--;
    else if (c === "+") add--;
    else if (c === " " || c === undefined) {
      old--;
      add--;
    } else if (c !== "\\") break; // not a hunk line: the hunk was shorter than its header says
  }
  return j;
}

/** parsePatch lists the files a unified diff touches; `name` is used in errors. */
export function parsePatch(text: string, name: string): PatchedFile[] {
  const lines = text.split("\n");
  const files: PatchedFile[] = [];
  for (let i = 0; i < lines.length - 1; i++) {
    // A hunk's body may hold lines that look like file headers (a removed "-- x" line).
    if (lines[i].startsWith("@@ ")) {
      i = skipHunk(lines, i) - 1;
      continue;
    }
    if (!lines[i].startsWith("--- ") || !lines[i + 1].startsWith("+++ ")) continue;
    const from = strip1(lines[i].slice(4));
    const to = strip1(lines[i + 1].slice(4));
    const path = to ?? from;
    if (!path)
      throw new UserError(`${name}: line ${i + 1}: a diff between /dev/null and /dev/null`, {
        code: "bad_patch",
      });
    if (!lines[i + 2]?.startsWith("@@"))
      throw new UserError(
        `${name}: line ${i + 3}: expected a hunk header (@@) after the file names of ${path}`,
        { code: "bad_patch" },
      );
    files.push({ path, created: from === undefined, deleted: to === undefined });
    i++;
  }
  if (files.length === 0)
    throw new UserError(`${name} is not a unified diff (no '--- a/FILE' / '+++ b/FILE' lines)`, {
      code: "bad_patch",
    });
  return files;
}
