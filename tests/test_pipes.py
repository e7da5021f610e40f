"""Pipes: final handlers on a source machine that mutate a target machine.

api.md "Pipes"; machine.md §15.3.
"""

from __future__ import annotations

import pytest
import trio

import trio_am as am
from trio_am import pipes
from trio_am.schemas import CONNECTED_SCHEMA

SRC = {"Foo": {}, "Bar": {}, "Ready": {}, "Start": {}, "M": {"multi": True}}
DST = {
    "Foo": {},
    "Bar": {},
    "Ready": {},
    "Start": {},
    "M": {"multi": True},
    "FooOn": {},
    "SrcReady": {},
    "ErrSrc": {"require": ["Exception"]},
}


class TxLog:
    """A tracer recording each ended transition of the target: (called, source id, accepted)."""

    def __init__(self):
        self.txs = []

    def transition_end(self, tx):
        src = tx.mutation.source
        self.txs.append((tx.mutation.type, tuple(tx.mutation.called), src, tx.is_accepted))

    @property
    def sources(self):
        return [s.mach_id if s is not None else None for _, _, s, _ in self.txs]


class ArgLog:
    def __init__(self):
        self.args = []

    def Foo_state(self, e):
        self.args.append(("Foo_state", dict(e.args)))

    def Foo_end(self, e):
        self.args.append(("Foo_end", dict(e.args)))


def machines(dst_handlers=None):
    src = am.Machine(SRC, id="src")
    dst = am.Machine(DST, id="dst", handlers=dst_handlers)
    log = TxLog()
    dst.bind_tracer(log)
    return src, dst, log


def all_from(log, source):
    assert log.txs, "the target saw no transition"
    return all(s is not None and s.mach_id == source.id for _, _, s, _ in log.txs)


# ---------------------------------------------------------------------------------------
# bind and its variants
# ---------------------------------------------------------------------------------------


async def test_bind_mirrors_state_and_records_source():
    src, dst, log = machines()
    binding = pipes.bind(src, dst, "Foo")
    assert isinstance(binding, pipes.PipeBinding)
    src.add1("Foo")
    assert dst.is1("Foo")
    src.add1("Bar")
    assert dst.not1("Bar")  # only Foo is piped
    src.remove1("Foo")
    assert dst.not1("Foo")
    assert len(log.txs) == 2
    assert all_from(log, src)
    # the source fields point at the source transition
    _, _, source, _ = log.txs[0]
    assert source.tx_id and isinstance(source.mach_time, int)


async def test_bind_target_names_and_args():
    args = ArgLog()
    src, dst, log = machines(dst_handlers=None)
    dst.bind_handler_maps(
        None, {"FooOn_state": lambda e: args.args.append(("on", dict(e.args)))}, id="args"
    )
    pipes.bind(src, dst, "Foo", target_on="FooOn", target_off="Bar")
    dst.add1("Bar")
    src.add1("Foo", {"n": 1})
    assert dst.is_all(["FooOn", "Bar"])
    assert args.args == [("on", {"n": 1})]
    src.remove1("Foo")
    assert dst.is1("FooOn")  # target_off differs from target_on
    assert dst.not1("Bar")
    assert all_from(log, src) is False  # the manual add1("Bar") had no source
    assert log.sources == [None, "src", "src"]


async def test_bind_detach_stops_piping():
    src, dst, log = machines()
    binding = pipes.bind(src, dst, "Foo")
    assert binding.ids and set(binding.ids) <= set(src.handler_ids())
    src.add1("Foo")
    binding.detach()
    assert not set(binding.ids) & set(src.handler_ids())
    src.remove1("Foo")
    assert dst.is1("Foo")
    src.add1("Foo")
    binding.detach()  # idempotent
    assert len(log.txs) == 1


async def test_bind_multi_reactivation_pipes_again():
    src, dst, log = machines()
    pipes.bind(src, dst, "M")
    src.add1("M")
    src.add1("M")
    assert dst.tick("M") == 3
    assert all_from(log, src)


async def test_bind_many():
    src, dst, log = machines()
    binding = pipes.bind_many(src, dst, ["Foo", "Bar"], ["FooOn", "Bar"])
    src.add(["Foo", "Bar"])
    assert dst.is_all(["FooOn", "Bar"])
    src.remove1("Foo")
    assert dst.not1("FooOn") and dst.is1("Bar")
    assert all_from(log, src)
    binding.detach()
    src.remove1("Bar")
    assert dst.is1("Bar")
    with pytest.raises(ValueError):
        pipes.bind_many(src, dst, ["Foo", "Bar"], ["Foo"])


async def test_bind_ready():
    src, dst, log = machines()
    binding = pipes.bind_ready(src, dst)
    src.add1("Ready")
    assert dst.is1("Ready")
    src.remove1("Ready")
    assert dst.not1("Ready")
    binding.detach()
    pipes.bind_ready(src, dst, target_state="SrcReady")
    src.add1("Ready")
    assert dst.is1("SrcReady") and dst.not1("Ready")
    assert all_from(log, src)


async def test_bind_start():
    src, dst, log = machines()
    binding = pipes.bind_start(src, dst)
    src.add1("Start")
    assert dst.is1("Start")
    src.remove1("Start")
    assert dst.not1("Start")
    assert all_from(log, src)
    binding.detach()
    src.add1("Start")
    assert dst.not1("Start")


async def test_bind_err():
    src, dst, log = machines()
    binding = pipes.bind_err(src, dst)
    boom = ValueError("boom")
    src.add_err(boom)
    assert dst.is1("Exception")
    assert dst.err is boom
    src.remove1("Exception")
    assert dst.is1("Exception")  # bind_err removes nothing
    assert all_from(log, src)
    binding.detach()
    src.add_err(KeyError("later"))
    assert dst.err is boom


async def test_bind_err_to_error_state():
    src, dst, log = machines()
    pipes.bind_err(src, dst, "ErrSrc")
    boom = RuntimeError("x")
    src.add_err(boom)
    assert dst.is_all(["ErrSrc", "Exception"])
    assert dst.err is boom
    assert all_from(log, src)


async def test_bind_connected():
    schema = am.schema_merge(am.BASIC_SCHEMA, CONNECTED_SCHEMA)
    src = am.Machine(schema, id="conn")
    dst = am.Machine({"Cing": {}, "Ced": {}, "Ding": {}, "Ded": {}}, id="view")
    log = TxLog()
    dst.bind_tracer(log)
    binding = pipes.bind_connected(src, dst, "Cing", "Ced", "Ding", "Ded")
    src.add1("Start")  # Disconnected is auto
    assert src.is1("Disconnected")
    assert dst.is1("Ded")
    src.add1("Connecting")
    assert dst.is1("Cing")
    src.add1("Connected")
    assert dst.is1("Ced")
    src.add1("Disconnecting")
    assert dst.is1("Ding")
    assert dst.active_states() == ["Cing", "Ced", "Ding", "Ded"]  # each activation adds
    assert all_from(log, src)
    binding.detach()
    dst.set([])
    src.add1("Connecting")
    assert dst.active_states() == []


async def test_bind_any_sets_target():
    src, dst, log = machines()
    binding = pipes.bind_any(src, dst, ["Foo", "Bar"], ["FooOn", "Bar"])
    dst.add1("Start")  # not among the mapped states, yet set() replaces the active set
    src.add1("Foo")
    assert dst.active_states() == ["FooOn"]
    src.add1("Bar")
    assert sorted(dst.active_states()) == ["Bar", "FooOn"]
    n = len(log.txs)
    src.add1("Ready")  # unmapped: the target already matches, so no set()
    assert len(log.txs) == n
    src.remove1("Foo")
    assert dst.active_states() == ["Bar"]
    assert log.sources[1:] == ["src"] * (len(log.txs) - 1)
    binding.detach()
    src.add1("Foo")
    assert dst.active_states() == ["Bar"]
    with pytest.raises(ValueError):
        pipes.bind_any(src, dst, ["Foo"], ["Foo", "Bar"])


async def test_bind_any_default_states():
    src, dst, log = machines()
    pipes.bind_any(src, dst)
    src.add(["Foo", "Ready"])
    assert dst.is_all(["Foo", "Ready"])
    src.remove1("Foo")
    assert dst.active_states() == ["Ready"]
    assert all_from(log, src)


async def test_sync_mirrors_now_and_later():
    src, dst, log = machines()
    src.add1("Foo")
    dst.add1("Bar")
    binding = pipes.sync(src, dst, ["Foo", "Bar"])
    assert dst.is1("Foo") and dst.not1("Bar")
    assert len(log.txs) == 3  # the manual add, then one add and one remove
    src.add1("Bar")
    assert dst.is1("Bar")
    src.remove1("Foo")
    assert dst.not1("Foo")
    assert log.sources[-2:] == ["src", "src"]
    binding.detach()
    src.add1("Foo")
    assert dst.not1("Foo")
    with pytest.raises(ValueError):
        pipes.sync(src, dst, ["Foo"], ["Foo", "Bar"])


async def test_sync_with_target_names():
    src, dst, _ = machines()
    src.add1("Ready")
    pipes.sync(src, dst, ["Ready", "Foo"], ["SrcReady", "FooOn"])
    assert dst.is1("SrcReady") and dst.not1("FooOn")
    src.add1("Foo")
    assert dst.is1("FooOn")


# ---------------------------------------------------------------------------------------
# pipe_add / pipe_remove (and _flat)
# ---------------------------------------------------------------------------------------


async def test_pipe_add_passes_args():
    args = ArgLog()
    src, dst, log = machines(dst_handlers=args)
    binding = pipes.pipe_add(src, dst, "Foo")
    src.add1("Foo", {"k": "v"})
    assert dst.is1("Foo")
    assert args.args == [("Foo_state", {"k": "v"})]
    src.remove1("Foo")
    assert dst.is1("Foo")  # pipe_add never removes
    assert all_from(log, src)
    binding.detach()
    dst.remove1("Foo")
    src.add1("Foo")
    assert dst.not1("Foo")


async def test_pipe_add_err_state_adds_exception():
    src, dst, log = machines()
    pipes.pipe_add(src, dst, "Foo", "ErrSrc")
    src.add1("Foo")
    assert dst.is_all(["ErrSrc", "Exception"])
    assert all_from(log, src)


async def test_pipe_add_flat_skips_active_and_drops_args():
    args = ArgLog()
    src, dst, log = machines(dst_handlers=args)
    binding = pipes.pipe_add_flat(src, dst, "M", "Foo")
    src.add1("M", {"k": 1})
    assert dst.is1("Foo")
    assert args.args == [("Foo_state", {})]
    src.add1("M", {"k": 2})  # Foo already active: skipped
    assert len(log.txs) == 1
    assert all_from(log, src)
    binding.detach()
    dst.remove1("Foo")
    src.add1("M")
    assert dst.not1("Foo")


async def test_pipe_remove_passes_args():
    args = ArgLog()
    src, dst, log = machines(dst_handlers=args)
    dst.add1("Foo")
    binding = pipes.pipe_remove(src, dst, "Bar", "Foo")
    src.add1("Bar")
    assert dst.is1("Foo")  # only deactivation pipes
    src.remove1("Bar", {"why": "done"})
    assert dst.not1("Foo")
    assert args.args[-1] == ("Foo_end", {"why": "done"})
    assert log.sources[1:] == ["src"]
    binding.detach()
    dst.add1("Foo")
    src.add1("Bar")
    src.remove1("Bar")
    assert dst.is1("Foo")


async def test_pipe_remove_flat_skips_inactive():
    args = ArgLog()
    src, dst, log = machines(dst_handlers=args)
    binding = pipes.pipe_remove_flat(src, dst, "Bar", "Foo")
    src.add1("Bar")
    src.remove1("Bar")  # Foo inactive in the target: nothing is sent
    assert log.txs == []
    dst.add1("Foo")
    src.add1("Bar")
    src.remove1("Bar", {"why": "x"})
    assert dst.not1("Foo")
    assert args.args[-1] == ("Foo_end", {})  # flat: no args
    assert log.sources == [None, "src"]
    binding.detach()
    dst.add1("Foo")
    src.add1("Bar")
    src.remove1("Bar")
    assert dst.is1("Foo")


# ---------------------------------------------------------------------------------------
# bad input, busy target, combination, Trio use
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda s, d: pipes.bind(s, d, "Nope"),
        lambda s, d: pipes.bind(s, d, "Foo", target_on="Nope"),
        lambda s, d: pipes.bind_many(s, d, ["Foo", "Nope"]),
        lambda s, d: pipes.bind_err(s, d, "Nope"),
        lambda s, d: pipes.pipe_add(s, d, "Foo", "Nope"),
        lambda s, d: pipes.pipe_add_flat(s, d, "Nope"),
        lambda s, d: pipes.pipe_remove(s, d, "Foo", "Nope"),
        lambda s, d: pipes.pipe_remove_flat(s, d, "Nope"),
        lambda s, d: pipes.sync(s, d, ["Nope"]),
        lambda s, d: pipes.bind_any(s, d, ["Foo"], ["Nope"]),
    ],
)
async def test_unknown_states_raise_and_bind_nothing(make):
    src, dst, _ = machines()
    before = src.handler_ids()
    with pytest.raises(am.StateUnknownError):
        make(src, dst)
    assert src.handler_ids() == before


async def test_pipe_into_a_busy_target_is_queued():
    """A pipe whose target is mid-transition queues the target mutation (never blocks)."""
    results = []

    class Dst:
        def Bar_state(self, e):
            src.add1("Foo")  # src pipes Foo back into dst while dst is busy

        def Foo_state(self, e):
            results.append(e.machine.is1("Bar"))

    src = am.Machine(SRC, id="src")
    dst = am.Machine(DST, id="dst", handlers=Dst())
    log = TxLog()
    dst.bind_tracer(log)
    pipes.bind(src, dst, "Foo")
    dst.add1("Bar")
    assert src.is1("Foo")
    assert dst.is_all(["Foo", "Bar"])
    assert results == [True]
    assert log.sources == [None, "src"]


async def test_bindings_combine_and_detach_together():
    src, dst, _ = machines()
    both = pipes.bind(src, dst, "Foo") | pipes.bind(src, dst, "Bar")
    assert len(both.ids) == 2
    both.detach()
    src.add(["Foo", "Bar"])
    assert dst.active_states() == []


async def test_pipes_between_running_machines():
    async with (
        am.open_machine(SRC, id="src") as src,
        am.open_machine(DST, id="dst") as dst,
    ):
        pipes.bind_ready(src, dst)
        ready = dst.when1("Ready")

        async def start():
            src.add1("Ready")

        src.fork(start)
        with trio.fail_after(1):
            await ready
        lost = dst.when_not1("Ready")
        src.remove1("Ready")
        assert lost.is_set()


async def test_bind_many_with_an_unknown_state_leaves_no_pipe():
    """StateUnknownError is "raised before anything changes: the machine is untouched"
    (_errors.py); here it left a live pipe for "Foo" that no binding can detach."""
    src, dst, _ = machines()
    with pytest.raises(am.StateUnknownError):
        pipes.bind_many(src, dst, ["Foo", "Nope"])
    src.add1("Foo")
    assert dst.not1("Foo")
