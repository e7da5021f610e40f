"""Final-handler return values, handler timeouts, dry runs queued from handlers, and the
ExceptionHandler mixin."""

from __future__ import annotations

import logging
import time

import pytest

import trio_am as am


def test_final_handler_return_value_is_ignored() -> None:
    class H:
        def A_state(self, e: am.Event) -> bool:
            return False  # not a veto: final handlers cannot cancel

        def A_end(self, e: am.Event) -> bool:
            return False

    m = am.Machine({"A": {}}, handlers=H())
    assert m.add1("A") == am.Result.EXECUTED
    assert m.string_all() == "(A:1) [Exception:0]"
    assert m.remove1("A") == am.Result.EXECUTED
    assert m.string_all() == "() [A:2 Exception:0]"
    assert not m.is_err()


def _slow(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def test_negotiation_handler_overrun_vetoes_and_is_reported() -> None:
    class H:
        def A_enter(self, e: am.Event) -> None:
            _slow(0.02)

    m = am.Machine({"A": {}}, handlers=H(), handler_timeout=0.001)
    assert m.add1("A") == am.Result.CANCELED
    assert m.not1("A")
    assert not m.is_err()  # reported only, not the Exception state
    (err,) = list(m.internal_errors)
    assert isinstance(err, am.HandlerTimeoutError)
    assert err.handler == "A_enter"
    assert err.state == "A"
    assert err.duration >= 0.001
    assert err.machine_id == m.id


def test_final_handler_overrun_is_reported_only() -> None:
    class H:
        def A_state(self, e: am.Event) -> None:
            _slow(0.02)

    m = am.Machine({"A": {}}, handlers=H(), handler_timeout=0.001)
    assert m.add1("A") == am.Result.EXECUTED
    assert m.is1("A")
    assert [type(e) for e in m.internal_errors] == [am.HandlerTimeoutError]


def test_timeouts_to_exception_adds_exception() -> None:
    class H:
        def A_state(self, e: am.Event) -> None:
            _slow(0.02)

    m = am.Machine({"A": {}}, handlers=H(), handler_timeout=0.001, timeouts_to_exception=True)
    m.add1("A")
    assert m.is_all(["A", "Exception"])
    assert isinstance(m.err, am.HandlerTimeoutError)


def test_fast_handlers_are_not_reported() -> None:
    class H:
        def A_enter(self, e: am.Event) -> None:
            pass

    m = am.Machine({"A": {}}, handlers=H(), handler_timeout=5.0)
    assert m.add1("A") == am.Result.EXECUTED
    assert not m.internal_errors


def test_bad_handler_timeout() -> None:
    with pytest.raises(am.Error):
        am.Machine({"A": {}}, handler_timeout=0)


def test_internal_errors_are_bounded() -> None:
    class T:
        def transition_end(self, tx: am.Transition) -> None:
            raise RuntimeError("tracer")

    m = am.Machine({"A": {}})
    for _ in range(150):
        m.bind_tracer(T())  # each one raises once and is detached
        m.toggle1("A")
    assert len(m.internal_errors) == 100


def test_dry_run_from_handler_is_queued_and_runs_next() -> None:
    seen: list[tuple[str, bool]] = []
    results: list[am.Result] = []

    class H:
        def A_state(self, e: am.Event) -> None:
            results.append(e.machine.can_add1("B"))
            results.append(e.machine.add1("C"))

        def B_enter(self, e: am.Event) -> None:
            seen.append((e.name, e.is_check))

    m = am.Machine({"A": {}, "B": {}, "C": {}}, handlers=H())
    assert m.add1("A") == am.Result.EXECUTED
    dry, queued = results
    assert dry == am.Result.QUEUED and dry.queue_tick == 2  # Go's constant, not a tick
    assert queued == am.Result.QUEUED and queued.queue_tick == 3
    assert seen == [("B_enter", True)]  # the dry run ran, quietly
    assert m.string_all() == "(A:1 C:1) [B:0 Exception:0]"


def test_exception_handler_mixin_logs(caplog: pytest.LogCaptureFixture) -> None:
    class H(am.ExceptionHandler):
        pass

    m = am.Machine({"A": {}}, handlers=H(), id="mixin")
    with caplog.at_level(logging.ERROR, logger="trio_am.machine"):
        m.add_err(ValueError("kaput"))
    records = [r for r in caplog.records if "kaput" in r.getMessage()]
    assert records and records[0].levelno == logging.ERROR
    assert getattr(records[0], "machine_id", None) == "mixin"
    assert "ValueError" in records[0].getMessage()  # the traceback is included


def test_error_lines_reach_stdlib_logging_at_error_level(caplog: pytest.LogCaptureFixture) -> None:
    m = am.Machine({"A": {}}, id="errlog", log_level=am.LogLevel.CHANGES)
    with caplog.at_level(logging.DEBUG, logger="trio_am.machine"):
        m.add1("A")
        m.add_err(ValueError("bad"))
    levels = {r.getMessage().split("] ", 1)[1].split(" ")[0]: r.levelno for r in caplog.records}
    assert levels["[state]"] == logging.INFO
    assert levels["[error]"] == logging.ERROR
