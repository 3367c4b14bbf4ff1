"""bench/soak's pure parts: the fault schedule, the 5xx windows, the rate-limit verdict, the config.

`make soak` is too long for `make test`; these keep its plan and its judgement honest: every
fault of issue 19 on every length, windows that open and close where the faults do, a GCRA
bound that fails when the limiter over-admits, and a config the real loader accepts (and a
broken one it refuses), so a config change breaks a test, not a ten-minute run.
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from gateway.config import ConfigError
from gateway.loader import load_config

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from soak_config import (  # noqa: E402
    GRACE_S,
    LIMIT,
    LIMIT_WINDOW_S,
    Event,
    gateway_yaml,
    reload_interval,
    schedule,
    windows,
)
from soak_report import _bad, _in, rate_limit_check  # noqa: E402

FAULTS = ["target_kill", "target_restart", "target_503", "target_ok", "redis_kill", "redis_start",
          "redis_kill", "redis_start", "malformed_burst", "slow_headers"]


@pytest.mark.parametrize("seconds", [30, 60, 90, 120, 600, 3600])
def test_every_fault_comes_once_in_order_inside_the_run(seconds):
    events = schedule(seconds)
    assert [e.action for e in events if not e.action.startswith("reload")] == FAULTS
    assert all(0 < e.at < seconds for e in events)
    assert sum(e.action == "reload_broken" for e in events) == 1


@pytest.mark.parametrize(("seconds", "interval"), [(30, 5.0), (60, 5.0), (120, 6.0), (600, 30.0), (1200, 60.0)])
def test_reload_interval_scales_with_the_run(seconds, interval):
    assert reload_interval(seconds) == interval
    reloads = [e.at for e in schedule(seconds) if e.action.startswith("reload")]
    assert len(reloads) >= 4


@pytest.mark.parametrize("seconds", [30, 60, 90, 120, 600])
def test_fail_open_is_false_exactly_around_the_second_redis_kill(seconds):
    """The config in force at each Redis kill: true at the first, false at the second (a
    broken reload changes nothing), and true again by the end."""
    fail_open = True
    at_kill = []
    for e in schedule(seconds):
        if e.action == "reload":
            fail_open = e.fail_open
        elif e.action in ("redis_kill", "redis_start"):
            at_kill.append((e.action, e.arg, fail_open))
    assert at_kill == [("redis_kill", "open", True), ("redis_start", "open", True),
                       ("redis_kill", "closed", False), ("redis_start", "closed", False)]
    assert fail_open is True


def test_windows_pair_each_fault_with_its_end_and_add_the_grace():
    t0 = 1000.0
    ev = [(t0 + 10, Event(10, "target_kill", "t1")), (t0 + 12, Event(12, "target_restart", "t1")),
          (t0 + 20, Event(20, "target_503", "t2")), (t0 + 25, Event(25, "target_ok", "t2")),
          (t0 + 30, Event(30, "redis_kill", "open")), (t0 + 33, Event(33, "redis_start", "open")),
          (t0 + 40, Event(40, "redis_kill", "closed")), (t0 + 44, Event(44, "redis_start", "closed")),
          (t0 + 50, Event(50, "reload"))]
    got = [(w.start - t0, w.end - t0) for w in windows(ev)]
    # Redis down under fail_open true is no 5xx window: requests must pass then.
    assert got == [(10, 12 + GRACE_S), (20, 25 + GRACE_S), (40, 44 + GRACE_S)]


@pytest.mark.parametrize(("outcome", "bad"), [
    ("200", False), ("429 rate_limited", False), ("400 bad_request", False),
    ("502 bad_gateway", True), ("503 target_fault", True), ("500 internal_error", True),
    ("cut", True), ("200 aggregate incomplete", True), ("lost: closed before an answer", False),
])
def test_what_only_a_fault_may_explain(outcome, bad):
    assert _bad(outcome) is bad


@pytest.mark.parametrize(("sent", "done", "inside"), [
    (9.0, 9.9, False), (9.0, 10.0, True), (11.0, 11.5, True), (15.0, 20.0, True), (15.1, 16.0, False),
])
def test_a_request_is_inside_a_window_when_its_span_overlaps_it(sent, done, inside):
    wins = windows([(10.0, Event(0, "target_kill", "t1")), (15.0 - GRACE_S, Event(0, "target_restart", "t1"))])
    assert (_in(wins, sent, done) is not None) is inside


def _run(limited, events=(), seconds=60.0):
    return SimpleNamespace(t0=0.0, seconds=seconds, events=list(events), load={"limited": limited})


def _steady(start, end, allowed_every):
    """A request every 0.1 s from `start` to `end`, answered 0.05 s later; every
    `allowed_every`-th allowed, the rest refused."""
    out, n = [], 0
    t = start
    while t < end:
        out.append((t, t + 0.05, 200 if n % allowed_every == 0 else 429))
        n += 1
        t = round(t + 0.1, 6)
    return out


def test_rate_limit_holds_at_the_gcra_rate_and_fails_above_it():
    interval = LIMIT_WINDOW_S / LIMIT  # the limiter lets one through per interval after its burst
    every = round(interval / 0.1)
    held, _, lines = rate_limit_check(_run(_steady(0, 60, every)))
    assert held is True, lines
    over, _, lines = rate_limit_check(_run(_steady(0, 60, max(1, every - 1))))
    assert over is False
    assert lines[0].endswith("OVER")


def test_rate_limit_with_no_refusal_at_all_did_not_act():
    held, _, _ = rate_limit_check(_run([(t / 10, t / 10 + 0.05, 200) for t in range(5)]))
    assert held is False


def test_rate_limit_allows_a_fresh_burst_after_redis_comes_back_empty_but_nothing_while_closed():
    ev = [(20.0, Event(20, "redis_kill", "closed")), (25.0, Event(25, "redis_start", "closed"))]
    burst = [(25.1 + i * 0.01, 25.2 + i * 0.01, 200) for i in range(LIMIT)]
    before, after = _steady(0, 19.8, round(LIMIT_WINDOW_S / LIMIT / 0.1)), _steady(26.0, 60, 2)
    during = [(21.0, 21.1, 503), (22.0, 22.1, 503)]
    held, _, lines = rate_limit_check(_run(before + during + burst + after, ev))
    assert held is True, lines
    leaked = [(22.5, 22.6, 200)]
    held, _, lines = rate_limit_check(_run(before + during + leaked + burst + after, ev))
    assert held is False
    assert "1 allowed (0 wanted)" in lines[1]


@pytest.mark.parametrize("fail_open", [True, False])
def test_the_soak_config_loads(tmp_path, fail_open):
    path = tmp_path / "gateway.yaml"
    path.write_text(gateway_yaml(port=18080, admin_port=18081, secret="s" * 64, targets=[19001, 19002, 19003],
                                 redis_port=16379, fail_open=fail_open, generation=3))
    config = load_config(str(path))
    assert [r.name for r in config.routes] == ["limited", "overview", "api"]
    assert config.rate_limit_fail_open is fail_open
    assert len(config.upstreams["pool"].targets) == 3


def test_the_broken_soak_config_is_refused(tmp_path):
    path = tmp_path / "gateway.yaml"
    path.write_text(gateway_yaml(port=18080, admin_port=18081, secret="s" * 64, targets=[19001, 19002, 19003],
                                 redis_port=16379, fail_open=True, generation=4, broken=True))
    with pytest.raises(ConfigError) as info:
        load_config(str(path))
    assert info.value.problems == ["routes[2].upstream: unknown upstream 'missing_pool'"]

