// Canonical names for correlating symbols between two builds of one source file. The
// compiler numbers what it creates (clones `.isra.N`, `.constprop.N`, `.part.N`; static
// locals `var.N`): those numbers move when unrelated code changes, so they are not identity.

const CLONE_SUFFIX = /\.(isra|constprop|part|lto_priv|localalias|cold)\.\d+/g;

/** canonicalFunctionName replaces the compiler's clone numbers with N. */
export function canonicalFunctionName(name: string): string {
  return name.replace(CLONE_SUFFIX, ".$1.N");
}

// Names made with __COUNTER__ (or __LINE__) by kernel macros: __UNIQUE_ID_ddebug426 (pr_debug
// descriptors and friends), __BTF_ID__struct__bpf_map__312208 (BTF_ID). Any change above them
// in the file renumbers them.
const COUNTER_NAMES = /^(__UNIQUE_ID_[A-Za-z_]*?|__BTF_ID__\w+?__)\d+/;

/** canonicalDataName replaces the numbers kernel macros put in generated names with N. */
export function canonicalDataName(name: string): string {
  return name.replace(COUNTER_NAMES, "$1N");
}

const NUMBERED = /^(.+)\.(\d+)$/;

/** numberedStatic splits a function-local static (`calls.3`) into its base name, else undefined. */
export function numberedStatic(name: string): string | undefined {
  const m = NUMBERED.exec(name);
  return m ? m[1] : undefined;
}

/** cloneNumber returns the numbers in a name, for ordering clones that are otherwise alike. */
export function cloneNumbers(name: string): number[] {
  return [...name.matchAll(/\.(\d+)/g)].map((m) => Number(m[1]));
}
