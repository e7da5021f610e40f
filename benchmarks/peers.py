"""Peer cases: pytransitions (``transitions``) and ``python-statemachine``.

Every public ``*_toggle_rate`` / ``*_memory`` function raises :class:`PeerMissing` when its
library is not installed; ``run.py`` prints "not installed" then.
"""

from __future__ import annotations

import importlib.util
from typing import Any

try:
    from . import timing
except ImportError:  # run as a script: benchmarks/ is on sys.path
    import timing  # type: ignore[no-redef]

N_STATES = 10
TRANSITIONS = "transitions"
STATEMACHINE = "statemachine"
PEER_LABELS = {TRANSITIONS: "pytransitions", STATEMACHINE: "python-statemachine"}


class PeerMissing(RuntimeError):
    """The peer library is not installed."""


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def version(module: str) -> str | None:
    if not installed(module):
        return None
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    dist = {TRANSITIONS: "transitions", STATEMACHINE: "python-statemachine"}[module]
    try:
        return dist_version(dist)
    except PackageNotFoundError:
        return "?"


def _require(module: str) -> None:
    if not installed(module):
        raise PeerMissing(f"{PEER_LABELS.get(module, module)} not installed")


# --- pytransitions ---------------------------------------------------------------------------


class _Counter:
    """A pytransitions model counting entries into "on"."""

    def __init__(self) -> None:
        self.n = 0

    def on_enter_on(self) -> None:
        self.n += 1


def transitions_toggle_machine() -> Any:
    """A model with a two-state toggle and one callback (``on_enter_on``); returns the model."""
    _require(TRANSITIONS)
    from transitions import Machine

    model = _Counter()
    Machine(
        model,
        states=["off", "on"],
        transitions=[["toggle", "off", "on"], ["toggle", "on", "off"]],
        initial="off",
    )
    return model


def transitions_toggle_run_n() -> timing.RunN:
    model = transitions_toggle_machine()
    toggle = model.toggle

    def run_n(n: int) -> float:
        return timing.timed(lambda: _loop(toggle, n))

    return run_n


def _ten_states_transitions() -> tuple[list[str], list[list[str]]]:
    states = [f"S{i}" for i in range(N_STATES)]
    steps = [["step", states[i], states[(i + 1) % N_STATES]] for i in range(N_STATES)]
    return states, [*steps, ["reset", "*", "S0"]]


def transitions_ten_states_factory() -> Any:
    """A factory of (model, Machine) pairs with 10 states, a step cycle and a reset."""
    _require(TRANSITIONS)
    from transitions import Machine

    states, trans = _ten_states_transitions()

    class Model:
        pass

    def factory() -> Any:
        model = Model()
        return model, Machine(model, states=states, transitions=trans, initial="S0")

    return factory


# --- python-statemachine ---------------------------------------------------------------------


def _statemachine_toggle_class() -> type:
    from statemachine import State, StateMachine

    class Toggle(StateMachine):
        off = State(initial=True)
        on = State()
        toggle = off.to(on) | on.to(off)

        def __init__(self) -> None:
            self.n = 0
            super().__init__()

        def on_enter_on(self) -> None:
            self.n += 1

    return Toggle


def statemachine_toggle_machine() -> Any:
    """A python-statemachine ``StateMachine`` toggling off/on with one ``on_enter_on``."""
    _require(STATEMACHINE)
    return _statemachine_toggle_class()()


def statemachine_toggle_run_n() -> timing.RunN:
    sm = statemachine_toggle_machine()
    toggle = sm.toggle

    def run_n(n: int) -> float:
        return timing.timed(lambda: _loop(toggle, n))

    return run_n


def _statemachine_ten_states_class() -> type:
    from statemachine import State, StateMachine

    names = [f"s{i}" for i in range(N_STATES)]
    ns: dict[str, Any] = {
        name: State(initial=(i == 0), final=False) for i, name in enumerate(names)
    }
    states = [ns[name] for name in names]
    step = states[0].to(states[1])
    for i in range(1, N_STATES):
        step |= states[i].to(states[(i + 1) % N_STATES])
    reset = states[1].to(states[0])
    for st in states[2:]:
        reset |= st.to(states[0])
    ns.update(step=step, reset=reset)
    return type("TenStates", (StateMachine,), ns)


def statemachine_ten_states_factory() -> Any:
    """A factory of python-statemachine instances with 10 states, a step cycle and a reset."""
    _require(STATEMACHINE)
    return _statemachine_ten_states_class()


# --- shared ----------------------------------------------------------------------------------


def _loop(fn: Any, n: int) -> None:
    for _ in range(n):
        fn()


TOGGLE_RUN_N = {
    TRANSITIONS: transitions_toggle_run_n,
    STATEMACHINE: statemachine_toggle_run_n,
}
TEN_STATES_USE = {
    TRANSITIONS: lambda pair: pair[0].step(),
    STATEMACHINE: lambda sm: sm.step(),
}
TEN_STATES_FACTORY = {
    TRANSITIONS: transitions_ten_states_factory,
    STATEMACHINE: statemachine_ten_states_factory,
}


def toggle_rate(peer: str, *, target_s: float, repeats: int) -> timing.Rate:
    """Case 1 for a peer: toggles per second."""
    return timing.measure_rate(TOGGLE_RUN_N[peer](), target_s=target_s, repeats=repeats)


def memory(peer: str, count: int) -> timing.Memory:
    """Case 3 for a peer: bytes per 10-state machine, fresh and after one ``step``."""
    return timing.measure_memory(TEN_STATES_FACTORY[peer](), count, TEN_STATES_USE[peer])
