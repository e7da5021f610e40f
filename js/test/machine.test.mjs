// Replays conformance cases generated on the Python core (tests/js/gen_cases.py) on the
// page machine (src/machine.js): results, ticks, queue ticks and handler calls must match.
// Run: TRIO_AM_CASES=cases.json node --test test/machine.test.mjs
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import { Machine } from "../src/machine.js";

const path = process.env.TRIO_AM_CASES;

const BUDGET = 3; // as in gen_cases.py: handler chains may loop

function handlersFor(table, names, log) {
  const h = { budget: 0 };
  for (const n of names) {
    for (const kind of ["enter", "exit", "state", "end"]) {
      const hname = `${n}_${kind}`;
      h[hname] = (e) => {
        log.push(hname);
        if (hname === table.raise) throw new Error("boom");
        if (kind === "enter" && table.veto_enter.includes(n)) return false;
        if (kind === "exit" && table.veto_exit.includes(n)) return false;
        const then = table.then[hname];
        if (then && h.budget > 0) {
          h.budget -= 1;
          const res = e.machine.mutate(then[0], [then[1]]);
          log.push(`${then[0]}:${then[1]}=${res}`);
        }
        return undefined;
      };
    }
  }
  return h;
}

test("the page machine matches the Python core", { skip: !path && "TRIO_AM_CASES is not set" }, () => {
  const cases = JSON.parse(fs.readFileSync(path, "utf8"));
  assert.ok(cases.length > 0, "no cases");
  cases.forEach((c, ci) => {
    const log = [];
    const m = new Machine(c.schema, { id: "case" });
    const handlers = handlersFor(c.handlers, Object.keys(c.schema), log);
    m.bindHandlers(handlers);
    assert.deepEqual(m.names, c.names, `case ${ci}: state names`);
    c.steps.forEach((step, si) => {
      log.length = 0;
      handlers.budget = BUDGET;
      const res = m.mutate(step.op, step.called);
      const where = `case ${ci} step ${si} (${step.op} ${step.called.join(",")}) schema ${JSON.stringify(c.schema)} handlers ${JSON.stringify(c.handlers)}`;
      assert.deepEqual(
        { result: res, ticks: m.time(), queue_tick: m.queueTick, log: [...log] },
        { result: step.result, ticks: step.ticks, queue_tick: step.queue_tick, log: step.log },
        where,
      );
    });
  });
});

test("auto and after are refused", () => {
  assert.throws(() => new Machine({ A: { auto: true } }), /auto/);
  assert.throws(() => new Machine({ A: { after: ["B"] }, B: {} }), /after/);
  assert.throws(() => new Machine({ A: { require: ["Nope"] } }), /unknown state/);
  assert.throws(() => new Machine({ A: {} }).add1("Nope"), /not in the schema/);
});
