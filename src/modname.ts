// The kernel's name for a loadable module: the file name without .ko, with dashes as
// underscores (xt-conntrack.ko and xt_conntrack are one module). Below every stage.

/** kernelModuleName turns a module's file name or path (foo-bar.ko, .../foo-bar.ko.xz) into the kernel's name. */
export function kernelModuleName(fileOrName: string): string {
  return fileOrName
    .replace(/^.*\//, "")
    .replace(/\.(ko|o)(\.\w+)?$/, "")
    .replace(/-/g, "_");
}
