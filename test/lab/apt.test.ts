// Reading apt's answers and choosing the lab kernel when the pinned one is gone.
import assert from "node:assert/strict";
import { test } from "node:test";
import {
  chooseKernel,
  labPackages,
  PINNED,
  parseAptShow,
  parseMadison,
  releaseOf,
} from "../../src/lab/apt.js";

const madison = `linux-image-6.1.0-50-cloud-amd64-unsigned |  6.1.176-1 | http://deb.debian.org/debian bookworm/main amd64 Packages
linux-headers-6.1.0-50-cloud-amd64 |  6.1.176-1 | http://deb.debian.org/debian bookworm/main amd64 Packages
linux-headers-6.1.0-50-common |  6.1.176-1 | http://deb.debian.org/debian bookworm/main amd64 Packages
linux-kbuild-6.1 |  6.1.192-2 | http://deb.debian.org/debian-security bookworm-security/main amd64 Packages
linux-kbuild-6.1 |  6.1.190-1 | http://deb.debian.org/debian-security bookworm-security/main amd64 Packages
linux-kbuild-6.1 |  6.1.176-1 | http://deb.debian.org/debian bookworm/main amd64 Packages
linux-source-6.1 |  6.1.192-2 | http://deb.debian.org/debian-security bookworm-security/main amd64 Packages
linux-source-6.1 |  6.1.190-1 | http://deb.debian.org/debian-security bookworm-security/main amd64 Packages
linux-source-6.1 |  6.1.176-1 | http://deb.debian.org/debian bookworm/main amd64 Packages
linux-image-6.1.0-55-cloud-amd64-unsigned |  6.1.190-1 | http://deb.debian.org/debian-security bookworm-security/main amd64 Packages
linux-headers-6.1.0-55-cloud-amd64 |  6.1.190-1 | http://deb.debian.org/debian-security bookworm-security/main amd64 Packages
linux-headers-6.1.0-55-common |  6.1.190-1 | http://deb.debian.org/debian-security bookworm-security/main amd64 Packages
linux-image-6.1.0-56-cloud-amd64-unsigned |  6.1.192-2 | http://deb.debian.org/debian-security bookworm-security/main amd64 Packages
linux-headers-6.1.0-56-cloud-amd64 |  6.1.192-2 | http://deb.debian.org/debian-security bookworm-security/main amd64 Packages
`;

test("parseMadison collects every version of every package", () => {
  const m = parseMadison(madison);
  assert.deepEqual([...(m.get("linux-source-6.1") ?? [])], ["6.1.192-2", "6.1.190-1", "6.1.176-1"]);
  assert.equal(m.get("linux-image-6.1.0-50-cloud-amd64-unsigned")?.has("6.1.176-1"), true);
  assert.equal(parseMadison("N: Unable to locate package foo\n").size, 0);
});

test("chooseKernel takes the pinned kernel while all five packages exist", () => {
  assert.deepEqual(chooseKernel(parseMadison(madison), PINNED), { ...PINNED, pinned: true });
});

test("chooseKernel falls back to the newest complete version when the pinned one is gone", () => {
  const gone = madison
    .split("\n")
    .filter((l) => !l.startsWith("linux-image-6.1.0-50-"))
    .join("\n");
  // 6.1.192-2 (ABI 56) is newer but lacks its -common headers: 6.1.190-1 (ABI 55) is the newest complete one.
  assert.deepEqual(chooseKernel(parseMadison(gone), PINNED), {
    abi: "6.1.0-55",
    version: "6.1.190-1",
    pinned: false,
  });
});

test("chooseKernel returns null when no version is complete", () => {
  const onlySource = madison
    .split("\n")
    .filter((l) => l.startsWith("linux-source"))
    .join("\n");
  assert.equal(chooseKernel(parseMadison(onlySource), PINNED), null);
});

test("labPackages and releaseOf name the five packages and the release", () => {
  assert.deepEqual(labPackages(PINNED), {
    image: "linux-image-6.1.0-50-cloud-amd64-unsigned",
    headers: "linux-headers-6.1.0-50-cloud-amd64",
    common: "linux-headers-6.1.0-50-common",
    kbuild: "linux-kbuild-6.1",
    source: "linux-source-6.1",
  });
  assert.equal(releaseOf(PINNED), "6.1.0-50-cloud-amd64");
});

test("parseAptShow reads the first stanza's fields", () => {
  const f = parseAptShow(`Package: linux-kbuild-6.1
Version: 6.1.176-1
Filename: pool/main/l/linux/linux-kbuild-6.1_6.1.176-1_amd64.deb
Size: 1414900
SHA256: 667d2e1e94047031c3bcefa4bb67c2520bbc3cc1cce0aa592e67b108dbbead03

Package: linux-kbuild-6.1
Version: 6.1.192-2
`);
  assert.equal(f["Version"], "6.1.176-1");
  assert.equal(f["Size"], "1414900");
  assert.equal(f["SHA256"], "667d2e1e94047031c3bcefa4bb67c2520bbc3cc1cce0aa592e67b108dbbead03");
});
