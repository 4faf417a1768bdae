// Debian version ordering, checked against cases dpkg --compare-versions agrees with.
import assert from "node:assert/strict";
import { test } from "node:test";
import { compareDebVersions } from "../../src/lab/debver.js";

const ordered: [string, string][] = [
  ["6.1.176-1", "6.1.192-2"],
  ["6.1.192-1", "6.1.192-2"],
  ["6.1.9-1", "6.1.10-1"],
  ["6.1.170-3", "6.1.176-1"],
  ["1.0~rc1-1", "1.0-1"],
  ["1.0-1", "1.0-1+deb12u1"],
  ["1.0", "1.0-1"],
  ["9.9-9", "1:0.1-1"],
  ["1.0a-1", "1.0+-1"],
];

test("compareDebVersions orders versions as dpkg does", () => {
  for (const [lo, hi] of ordered) {
    assert.ok(compareDebVersions(lo, hi) < 0, `${lo} < ${hi}`);
    assert.ok(compareDebVersions(hi, lo) > 0, `${hi} > ${lo}`);
  }
  assert.equal(compareDebVersions("6.1.176-1", "6.1.176-1"), 0);
  assert.equal(compareDebVersions("0:6.1.176-1", "6.1.176-1"), 0);
});
