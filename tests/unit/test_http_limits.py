"""The HTTP front's bounds: which connection the table gives up, and the `[server]` keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.config import ConfigError
from engine.server.http.h11server import H11Limits
from engine.server.http.slots import Phase, SlotTable
from engine.server.settings import load_settings


def test_the_longest_idle_goes_first_then_the_oldest_request_never_a_busy_one() -> None:
    table = SlotTable(4)
    a, b, c, d = (table.open() for _ in range(4))
    assert table.full and len(table) == 4
    table.enter(a, Phase.READING)
    table.enter(b, Phase.BUSY)
    table.enter(c, Phase.IDLE)  # back of the idle queue, behind d
    assert table.idle() == [d, c]
    assert table.victim() is d and d.evicted
    assert table.victim() is c
    assert table.victim() is a  # then the request that began longest ago
    assert table.victim() is None  # b is being answered
    assert not b.evicted and len(table) == 4  # a victim frees its slot only when it ends


def test_a_closed_or_given_up_slot_is_never_chosen_again() -> None:
    table = SlotTable(2)
    a, b = table.open(5.0), table.open()
    assert a.deadline == 5.0 and a.phase is Phase.IDLE
    table.close(a)
    assert not table.full and table.idle() == [b]
    table.enter(a, Phase.IDLE)  # a late phase change of an ended connection
    assert table.victim() is b
    table.enter(b, Phase.READING)  # the given-up connection reads on until it notices
    assert table.victim() is None
    table.close(b)
    table.close(b)  # twice is harmless
    assert len(table) == 0


def test_the_cap_is_at_least_one() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        SlotTable(0)


def test_server_keys_set_the_http_bounds(tmp_path: Path) -> None:
    path = tmp_path / "lockstep.toml"
    path.write_text(
        "[server]\nmax_connections = 64\nhead_timeout = 5\nbody_timeout = 12.5\n"
        'idle_timeout = 90\nsend_timeout = 7\nhttp_parser = "h11"\n'
    )
    http = load_settings(path, env={}).http
    assert http == H11Limits(
        max_connections=64,
        head_timeout=5.0,
        body_timeout=12.5,
        idle_timeout=90.0,
        send_timeout=7.0,
        parser="h11",
    )
    assert isinstance(http.head_timeout, float)
    defaults = load_settings(None, env={}).http
    assert (defaults.head_timeout, defaults.body_timeout, defaults.idle_timeout) == (10, 30, 60)
    assert defaults.max_connections == 1024 and defaults.parser == "httptools"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("max_connections = 0", "max_connections: must be a positive integer"),
        ("max_connections = 2.5", "max_connections: must be a positive integer"),
        ("max_connections = true", "max_connections: must be a positive integer"),
        ("head_timeout = 0", "head_timeout: must be a positive number of seconds"),
        ("idle_timeout = -1", "idle_timeout: must be a positive number of seconds"),
        ("body_timeout = inf", "body_timeout: must be a positive number of seconds"),
        ("send_timeout = nan", "send_timeout: must be a positive number of seconds"),
        ('head_timeout = "10"', "head_timeout: must be a positive number of seconds"),
        ('http_parser = "llhttp"', "http_parser: must be one of h11, httptools"),
        ("http_parser = 1", "http_parser: must be one of h11, httptools"),
    ],
)
def test_bad_http_bounds_are_refused(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "lockstep.toml"
    path.write_text(f"[server]\n{line}\n")
    with pytest.raises(ConfigError, match=message):
        load_settings(path, env={})
