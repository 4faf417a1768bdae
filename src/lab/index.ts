// Folder src/lab: Debian's kernel in QEMU, its cache and the corpus of real fixes. May use
// every product stage; nothing in the product imports it (only the CLI's `lab` command).
//
// The lab's public API, for later stages and tests: prepare Debian's cloud kernel (prepareLab)
// and boot it under QEMU (LabVM, withLab). Import from here rather than from the files below.

export { cacheRoot } from "../files.js";
export { type Accel, chooseAccel } from "./accel.js";
export { FLAVOUR, HOST_PACKAGES, type KernelChoice, PINNED } from "./apt.js";
export { labRoot } from "./cache.js";
export { buildSystemImage, debianRoot, type SystemImage } from "./debian.js";
export { hostProgram } from "./initramfs.js";
export { checkEntry, type LabPaths, type PrepareOptions, prepareLab } from "./prepare.js";
export { type BootOptions, type ExecOptions, type ExecResult, LabVM, qemuArgs, withLab } from "./vm.js";
