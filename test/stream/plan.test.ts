// Planning on the client (src/uptrack/plan.ts): what an upgrade, an install and a removal do,
// in which order, for a series of stacked updates.
import assert from "node:assert/strict";
import { test } from "node:test";
import { planInstall, planRemove, planUpgrade } from "../../src/uptrack/plan.js";

const index = [
  { id: "a", stacksOn: [] },
  { id: "b", stacksOn: ["a"] },
  { id: "x", stacksOn: [] },
  { id: "c", stacksOn: ["a", "b"] },
];
const ids = (steps: Array<{ action: string; id: string }>) => steps.map((s) => `${s.action} ${s.id}`);

test("upgrade installs what is not applied, in the index's order", () => {
  assert.deepEqual(ids(planUpgrade(index, [])), ["install a", "install b", "install x", "install c"]);
  assert.deepEqual(ids(planUpgrade(index, ["a", "x"])), ["install b", "install c"]);
  assert.deepEqual(planUpgrade(index, ["a", "b", "x", "c"]), []);
});

test("install brings what an update stacks on first; an unknown id is not_in_stream", () => {
  assert.deepEqual(ids(planInstall(index, [], ["c"])), ["install a", "install b", "install c"]);
  assert.deepEqual(ids(planInstall(index, ["a"], ["c", "x"])), ["install b", "install x", "install c"]);
  assert.throws(() => planInstall(index, [], ["nope"]), /no update nope/);
  assert.throws(
    () => planInstall([{ id: "b", stacksOn: ["a"] }], [], ["b"]),
    /b stacks on a, which the stream's index for this kernel does not list/,
  );
  assert.throws(
    () =>
      planInstall(
        [
          { id: "b", stacksOn: ["a"] },
          { id: "a", stacksOn: [] },
        ],
        [],
        ["b"],
      ),
    /lists b before a/,
  );
});

test("remove takes what stacks on an update first, newest first; --all everything", () => {
  const installed = index.slice(0, 2).concat(index[3]); // a, b, c
  assert.deepEqual(ids(planRemove(installed, ["a"])), ["remove c", "remove b", "remove a"]);
  assert.deepEqual(ids(planRemove(installed, ["c"])), ["remove c"]);
  assert.deepEqual(ids(planRemove(installed, "all")), ["remove c", "remove b", "remove a"]);
  assert.throws(() => planRemove(installed, ["x"]), /x is not installed from the stream/);
});
