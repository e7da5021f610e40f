"""``AM_*`` environment switches (tools.md §2.4): :func:`bind_env`.

``bind_env(mach)`` reads the environment when called, checks every value first (a bad
one raises :class:`ValueError` naming the variable, before anything is bound), then
binds what the variables ask for and returns an :class:`EnvBindings` saying what it did.
Calling it again for the same machine returns the first result.

Flags are on for ``1``, ``true``, ``yes``, ``on``, ``y`` or any positive integer, off when
unset, empty, ``0``, ``false``, ``no``, ``off`` or ``n`` (case-insensitive); anything else
is an error.

==================================  =======================================================
variable                            effect here
==================================  =======================================================
``AM_TEST_RUNNER``                  nothing at all is bound (unless ``AM_TEST_DEBUG``)
``AM_DBG_ADDR``                     ``bind_debugger`` (``1`` = ``localhost:6831``,
                                    ``host:port``, ``file:PATH`` records to a file)
``AM_DBG_BUFFER``, ``AM_DBG_NO_TRACE``  the reporter's buffer size / no caller stacks
``AM_LOG``                          log level 0-5 or a level name; when unset and a
                                    debugger is bound, the level is raised to 2
``AM_LOG_PRINT``                    also print log lines to stdout
``AM_LOG_FILE``                     also append log lines to ``<id>.log`` (in the current
                                    directory, or in the directory the value names)
``AM_LOG_FULL``, ``AM_LOG_*``       detail flags, see :func:`log_flags`; ``CHECKS``
                                    reports dry runs to the debugger, ``ARGS`` shows every
                                    mutation arg in log lines; ``STEPS``, ``GRAPH``,
                                    ``QUEUED``, ``WHEN``, ``STATE_CTX`` are stored for the
                                    core but have no effect yet
``AM_HEALTHCHECK``                  add ``Healthcheck`` (if in the schema) every 30 s, from
                                    the machine's nursery (or a Trio system task when the
                                    machine is not bound to one; nothing outside Trio)
``AM_PROM_ADDR``                    ``bind_metrics`` + ``serve_metrics`` (one server per
                                    process and address)
``AM_PROM_PUSH_URL``                ``bind_metrics`` + a Pushgateway push every 15 s, job =
                                    normalized ``AM_SERVICE`` (required)
``AM_OTEL_TRACE``, ``_TXS`` ...     ``bind_otel`` with the env tracer provider; needs
                                    ``AM_SERVICE`` (without it: a warning, nothing bound)
``AM_OTEL_LOGS``                    ``bind_otel_logger``; needs ``AM_SERVICE``
``AM_DEBUG``                        no handler timeouts; handler errors propagate out of
                                    the mutation call (``panic_to_exception=False``)
``AM_HOSTNAME``                     returned by :func:`hostname` (trio_am ids hold no host
                                    name, so it only names the host in reports)
``AM_RPC_DBG``                      passed to ``bind_otel`` (trace RPC helper machines)
``AM_REPL_ADDR``, ``AM_REPL_DIR``   :func:`trio_am.repl.bind_env_repl`: serve the machine
                                    for ``trio-am repl`` (``1`` = ``127.0.0.1:0``) and
                                    write ``<id>-repl.addr`` into the directory
==================================  =======================================================

Other ``AM_*`` variables of the spec (``AM_DETECT_EVAL``, ``AM_TRACE_FILTER``,
``AM_LOKI_ADDR``, ``AM_GRAFANA_*``, ``AM_RPC_LOG_*`` ...) are not acted on
here; when set they are listed in :attr:`EnvBindings.ignored`.
"""

from __future__ import annotations

import importlib
import logging
import os
import re
import socket
import sys
import threading
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from .._core._engine import Engine
    from .prometheus import MetricsServer, MetricsTracer, Pusher

__all__ = [
    "DEFAULT_DBG_ADDR",
    "HEALTHCHECK_INTERVAL",
    "LOG_FLAG_NAMES",
    "PUSH_INTERVAL",
    "EnvBindings",
    "bind_env",
    "close_env_servers",
    "hostname",
    "log_flags",
    "normalize_id",
    "parse_addr",
]

_logger: Final = logging.getLogger("trio_am.telemetry.env")

#: Where ``AM_DBG_ADDR=1`` reports to.
DEFAULT_DBG_ADDR: Final = "localhost:6831"
#: Seconds between the ``Healthcheck`` mutations of ``AM_HEALTHCHECK``.
HEALTHCHECK_INTERVAL: float = 30.0
#: Seconds between Pushgateway pushes of ``AM_PROM_PUSH_URL``.
PUSH_INTERVAL: float = 15.0
#: The ``AM_LOG_*`` detail flags (lowercase, without the prefix); ``AM_LOG_FULL`` sets all.
LOG_FLAG_NAMES: Final = ("steps", "graph", "checks", "queued", "args", "when", "state_ctx")

_TRUE: Final = frozenset({"1", "true", "yes", "on", "y"})
_FALSE: Final = frozenset({"", "0", "false", "no", "off", "n"})
_LEVELS: Final = ("nothing", "external", "changes", "ops", "decisions", "everything")
_HEX_LEN: Final = {"AM_OTEL_TRACE_ID": 32, "AM_OTEL_SPAN_ID": 16}

#: Variables of the spec this module knows but does not act on.
_NOT_HANDLED: Final = (
    "AM_DETECT_EVAL",
    "AM_TRACE_FILTER",
    "AM_LOKI_ADDR",
    "AM_GRAFANA_URL",
    "AM_GRAFANA_TOKEN",
    "AM_RELAY_DBG",
    "AM_TEST_DBG_ADDR",
    "AM_DBG_WORKER_RPC_ADDR",
    "AM_DBG_WORKER_TELEMETRY_ADDR",
)
_HANDLED: Final = frozenset(
    {
        "AM_TEST_RUNNER",
        "AM_TEST_DEBUG",
        "AM_DEBUG",
        "AM_DBG_ADDR",
        "AM_DBG_BUFFER",
        "AM_DBG_NO_TRACE",
        "AM_LOG",
        "AM_LOG_PRINT",
        "AM_LOG_FILE",
        "AM_LOG_FULL",
        *(f"AM_LOG_{f.upper()}" for f in LOG_FLAG_NAMES),
        "AM_HEALTHCHECK",
        "AM_SERVICE",
        "AM_PROM_ADDR",
        "AM_PROM_PUSH_URL",
        "AM_OTEL_TRACE",
        "AM_OTEL_TRACE_TXS",
        "AM_OTEL_TRACE_ARGS",
        "AM_OTEL_TRACE_NOAUTO",
        "AM_OTEL_TRACE_ALLOW_STATES",
        "AM_OTEL_TRACE_SKIP_STATES",
        "AM_OTEL_TRACE_ALLOW_STATES_RE",
        "AM_OTEL_TRACE_SKIP_STATES_RE",
        "AM_OTEL_TRACE_ID",
        "AM_OTEL_SPAN_ID",
        "AM_OTEL_LOGS",
        "AM_HOSTNAME",
        "AM_RPC_DBG",
        "AM_REPL_ADDR",
        "AM_REPL_DIR",
        "AM_BREAKPOINTS",  # read by the core itself
    }
)


@dataclass
class EnvBindings:
    """What :func:`bind_env` bound to one machine.

    Attributes:
        machine_id: the machine's id.
        disabled: why nothing was bound (``"AM_TEST_RUNNER"``), else None.
        debugger: the ``DbgReporter`` (``AM_DBG_ADDR``), else None.
        debugger_addr: the address it reports to (``"file:PATH"`` for a recording).
        log_level: the level set on the machine, None when left alone.
        log_print: log lines are also printed to stdout.
        log_file: the file log lines are appended to, else None.
        log_flags: the ``AM_LOG_*`` detail flags (see :data:`LOG_FLAG_NAMES`).
        healthcheck: a ``Healthcheck`` loop was started.
        metrics: the Prometheus tracer, else None.
        metrics_server: the ``/metrics`` server of ``AM_PROM_ADDR`` (shared per address).
        metrics_pusher: the Pushgateway pusher of ``AM_PROM_PUSH_URL`` (shared).
        otel: the OpenTelemetry tracer of ``AM_OTEL_TRACE``, else None.
        otel_logger: the OpenTelemetry log binding of ``AM_OTEL_LOGS``, else None.
        debug: ``AM_DEBUG`` was applied.
        hostname: ``AM_HOSTNAME``, else None.
        repl: the ``trio_am.repl.ReplBinding`` of ``AM_REPL_ADDR``, else None.
        warnings: switches that were set but could not be honoured, and why.
        ignored: set ``AM_*`` variables this module does not act on.
    """

    machine_id: str
    disabled: str | None = None
    debugger: Any = None
    debugger_addr: str | None = None
    log_level: int | None = None
    log_print: bool = False
    log_file: Path | None = None
    log_flags: frozenset[str] = frozenset()
    healthcheck: bool = False
    metrics: MetricsTracer | None = None
    metrics_server: MetricsServer | None = None
    metrics_pusher: Pusher | None = None
    otel: Any = None
    otel_logger: Any = None
    debug: bool = False
    hostname: str | None = None
    repl: Any = None
    warnings: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)

    @property
    def bound(self) -> list[str]:
        """Short names of what was bound, e.g. ``["debugger", "log_level"]``."""
        out: list[str] = []
        for name in (
            "debugger",
            "log_level",
            "log_print",
            "log_file",
            "log_flags",
            "healthcheck",
            "metrics",
            "metrics_server",
            "metrics_pusher",
            "otel",
            "otel_logger",
            "debug",
            "repl",
        ):
            value = getattr(self, name)
            if value is not None and value is not False and value != frozenset():
                out.append(name)
        return out

    def __bool__(self) -> bool:
        return bool(self.bound)


# ---------------------------------------------------------------------------- parsing
def normalize_id(text: str) -> str:
    """Lowercase ``text`` and turn every run of characters outside ``[a-z0-9_]`` into one
    ``_`` (tools.md §2.2; used for Pushgateway job names)."""
    out: list[str] = []
    gap = False
    for ch in text.lower():
        if ("a" <= ch <= "z") or ("0" <= ch <= "9") or ch == "_":
            out.append(ch)
            gap = False
        elif not gap:
            out.append("_")
            gap = True
    return "".join(out)


def parse_addr(addr: str, *, what: str = "address") -> tuple[str, int]:
    """Split ``host:port`` (``[v6]:port``; an empty host means ``0.0.0.0``).

    Raises:
        ValueError: not ``host:port`` with a port 0-65535.
    """
    if not isinstance(addr, str) or ":" not in addr:
        raise ValueError(f"{what} must be host:port, got {addr!r}")
    host, _, port_s = addr.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        port = int(port_s)
    except ValueError:
        raise ValueError(f"{what} must be host:port, got {addr!r} (bad port)") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"{what} port out of range in {addr!r}")
    return host or "0.0.0.0", port


def _flag(env: Mapping[str, str], name: str) -> bool:
    raw = env.get(name)
    if raw is None:
        return False
    v = raw.strip().lower()
    if v in _FALSE:
        return False
    if v in _TRUE or (v.isdigit() and int(v) > 0):
        return True
    raise ValueError(f"{name}={raw!r}: expected a flag (1/true/yes/on or 0/false/no/off)")


def _is_set(env: Mapping[str, str], name: str) -> bool:
    """Lenient: any value but the off words (runners may set any marker)."""
    return env.get(name, "").strip().lower() not in _FALSE


def _level(env: Mapping[str, str]) -> int | None:
    raw = env.get("AM_LOG")
    if raw is None or not raw.strip():
        return None
    v = raw.strip().lower()
    if v.isdigit() and int(v) <= 5:
        return int(v)
    if v in _LEVELS:
        return _LEVELS.index(v)
    raise ValueError(f"AM_LOG={raw!r}: expected a log level 0-5 or one of {', '.join(_LEVELS)}")


def _positive_int(env: Mapping[str, str], name: str) -> int | None:
    raw = env.get(name)
    if raw is None or not raw.strip():
        return None
    try:
        n = int(raw.strip())
    except ValueError:
        n = 0
    if n <= 0:
        raise ValueError(f"{name}={raw!r}: expected a positive integer")
    return n


def _dbg_addr(env: Mapping[str, str]) -> str | None:
    raw = env.get("AM_DBG_ADDR")
    if raw is None:
        return None
    v = raw.strip()
    if v.lower() in _FALSE:
        return None
    if v == "1":
        return DEFAULT_DBG_ADDR
    if v.startswith("file:"):
        path = Path(v[5:]).expanduser()
        if not v[5:]:
            raise ValueError(f"AM_DBG_ADDR={raw!r}: file: needs a path")
        if not path.parent.is_dir():
            raise ValueError(f"AM_DBG_ADDR={raw!r}: directory {str(path.parent)!r} does not exist")
        return f"file:{path}"
    try:
        _host, port = parse_addr(v, what="AM_DBG_ADDR")
    except ValueError:
        raise ValueError(f"AM_DBG_ADDR={raw!r}: expected 1, host:port or file:PATH") from None
    if port == 0 or not v.rpartition(":")[0]:
        raise ValueError(f"AM_DBG_ADDR={raw!r}: expected 1, host:port or file:PATH")
    return v


def _list(env: Mapping[str, str], name: str) -> list[str]:
    raw = env.get(name, "")
    return [p.strip() for p in raw.split(",") if p.strip()]


def _regexp(env: Mapping[str, str], name: str) -> str | None:
    raw = env.get(name)
    if not raw:
        return None
    try:
        re.compile(raw)
    except re.error as exc:
        raise ValueError(f"{name}={raw!r}: not a valid regular expression ({exc})") from None
    return raw


def _hex(env: Mapping[str, str], name: str) -> None:
    raw = env.get(name)
    if not raw:
        return
    n = _HEX_LEN[name]
    if len(raw) != n or not all(c in "0123456789abcdefABCDEF" for c in raw):
        raise ValueError(f"{name}={raw!r}: expected {n} hex digits")


@dataclass
class _Config:
    debug: bool = False
    dbg_addr: str | None = None
    dbg_buffer: int | None = None
    dbg_no_trace: bool = False
    level: int | None = None
    log_print: bool = False
    log_file_dir: Path | None = None
    flags: frozenset[str] = frozenset()
    healthcheck: bool = False
    service: str | None = None
    prom_addr: str | None = None
    push_url: str | None = None
    otel_trace: bool = False
    otel_opts: dict[str, Any] = field(default_factory=dict)
    otel_logs: bool = False
    hostname: str | None = None
    repl: Any = None
    ignored: list[str] = field(default_factory=list)


def _parse(env: Mapping[str, str]) -> _Config:
    cfg = _Config()
    cfg.debug = _flag(env, "AM_DEBUG")
    cfg.dbg_addr = _dbg_addr(env)
    cfg.dbg_buffer = _positive_int(env, "AM_DBG_BUFFER")
    cfg.dbg_no_trace = _flag(env, "AM_DBG_NO_TRACE")
    cfg.level = _level(env)
    cfg.log_print = _flag(env, "AM_LOG_PRINT")
    raw_file = env.get("AM_LOG_FILE")
    if raw_file is not None and raw_file.strip().lower() not in _FALSE:
        v = raw_file.strip()
        if v.lower() in _TRUE:
            cfg.log_file_dir = Path.cwd()
        else:
            d = Path(v).expanduser()
            if not d.is_dir():
                raise ValueError(
                    f"AM_LOG_FILE={raw_file!r}: expected 1 or an existing directory for the log file"
                )
            cfg.log_file_dir = d
    full = _flag(env, "AM_LOG_FULL")
    cfg.flags = frozenset(
        f for f in LOG_FLAG_NAMES if full | _flag(env, f"AM_LOG_{f.upper()}")
    )  # (every flag is parsed, so a bad value raises even under AM_LOG_FULL)
    cfg.healthcheck = _flag(env, "AM_HEALTHCHECK")
    cfg.service = env.get("AM_SERVICE", "").strip() or None
    prom = env.get("AM_PROM_ADDR", "").strip()
    if prom:
        parse_addr(prom, what="AM_PROM_ADDR")
        cfg.prom_addr = prom
    cfg.push_url = env.get("AM_PROM_PUSH_URL", "").strip() or None
    trace = _flag(env, "AM_OTEL_TRACE")
    txs = _flag(env, "AM_OTEL_TRACE_TXS")
    cfg.otel_trace = trace or txs
    cfg.otel_opts = {
        "transitions": txs,
        "args": _flag(env, "AM_OTEL_TRACE_ARGS"),
        "skip_auto": _flag(env, "AM_OTEL_TRACE_NOAUTO"),
        "allow_states": _list(env, "AM_OTEL_TRACE_ALLOW_STATES"),
        "skip_states": _list(env, "AM_OTEL_TRACE_SKIP_STATES"),
        "allow_re": _regexp(env, "AM_OTEL_TRACE_ALLOW_STATES_RE"),
        "skip_re": _regexp(env, "AM_OTEL_TRACE_SKIP_STATES_RE"),
        "rpc_dbg": _flag(env, "AM_RPC_DBG"),
        "service": cfg.service,
    }
    _hex(env, "AM_OTEL_TRACE_ID")
    _hex(env, "AM_OTEL_SPAN_ID")
    cfg.otel_logs = _flag(env, "AM_OTEL_LOGS")
    cfg.hostname = env.get("AM_HOSTNAME", "").strip() or None
    if env.get("AM_REPL_ADDR", "").strip():
        from ..repl import parse_repl_env

        cfg.repl = parse_repl_env(env)
    cfg.ignored = sorted(
        k for k, v in env.items() if k.startswith("AM_") and v and k not in _HANDLED
    )
    return cfg


# ---------------------------------------------------------------------------- state
_LOCK: Final = threading.Lock()
_BOUND: weakref.WeakKeyDictionary[Engine, EnvBindings] = weakref.WeakKeyDictionary()
_LOG_FLAGS: weakref.WeakKeyDictionary[Engine, frozenset[str]] = weakref.WeakKeyDictionary()
_SERVERS: dict[str, MetricsServer] = {}
_PUSHERS: dict[tuple[str, str], Pusher] = {}
_PROVIDERS: dict[tuple[str, str], Any] = {}


def log_flags(mach: Engine) -> frozenset[str]:
    """The ``AM_LOG_*`` detail flags :func:`bind_env` set for ``mach`` (names of
    :data:`LOG_FLAG_NAMES`); empty when none."""
    return _LOG_FLAGS.get(mach, frozenset())


def hostname() -> str:
    """``AM_HOSTNAME`` when set, else this host's name."""
    return os.environ.get("AM_HOSTNAME", "").strip() or socket.gethostname()


def close_env_servers() -> None:
    """Close the ``/metrics`` servers and Pushgateway pushers :func:`bind_env` started
    (for tests and orderly shutdown); later ``bind_env`` calls start new ones."""
    with _LOCK:
        servers = list(_SERVERS.values())
        pushers = list(_PUSHERS.values())
        _SERVERS.clear()
        _PUSHERS.clear()
    for s in servers:
        s.close()
    for p in pushers:
        p.close()


# ---------------------------------------------------------------------------- binding
def bind_env(mach: Engine) -> EnvBindings:
    """Bind to ``mach`` whatever the ``AM_*`` environment variables ask for (see the
    module docstring) and return what was bound.

    Raises:
        ValueError: a variable has a bad value (the message names it); nothing was bound.
    """
    env = dict(os.environ)
    with _LOCK:
        prev = _BOUND.get(mach)
    if prev is not None:
        return prev
    out = EnvBindings(machine_id=mach.id)
    if _is_set(env, "AM_TEST_RUNNER") and not _is_set(env, "AM_TEST_DEBUG"):
        out.disabled = "AM_TEST_RUNNER"
        return out
    cfg = _parse(env)
    out.ignored = cfg.ignored
    out.hostname = cfg.hostname

    if cfg.debug:
        mach._handler_timeout = None
        mach._panic_to_exception = False
        out.debug = True
    if cfg.flags:
        with _LOCK:
            _LOG_FLAGS[mach] = cfg.flags
        out.log_flags = cfg.flags
        if "args" in cfg.flags:
            mach.set_log_args(_all_args)

    if cfg.dbg_addr is not None:
        dbg = importlib.import_module(".dbg", __package__)
        kwargs: dict[str, Any] = {
            "buffer": cfg.dbg_buffer,
            "trace": not cfg.dbg_no_trace,
            "log_checks": "checks" in cfg.flags,
        }
        out.debugger = dbg.bind_debugger(mach, cfg.dbg_addr, **kwargs)
        out.debugger_addr = cfg.dbg_addr

    if cfg.level is not None:
        mach.set_log_level(cfg.level)
        out.log_level = cfg.level
    elif out.debugger is not None and mach.log_level < 2:
        mach.set_log_level(2)
        out.log_level = 2

    if cfg.log_print or cfg.log_file_dir is not None:
        fh: IO[str] | None = None
        if cfg.log_file_dir is not None:
            out.log_file = cfg.log_file_dir / f"{_file_id(mach.id)}.log"
            fh = open(out.log_file, "a", encoding="utf-8", buffering=1)  # noqa: SIM115
            mach.on_dispose(_closer(fh))
        mach.set_logger(_chain_sink(mach._log_sink, cfg.log_print, fh))
        out.log_print = cfg.log_print

    if cfg.prom_addr is not None or cfg.push_url is not None:
        from .prometheus import bind_metrics, serve_metrics, start_push

        out.metrics = bind_metrics(mach)
        if cfg.prom_addr is not None:
            err = ""
            with _LOCK:
                server = _SERVERS.get(cfg.prom_addr)
                if server is None:
                    try:
                        server = _SERVERS[cfg.prom_addr] = serve_metrics(cfg.prom_addr)
                    except OSError as exc:
                        server = None
                        err = f"AM_PROM_ADDR={cfg.prom_addr}: cannot serve metrics ({exc})"
            if server is None:
                _warn(out, err)
            out.metrics_server = server
        if cfg.push_url is not None:
            if cfg.service is None:
                _warn(out, "AM_PROM_PUSH_URL is set but AM_SERVICE is not: not pushing")
            else:
                key = (cfg.push_url, normalize_id(cfg.service))
                with _LOCK:
                    pusher = _PUSHERS.get(key)
                    if pusher is None:
                        pusher = _PUSHERS[key] = start_push(*key, interval=PUSH_INTERVAL)
                out.metrics_pusher = pusher

    if cfg.otel_trace or cfg.otel_logs:
        if cfg.service is None:
            which = "AM_OTEL_TRACE" if cfg.otel_trace else "AM_OTEL_LOGS"
            _warn(out, f"{which} is set but AM_SERVICE is not: no OpenTelemetry bound")
        else:
            otel = importlib.import_module(".otel", __package__)
            if cfg.otel_trace:
                provider = _provider(otel, "env_tracer_provider", cfg.service)
                out.otel = otel.bind_otel(mach, provider, **cfg.otel_opts)
            if cfg.otel_logs:
                provider = _provider(otel, "env_logger_provider", cfg.service)
                if provider is None:
                    provider = _provider(None, "env_logger_provider", cfg.service)
                out.otel_logger = otel.bind_otel_logger(mach, provider, cfg.service)

    if cfg.healthcheck:
        _start_healthcheck(mach, out)

    if cfg.repl is not None:
        from ..repl import bind_env_repl

        try:
            out.repl = bind_env_repl(mach, env)
        except RuntimeError as exc:
            _warn(out, f"AM_REPL_ADDR: {exc}")

    with _LOCK:
        _BOUND[mach] = out
    return out


def _closer(fh: IO[str]) -> Callable[[str], None]:
    def close(_machine_id: str) -> None:
        fh.close()

    return close


def _warn(out: EnvBindings, msg: str) -> None:
    _logger.warning("[%s] %s", out.machine_id, msg, extra={"machine_id": out.machine_id})
    out.warnings.append(msg)


def _provider(otel: Any, factory: str, service: str) -> Any:
    """One provider per factory and service (``otel=None``: this module's own);
    None when ``otel`` lacks the factory."""
    fn = getattr(otel, factory, None) if otel is not None else _env_logger_provider
    if fn is None:
        return None
    key = (factory, service)
    with _LOCK:
        provider = _PROVIDERS.get(key)
    if provider is None:
        provider = fn(service)
        with _LOCK:
            provider = _PROVIDERS.setdefault(key, provider)
    return provider


def _env_logger_provider(service: str) -> Any:
    """An SDK ``LoggerProvider`` exporting over OTLP like the env tracer provider: gRPC to
    ``OTEL_EXPORTER_OTLP_LOGS_ENDPOINT`` (default ``localhost:4317``), or HTTP when
    ``OTEL_EXPORTER_OTLP_LOGS_PROTOCOL`` / ``OTEL_EXPORTER_OTLP_PROTOCOL`` is
    ``http/protobuf``; batched."""
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
    from opentelemetry.sdk.resources import Resource

    env = os.environ
    proto = (
        env.get("OTEL_EXPORTER_OTLP_LOGS_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL") or ""
    ).strip().lower() or "grpc"
    endpoint = env.get("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", "").strip()
    hint = "install the OTLP exporters with: pip install 'trio_am[otlp]'"
    exporter: Any
    if proto in ("http/protobuf", "http"):
        try:
            from opentelemetry.exporter.otlp.proto.http._log_exporter import (
                OTLPLogExporter as HttpLogExporter,
            )
        except ImportError as exc:
            raise ImportError(f"OTLP/HTTP log exporter missing: {hint}") from exc
        if endpoint and "://" not in endpoint:
            endpoint = "http://" + endpoint
        exporter = HttpLogExporter(endpoint=endpoint or None)
    elif proto == "grpc":
        try:
            from opentelemetry.exporter.otlp.proto.grpc._log_exporter import (
                OTLPLogExporter as GrpcLogExporter,
            )
        except ImportError as exc:
            raise ImportError(f"OTLP/gRPC log exporter missing: {hint}") from exc
        if not endpoint and not env.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
            endpoint = "localhost:4317"
        exporter = (
            GrpcLogExporter(endpoint=endpoint, insecure="://" not in endpoint)
            if endpoint
            else GrpcLogExporter()
        )
    else:
        raise ValueError(
            f"OTEL_EXPORTER_OTLP_PROTOCOL={proto!r}: unsupported (use grpc or http/protobuf)"
        )
    provider = LoggerProvider(resource=Resource.create({"service.name": service}))
    provider.add_log_record_processor(BatchLogRecordProcessor(exporter))
    return provider


def _file_id(machine_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", machine_id).lstrip(".") or "machine"


def _cut(value: Any, max_len: int = 20) -> str:
    text = str(value)
    return text if len(text) <= max_len else text[: max_len - 3] + "..."


def _all_args(args: Mapping[str, Any]) -> dict[str, str]:
    """The ``AM_LOG_ARGS`` mapper: every arg (but the error traceback), cut to 20 chars."""
    return {k: _cut(v) for k, v in args.items() if k != "err_trace"}


Sink = Callable[[int, str, Any], Any]


def _chain_sink(prev: Sink | None, to_stdout: bool, fh: IO[str] | None) -> Sink:
    def sink(level: int, text: str, m: Any) -> None:
        line = f"[{m.id[:5]}] {text}"
        if to_stdout:
            print(line, file=sys.stdout, flush=True)
        if fh is not None and not fh.closed:
            fh.write(line + "\n")
        if prev is not None:
            prev(level, text, m)
        else:
            _stdlib_log(level, text, m)

    return sink


def _stdlib_log(level: int, text: str, m: Any) -> None:
    # what the core does when no sink is set
    from .._core._engine import _PY_LEVEL
    from .._core._engine import _logger as core_logger

    core_logger.log(
        logging.ERROR if text.startswith("[error") else _PY_LEVEL.get(level, logging.DEBUG),
        "[%s] %s",
        m.id[:5],
        text,
        extra={"machine_id": m.id, "am_level": level},
    )


# ---------------------------------------------------------------------------- healthcheck
def _start_healthcheck(mach: Engine, out: EnvBindings) -> None:
    if not mach.has1("Healthcheck"):
        _warn(out, "AM_HEALTHCHECK is set but the schema has no Healthcheck state")
        return
    import trio

    from .._runtime._machine import Machine

    async def loop() -> None:
        while not mach.disposed:
            await trio.sleep(HEALTHCHECK_INTERVAL)
            if mach.disposed:
                return
            mach.add1("Healthcheck")

    async def guarded() -> None:
        try:
            await loop()
        except Exception:  # pragma: no cover - add1 does not raise for a known state
            _logger.exception("[%s] healthcheck loop failed", mach.id)

    if isinstance(mach, Machine) and mach._nursery is not None:
        mach.fork(loop)
    else:
        try:
            trio.lowlevel.spawn_system_task(guarded, name=f"{mach.id}:healthcheck")
        except RuntimeError:
            _warn(out, "AM_HEALTHCHECK needs a running Trio loop: no healthcheck")
            return
    out.healthcheck = True
