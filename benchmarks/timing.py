"""Measurement helpers shared by the benchmark cases (no third-party imports).

A case hands over ``run_n(n) -> seconds``: it performs ``n`` operations and returns the time
its hot loop took (setup excluded), measured with :func:`time.perf_counter`. :func:`measure_rate`
calibrates ``n`` so that one repeat lasts about ``target_s`` and reports the best and the
median rate over ``repeats`` repeats.
"""

from __future__ import annotations

import gc
import statistics
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

RunN = Callable[[int], float]


@dataclass(frozen=True)
class Rate:
    """Operations per second: the best and the median of several repeats."""

    best: float
    median: float
    n: int
    repeats: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Memory:
    """Bytes per object: net (still allocated after creation) and peak during creation."""

    net_per_obj: float
    peak_per_obj: float
    count: int
    used_net_per_obj: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Latency:
    """Latency percentiles in microseconds."""

    p50_us: float
    p99_us: float
    min_us: float
    max_us: float
    rounds: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def timed(fn: Callable[[], object]) -> float:
    """Seconds taken by one call of ``fn``."""
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def calibrate(run_n: RunN, target_s: float, start: int = 16, max_n: int = 10_000_000) -> int:
    """Return an ``n`` for which ``run_n(n)`` lasts about ``target_s`` seconds."""
    n = start
    while True:
        elapsed = run_n(n)
        if elapsed >= target_s / 4 or n >= max_n:
            break
        n *= 4
    per_op = max(elapsed, 1e-9) / n
    return max(1, min(max_n, round(target_s / per_op)))


def measure_rate(run_n: RunN, *, target_s: float = 0.25, repeats: int = 5) -> Rate:
    """Calibrate, then time ``repeats`` runs of ``run_n``; GC runs normally, collected before each."""
    n = calibrate(run_n, target_s)
    rates = []
    for _ in range(repeats):
        gc.collect()
        rates.append(n / max(run_n(n), 1e-12))
    return Rate(best=max(rates), median=statistics.median(rates), n=n, repeats=repeats)


def measure_memory(
    factory: Callable[[], object], count: int, use: Callable[[Any], object] | None = None
) -> Memory:
    """Bytes per object for ``count`` objects built by ``factory``, with tracemalloc.

    One object is built (and used) first, so class-level caches filled lazily by the first
    instance are not charged to the measured ones. With ``use``, every object is then used
    once (e.g. one mutation) and the net bytes after that are reported as well.
    """
    first = factory()
    if use is not None:
        use(first)
    del first
    gc.collect()
    tracemalloc.start()
    try:
        base, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        objs = [factory() for _ in range(count)]
        gc.collect()
        current, peak = tracemalloc.get_traced_memory()
        used = None
        if use is not None:
            for obj in objs:
                use(obj)
            gc.collect()
            used = (tracemalloc.get_traced_memory()[0] - base) / count
    finally:
        tracemalloc.stop()
    del objs
    return Memory(
        net_per_obj=(current - base) / count,
        peak_per_obj=(peak - base) / count,
        count=count,
        used_net_per_obj=used,
    )


def percentiles(samples_s: list[float]) -> Latency:
    """p50/p99/min/max in microseconds of samples given in seconds."""
    us = sorted(s * 1e6 for s in samples_s)
    if not us:
        return Latency(0.0, 0.0, 0.0, 0.0, 0)

    def pct(p: float) -> float:
        return us[min(len(us) - 1, round(p * (len(us) - 1)))]

    return Latency(p50_us=pct(0.50), p99_us=pct(0.99), min_us=us[0], max_us=us[-1], rounds=len(us))
