"""The basics of trio_am: schema, handlers, mutations, results, clocks, errors.

Run it with ``python examples/basic.py``. No Trio run is needed here: mutations, checks
and clocks are synchronous (see ``subscriptions.py`` and ``fork_cancel.py`` for the
async side).

The machine models a small coffee maker:

* ``PowerOn``   the machine is switched on;
* ``WaterLow``  a sensor says the tank is nearly empty;
* ``Brewing``   making coffee: it *requires* ``PowerOn``, and its ``Brewing_enter``
  handler vetoes it while ``WaterLow`` is active;
* ``Light``     a lamp, to show ``toggle``;
* ``Descale``   a maintenance program whose handler fails, to show how a raising
  handler turns into the ``Exception`` state.

``Exception`` is not in the schema: every machine gets it (a *multi* state).
"""

from __future__ import annotations

import trio_am as am

SCHEMA: dict[str, dict[str, object]] = {
    "PowerOn": {},
    "WaterLow": {},
    "Brewing": {"require": ["PowerOn"]},
    "Light": {},
    "Descale": {"require": ["PowerOn"]},
}


class CoffeeHandlers:
    """Handlers are plain methods found by name: ``<State>_<kind>`` and ``any_<kind>``.

    * ``Foo_enter(e) -> bool | None`` runs before Foo activates; returning False vetoes
      the whole transition (None accepts).
    * ``Foo_state(e)`` runs after Foo activated; ``Foo_end(e)`` after it deactivated.
    * ``any_state(e)`` runs last, after every accepted transition.

    Handlers are synchronous and must not block.
    """

    def Brewing_enter(self, e: am.Event) -> bool:
        if e.machine.is1("WaterLow"):
            print("  Brewing_enter: veto, the water is low")
            return False
        cups = e.args.get("cups", 1)
        if cups > 4:
            print(f"  Brewing_enter: veto, {cups} cups do not fit")
            return False
        return True

    def Brewing_state(self, e: am.Event) -> None:
        # e.args is the args dict passed to the mutation (read-only here)
        print(f"  Brewing_state: brewing {e.args.get('cups', 1)} cup(s)")

    def Brewing_end(self, e: am.Event) -> None:
        print("  Brewing_end: done brewing")

    def Descale_state(self, e: am.Event) -> None:
        raise RuntimeError("descaler cartridge missing")

    def Exception_state(self, e: am.Event) -> None:
        print(f"  Exception_state: err={e.args['err']!r}")

    def any_state(self, e: am.Event) -> None:
        tx = e.transition
        print(f"  any_state: {tx.type} {tx.called_states()} -> {e.machine}")


def show(title: str, result: am.Result, mach: am.Machine) -> None:
    print(f"{title}: {result!r}  {mach.string_all()}")


def main() -> None:
    mach = am.Machine(SCHEMA, id="coffee", handlers=CoffeeHandlers())
    print("states:", mach.state_names)
    print("start:", mach.string_all())  # (active) [inactive], each with its tick

    # --- relations and vetoes -----------------------------------------------------
    print("\n# 1. Brewing requires PowerOn: the resolver cancels it, no handler runs")
    show("add1 Brewing", mach.add1("Brewing"), mach)

    print("\n# 2. Power on, but the water is low: Brewing_enter vetoes")
    show("add PowerOn WaterLow", mach.add(["PowerOn", "WaterLow"]), mach)
    show("add1 Brewing", mach.add1("Brewing"), mach)

    print("\n# 3. Refill, then brew with args")
    show("remove1 WaterLow", mach.remove1("WaterLow"), mach)
    show("add1 Brewing cups=9", mach.add1("Brewing", {"cups": 9}), mach)
    show("add1 Brewing cups=2", mach.add1("Brewing", {"cups": 2}), mach)
    both = mach.is_all(["PowerOn", "Brewing"])
    print(f"is1 Brewing: {mach.is1('Brewing')} | is_all PowerOn Brewing: {both}", end=" ")
    print(f"| not1 Light: {mach.not1('Light')}")

    print("\n# 4. toggle and set")
    show("toggle1 Light", mach.toggle1("Light"), mach)
    show("toggle1 Light", mach.toggle1("Light"), mach)
    # set() replaces the whole active set: Brewing ends
    show("set PowerOn Light", mach.set(["PowerOn", "Light"]), mach)

    # --- clocks -------------------------------------------------------------------
    print("\n# 5. Ticks and clocks: every change moves a state's tick; odd = active")
    tick = mach.tick("Brewing")
    print(f"tick Brewing: {tick} -> active? {am.is_active_tick(tick)}")
    print("clock:", mach.clock())
    before = mach.time()  # a Time: ticks in state order
    print("time:", before)
    # already active: no tick moves (any_state still runs: the transition was accepted)
    mach.add1("PowerOn")
    print("after re-adding PowerOn, is_time(before):", mach.is_time(before))
    mach.add1("Brewing")
    mach.remove1("Brewing")
    tick = mach.tick("Brewing")
    print(f"after brewing once more, is_time(before): {mach.is_time(before)}", end=" ")
    # each activation moves the tick by 2 (on, then off): activations = (tick + 1) // 2
    print(f"| Brewing tick: {tick} | activations: {am.helpers.activations(tick)}")

    # --- errors -------------------------------------------------------------------
    print("\n# 6. Errors: add_err() activates the Exception state with args['err']")
    show("add_err", mach.add_err(ValueError("sensor offline")), mach)
    print("is_err:", mach.is_err(), "| mach.err:", repr(mach.err))
    show("remove1 Exception", mach.remove1("Exception"), mach)

    print("\n# 7. A final handler that raises: the change is rolled back, Exception added")
    show("add1 Descale", mach.add1("Descale"), mach)
    print("mach.err:", repr(mach.err))

    print("\nfinal:", mach.string_all())


if __name__ == "__main__":
    main()
