// Small relocatable objects for the ELF tests, compiled with gcc-12 at test time. Between them
// they hold COMMON and ABS symbols, locals and globals, a COMDAT group, merged strings and
// relocations of types 64, 32, 32S, PC32, PC64, PLT32, GOTPCREL(X) and NONE.
import { assemble, compileC, FIXTURE_CFLAGS } from "./compile.js";

/** MATH_C is plain C with a COMMON variable, a static that is written, strings and calls. */
export const MATH_C = `
int counter;
static int hidden = 5;
const char *msg = "hello";
__attribute__((noinline)) int add(int a) { hidden++; return a + hidden + counter; }
int twice(int a) { return add(a) * 2; }
int table[16];
int pick(long i) { return table[i & 15]; }
`;

/** MAIN_C drives MATH_C's functions so a linked program shows they still behave. */
export const MAIN_C = `
#include <stdio.h>
extern int counter; extern const char *msg;
int add(int); int twice(int); int pick(long);
int main(void) {
  counter = 2;
  int a = add(1), b = twice(3), c = pick(4);
  printf("%s %d %d %d\\n", msg, a, b, c);
  return 0;
}
`;

/** KERNEL_C is compiled with -mcmodel=kernel so absolute addresses are R_X86_64_32S. */
export const KERNEL_C = `
extern int arr[];
int load(long i) { return arr[i]; }
static int local_data[4] = {1, 2, 3, 4};
int *where(void) { return local_data; }
`;

/** PIC_C is compiled with -fPIC so external data goes through the GOT. */
export const PIC_C = `
extern int g;
int h(void) { return g; }
`;

/** GROUP_S is assembly with a COMDAT group, an ABS symbol and explicit relocation types. */
export const GROUP_S = `
	.set MAGIC, 0x1234
	.globl MAGIC
	.section .text.foo,"axG",@progbits,foo,comdat
	.globl foo
	.type foo,@function
foo:
	call bar@PLT
	movq ext@GOTPCREL(%rip), %rax
	movl ext+4, %eax
	.reloc ., R_X86_64_GOTPCREL, ext
	.reloc ., R_X86_64_NONE, ext
	.long 0
	ret
	.size foo, .-foo
	.data
	.globl dataptr
dataptr:
	.quad foo
	.long ext
	.quad foo - .
	.long bar - .
	.section .note.GNU-stack,"",@progbits
`;

/** ElfFixtures are the compiled fixture objects, by name. */
export interface ElfFixtures {
  math: string;
  kernel: string;
  pic: string;
  group: string;
}

/** buildElfFixtures compiles every fixture object into dir. */
export function buildElfFixtures(dir: string): ElfFixtures {
  return {
    math: compileC(dir, "math", MATH_C, [...FIXTURE_CFLAGS, "-fcommon"]),
    kernel: compileC(dir, "kernel", KERNEL_C, [...FIXTURE_CFLAGS, "-mcmodel=kernel", "-fno-pic"]),
    pic: compileC(dir, "pic", PIC_C, [...FIXTURE_CFLAGS, "-fPIC"]),
    group: assemble(dir, "group", GROUP_S),
  };
}
