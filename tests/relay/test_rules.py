"""The relay's sans-I/O rules (trio_am/relay/_rules.py): paths, ids, allow-lists and
origins. Property tests: no request path can make the router fail other than with a
RouteError, and every valid route parses back to what built it."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from trio_am.relay import (
    RELAY_BRIDGED,
    RELAY_ERROR,
    OriginPolicy,
    RelayCode,
    RouteError,
    TargetRules,
    parse_route,
    parse_target,
)
from trio_am.relay._rules import bridged_frame, error_frame, tcp_error_frame

IDS = st.from_regex(r"[A-Za-z0-9._-]{1,64}", fullmatch=True)
HOSTS = st.sampled_from(["127.0.0.1", "localhost", "example.com", "10.0.0.1", "::1"])
PORTS = st.integers(1, 65535)


@given(st.text(max_size=200))
def test_any_path_routes_or_raises_route_error(path: str) -> None:
    try:
        route = parse_route("/" + path)
    except RouteError as exc:
        assert exc.code in (RelayCode.BAD_TARGET,)
    else:
        assert route.mode in ("dial", "listen")


@given(st.sampled_from(["dial", "listen"]), IDS, HOSTS, PORTS)
def test_valid_routes_parse_back(mode: str, tid: str, host: str, port: int) -> None:
    hp = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    route = parse_route(f"/{mode}/{tid}/{hp}")
    assert (route.mode, route.id, route.target, route.raw) == (mode, tid, (host, port), False)
    assert parse_route(f"/{mode}/{tid}").target is None


@pytest.mark.parametrize(
    "path",
    [
        "/dial",
        "/dial/",
        "/other/x/1.2.3.4:5",
        "/dial/" + "x" * 65 + "/1.2.3.4:5",
        "/dial/a b/1.2.3.4:5",
        "/dial/x/1.2.3.4",
        "/dial/x/1.2.3.4:0",
        "/dial/x/1.2.3.4:65536",
        "/dial/x/:80",
        "/dial/x/a:b:c/extra",
        "/listen/x/1.2.3.4:5?raw=1",
    ],
)
def test_bad_paths(path: str) -> None:
    with pytest.raises(RouteError) as info:
        parse_route(path)
    assert info.value.code == RelayCode.BAD_TARGET


def test_raw_mode_only_for_dial() -> None:
    assert parse_route("/dial/x/h:1?raw=1").raw is True


@given(HOSTS, PORTS)
def test_empty_allow_list_allows_nothing(host: str, port: int) -> None:
    assert not TargetRules([]).allows(host, port)


def test_allow_list_entries() -> None:
    rules = TargetRules(["127.0.0.1:7501", "example.com:8000-8010", "loopback:*", "*:443"])
    assert rules.allows("127.0.0.1", 7501)
    assert rules.allows("EXAMPLE.com", 8005) and not rules.allows("example.com", 8011)
    assert rules.allows("::1", 1) and rules.allows("localhost", 65535)
    assert rules.allows("anything.example", 443)
    assert not rules.allows("10.0.0.1", 7501)
    for bad in ("nope", "h:0", "h:9-1", "h:x", ":80"):
        with pytest.raises(ValueError):
            TargetRules([bad])


def test_parse_target_ipv6() -> None:
    assert parse_target("[::1]:80") == ("::1", 80)


def test_origin_policy() -> None:
    same = OriginPolicy()
    assert same.allows(None, "relay:1")  # not a browser page
    assert same.allows("http://relay:1", "relay:1")  # the relay's own page
    assert not same.allows("http://evil:1", "relay:1")
    listed = OriginPolicy(["http://app:8000/"])
    assert listed.allows("http://APP:8000", "relay:1") and not listed.allows(
        "http://app:8001", "relay:1"
    )
    assert OriginPolicy(["*"]).allows("http://any", "relay:1")


def test_control_frames() -> None:
    assert msgpack.unpackb(bridged_frame("1.2.3.4:5")) == [RELAY_BRIDGED, "1.2.3.4:5"]
    assert msgpack.unpackb(error_frame(RelayCode.NOT_ALLOWED, "no")) == [RELAY_ERROR, 32, "no"]
    assert msgpack.unpackb(tcp_error_frame(RelayCode.TOO_LARGE, "big", False)) == [
        34,
        None,
        4,
        "big",
        False,
    ]
