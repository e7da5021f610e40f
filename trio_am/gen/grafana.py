"""Grafana dashboards for machines' Prometheus metrics and Loki logs (tools.md §3.3).

:func:`dashboard` builds the dashboard JSON model: per machine a row ``Mach: ID``
(transitions, an exceptions heatmap), a collapsed row ``Details: ID`` (queue, handlers,
states added and removed, ticks, steps, touched states, schema size and active states,
a transition-time heatmap) and a collapsed row ``Logs: ID`` (Loki
``{service_name="S", asyncmachine_id="ID"}``); refresh 5 s, the last 5 minutes, tag
``generated``. Queries use the metric names of :mod:`trio_am.telemetry.prometheus`
(label ``machine_id`` = the raw id) and ``job="S"`` with ``S`` the normalized source
(``AM_SERVICE``), as the Pushgateway job and the Loki ``service_name`` label are.

:func:`upsert` sends it to a Grafana server (HTTP API, a service-account token).
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from typing import Any, Final

from ._spec import GenError

__all__ = ["dashboard", "normalize_id", "upsert"]

_RANGE: Final = "[1m]"
_PROM: Final = {"type": "prometheus", "uid": "${prometheus}"}
_LOKI: Final = {"type": "loki", "uid": "${loki}"}


def normalize_id(text: str) -> str:
    """Lowercase ``text``; runs of characters outside ``[a-z0-9_]`` become one ``_``
    (tools.md §2.2, the Pushgateway job and Loki ``service_name``)."""
    return re.sub(r"[^a-z0-9_]+", "_", text.lower())


class _Panels:
    """Panel ids; positions are set by :func:`_layout`."""

    def __init__(self) -> None:
        self.next_id = 1

    def panel(
        self, kind: str, title: str, targets: list[dict[str, Any]], *, h: int = 8, **extra: Any
    ) -> dict[str, Any]:
        p: dict[str, Any] = {
            "id": self.next_id,
            "type": kind,
            "title": title,
            "datasource": _LOKI if kind == "logs" else _PROM,
            "gridPos": {"h": h, "w": 24, "x": 0, "y": 0},
            "targets": targets,
        }
        p.update(extra)
        self.next_id += 1
        return p

    def row(
        self, title: str, panels: list[dict[str, Any]], collapsed: bool
    ) -> list[dict[str, Any]]:
        row: dict[str, Any] = {
            "id": self.next_id,
            "type": "row",
            "title": title,
            "collapsed": collapsed,
            "gridPos": {"h": 1, "w": 24, "x": 0, "y": 0},
            "panels": panels if collapsed else [],
        }
        self.next_id += 1
        return [row] if collapsed else [row, *panels]


def _layout(panels: list[dict[str, Any]]) -> None:
    """Stack the panels top to bottom; a collapsed row's panels follow its header."""
    y = 0
    for p in panels:
        p["gridPos"]["y"] = y
        y += p["gridPos"]["h"]
        inner = y
        for child in p.get("panels", ()):
            child["gridPos"]["y"] = inner
            inner += child["gridPos"]["h"]


def _t(expr: str, legend: str, ref: str, **extra: Any) -> dict[str, Any]:
    return {"refId": ref, "expr": expr, "legendFormat": legend, "datasource": _PROM, **extra}


def _avg(metric: str, sel: str) -> str:
    return f"rate({metric}_sum{sel}{_RANGE}) / rate({metric}_count{sel}{_RANGE})"


def dashboard(ids: Sequence[str], name: str, source: str) -> dict[str, Any]:
    """The Grafana dashboard JSON model for machines ``ids`` (tools.md §3.3).

    Raises:
        GenError: no ids, an empty name or source (exit 2).
    """
    ids = [i.strip() for i in ids if i.strip()]
    if not ids:
        raise GenError("no machine ids (--ids a,b)")
    if not name.strip():
        raise GenError("empty dashboard name (--name)")
    job = normalize_id(source)
    if not job.strip("_"):
        raise GenError("empty source (--source, the AM_SERVICE of the machines)")
    ps = _Panels()
    panels: list[dict[str, Any]] = []
    for mid in ids:
        sel = "{" + f'machine_id="{_esc(mid)}", job="{job}"' + "}"
        main = [
            ps.panel(
                "timeseries",
                "Transitions",
                [
                    _t(
                        f"sum by (accepted) (rate(am_transitions_total{sel}{_RANGE}))",
                        "accepted={{accepted}}",
                        "A",
                    )
                ],
            ),
            ps.panel(
                "heatmap",
                "Transition errors",
                [_t(f"rate(am_exceptions_total{sel}{_RANGE})", "Exception", "A")],
                h=5,
            ),
        ]
        panels += ps.row(f"Mach: {mid}", main, collapsed=False)
        details = [
            ps.panel(
                "timeseries",
                "Transition mutations",
                [
                    _t(f"am_queue_length{sel}", "Queue length", "A"),
                    _t(_avg("am_transition_handlers", sel), "Avg handlers ran", "B"),
                    _t(f"rate(am_states_added_total{sel}{_RANGE})", "States added /s", "C"),
                    _t(f"rate(am_states_removed_total{sel}{_RANGE})", "States removed /s", "D"),
                ],
            ),
            ps.panel(
                "timeseries",
                "Transition details",
                [
                    _t(_avg("am_transition_ticks", sel), "Avg machine time taken (ticks)", "A"),
                    _t(_avg("am_transition_steps", sel), "Avg steps", "B"),
                    _t(f"rate(am_states_touched_total{sel}{_RANGE})", "States touched /s", "C"),
                ],
            ),
            ps.panel(
                "timeseries",
                "States and relations",
                [
                    _t(f"am_states{sel}", "States", "A"),
                    _t(f"am_relations{sel}", "Relations", "B"),
                    _t(f"am_ref_states{sel}", "States referenced in relations", "C"),
                    _t(f"am_relations{sel} / am_states{sel}", "Relations per state", "D"),
                    _t(f"am_states_active{sel}", "Active states", "E"),
                    _t(f"am_states_inactive{sel}", "Inactive states", "F"),
                ],
            ),
            ps.panel(
                "heatmap",
                "Transition time",
                [
                    _t(
                        f"sum by (le) (rate(am_transition_duration_seconds_bucket{sel}{_RANGE}))",
                        "{{le}}",
                        "A",
                        format="heatmap",
                    )
                ],
                h=5,
            ),
        ]
        panels += ps.row(f"Details: {mid}", details, collapsed=True)
        loki = "{" + f'service_name="{job}", asyncmachine_id="{_esc(mid)}"' + "}"
        logs = [ps.panel("logs", "Logs", [{"refId": "A", "expr": loki, "datasource": _LOKI}], h=20)]
        panels += ps.row(f"Logs: {mid}", logs, collapsed=True)
    _layout(panels)
    uid = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")[:40] or "trio-am"
    return {
        "uid": uid,
        "title": name,
        "tags": ["generated"],
        "timezone": "browser",
        "editable": True,
        "refresh": "5s",
        "time": {"from": "now-5m", "to": "now"},
        "schemaVersion": 39,
        "templating": {
            "list": [
                {"type": "datasource", "name": "prometheus", "query": "prometheus"},
                {"type": "datasource", "name": "loki", "query": "loki"},
            ]
        },
        "panels": panels,
    }


def _esc(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def _request(
    url: str, token: str, method: str = "GET", body: Any = None, timeout: float = 10.0
) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Authorization", f"Bearer {token}")
    req.add_header("Accept", "application/json")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
    except urllib.error.HTTPError as exc:
        detail = exc.read()[:200].decode("utf-8", "replace")
        raise GenError(f"Grafana {method} {url}: HTTP {exc.code} {detail}", code=1) from exc
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise GenError(f"Grafana {method} {url}: {reason}", code=1) from exc
    try:
        return json.loads(raw) if raw else None
    except ValueError as exc:
        raise GenError(f"Grafana {method} {url}: not JSON", code=1) from exc


def upsert(
    board: dict[str, Any],
    url: str,
    token: str,
    *,
    folder: str | None = None,
    timeout: float = 10.0,
) -> dict[str, Any]:
    """Create or replace ``board`` on the Grafana at ``url``, in ``folder`` (created when
    missing; default ``asyncmachine``). Returns Grafana's answer (``uid``, ``url``...).

    Raises:
        GenError: no token, a bad URL (exit 2), or an HTTP / network error (exit 1).
    """
    if not token:
        raise GenError("set AM_GRAFANA_TOKEN to a Grafana service-account token")
    u = urllib.parse.urlsplit(url)
    if u.scheme not in ("http", "https") or not u.netloc:
        raise GenError(f"bad Grafana URL {url!r} (expected http[s]://host[:port])")
    base = url.rstrip("/")
    title = folder or "asyncmachine"
    found = _request(f"{base}/api/folders", token, timeout=timeout)
    uid = None
    if isinstance(found, list):
        uid = next(
            (f.get("uid") for f in found if isinstance(f, dict) and f.get("title") == title),
            None,
        )
    if uid is None:
        made = _request(f"{base}/api/folders", token, "POST", {"title": title}, timeout)
        uid = made.get("uid") if isinstance(made, dict) else None
    body = {"dashboard": {**board, "id": None}, "folderUid": uid, "overwrite": True}
    res = _request(f"{base}/api/dashboards/db", token, "POST", body, timeout)
    return res if isinstance(res, dict) else {}
