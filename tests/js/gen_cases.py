"""Conformance cases for am.js's page machine (arpc.md C3: "Node's test runner checks it
against the Python core").

Random schemas in the page machine's subset (multi, require, add, remove; no auto, no
after) and random mutation sequences run on the Python core; each step records the
result, the ticks, the queue tick and the handler calls. ``js/test/machine.test.mjs``
replays them on ``js/src/machine.js`` and must get the same.

    python tests/js/gen_cases.py OUT.json [--n 300] [--seed 1]
"""

from __future__ import annotations

import argparse
import json
import random
from typing import Any

import trio_am as am

OPS = ("add", "remove", "set", "toggle")
#: mutations the handlers may make per step (the JS side uses the same number)
BUDGET = 3


def wire(res: am.Result) -> int:
    """A result as aRPC sends it: 0, 1, or the queue tick when queued."""
    return res.queue_tick if res.is_queued else int(res)


def random_schema(rng: random.Random) -> dict[str, dict[str, Any]]:
    names = [f"S{i}" for i in range(rng.randint(2, 7))]
    schema: dict[str, dict[str, Any]] = {}
    for n in names:
        others = [o for o in names if o != n]
        d: dict[str, Any] = {}
        if rng.random() < 0.3:
            d["multi"] = True
        for rel, p in (("require", 0.25), ("add", 0.3), ("remove", 0.3)):
            if others and rng.random() < p:
                d[rel] = rng.sample(others, rng.randint(1, min(2, len(others))))
        if set(d.get("require", ())) & set(d.get("remove", ())):
            d.pop("remove")
        schema[n] = d
    return schema


def random_handlers(rng: random.Random, names: list[str]) -> dict[str, Any]:
    """A table the JS side rebuilds: vetoes, and final handlers that mutate."""
    table: dict[str, Any] = {"veto_enter": [], "veto_exit": [], "then": {}}
    for n in names:
        r = rng.random()
        if r < 0.12:
            table["veto_enter"].append(n)
        elif r < 0.2:
            table["veto_exit"].append(n)
        if rng.random() < 0.2:
            table["then"][f"{n}_state"] = [rng.choice(OPS[:2]), rng.choice(names)]
        if rng.random() < 0.1:
            table["then"][f"{n}_end"] = ["add", rng.choice(names)]
    if rng.random() < 0.15:
        table["raise"] = f"{rng.choice(names)}_state"
    return table


class Handlers:
    def __init__(self, table: dict[str, Any], names: list[str], log: list[Any]) -> None:
        self.table = table
        self.log = log
        self.budget = 0
        for n in names:
            for kind in ("enter", "exit", "state", "end"):
                setattr(self, f"{n}_{kind}", self._make(f"{n}_{kind}", kind, n))

    def _make(self, hname: str, kind: str, state: str) -> Any:
        def handler(e: am.Event) -> Any:
            self.log.append(hname)
            if hname == self.table.get("raise"):
                raise RuntimeError("boom")
            if kind == "enter" and state in self.table["veto_enter"]:
                return False
            if kind == "exit" and state in self.table["veto_exit"]:
                return False
            then = self.table["then"].get(hname)
            if then and self.budget > 0:  # a budget per step: handler chains may loop
                self.budget -= 1
                res = e.machine.mutate(then[0], [then[1]])
                self.log.append(f"{then[0]}:{then[1]}={wire(res)}")
            return None

        return handler


def run_case(rng: random.Random) -> dict[str, Any]:
    schema = random_schema(rng)
    names = list(schema)
    table = random_handlers(rng, names)
    mach = am.Machine(schema, id="case")
    log: list[Any] = []
    handlers = Handlers(table, names, log)
    mach.bind_handlers(handlers)
    steps = []
    for _ in range(rng.randint(4, 14)):
        op = rng.choice(OPS)
        called = rng.sample(names, rng.randint(1 if op != "set" else 0, min(3, len(names))))
        log.clear()
        handlers.budget = BUDGET
        res = mach.mutate(op, called)
        steps.append(
            {
                "op": op,
                "called": called,
                "result": wire(res),
                "ticks": list(mach.time()),
                "queue_tick": mach.queue_tick,
                "log": list(log),
            }
        )
    return {"schema": schema, "handlers": table, "names": list(mach.state_names), "steps": steps}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out")
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    rng = random.Random(args.seed)
    cases = [run_case(rng) for _ in range(args.n)]
    with open(args.out, "w") as f:
        json.dump(cases, f)


if __name__ == "__main__":
    main()
