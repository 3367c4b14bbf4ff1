"""bench/soak's pure parts: the fault schedule, the 5xx windows, the rate-limit verdict, the config,
the WebSocket class's echo check and its judgement.

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
from soak_ws import (  # noqa: E402
    WS_SIZE,
    EchoCheck,
    client_frame,
    close_payload,
    first_lives,
    judge,
    judge_shutdown,
    message,
    parse_gauge,
    read_frame,
    slot_path,
    ws_lifetime,
)

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


def test_an_answer_while_redis_was_starting_is_not_judged_as_one_while_it_was_down():
    """A 10-minute soak (11:17) counted a request allowed 40 ms before the harness saw the restarted
    Redis ready, which had answered the gateway already: between the restart's start and that
    stamp Redis is neither surely down nor surely up."""
    ev = [(20.0, Event(20, "redis_kill", "closed")), (24.9, Event(24, "redis_starting", "closed")),
          (25.0, Event(24, "redis_start", "closed"))]
    before = _steady(0, 19.8, round(LIMIT_WINDOW_S / LIMIT / 0.1))
    during, answered_by_the_new_redis = [(21.0, 21.1, 503), (24.0, 24.1, 503)], [(24.92, 24.95, 200)]
    held, _, lines = rate_limit_check(_run(before + during + answered_by_the_new_redis, ev))
    assert held is True, lines
    assert lines[1].endswith("0 allowed (0 wanted)") and "not judged" in lines[2]
    held, _, lines = rate_limit_check(_run(before + during + [(24.0, 24.05, 200)], ev))  # while down: still caught
    assert held is False


@pytest.mark.parametrize("fail_open", [True, False])
def test_the_soak_config_loads(tmp_path, fail_open):
    path = tmp_path / "gateway.yaml"
    path.write_text(gateway_yaml(port=18080, admin_port=18081, secret="s" * 64, targets=[19001, 19002, 19003],
                                 redis_port=16379, fail_open=fail_open, generation=3))
    config = load_config(str(path))
    assert [r.name for r in config.routes] == ["limited", "overview", "api", "ws", "ws-t1", "ws-t2"]
    assert [(r.websocket, r.upstream, r.path) for r in config.routes[3:]] == [
        (True, "pool", "/ws"), (True, "ws_t1", "/ws/t1"), (True, "ws_t2", "/ws/t2")]
    assert [t.url for t in config.upstreams["ws_t1"].targets] == ["http://127.0.0.1:19001"]
    assert [t.url for t in config.upstreams["ws_t2"].targets] == ["http://127.0.0.1:19002"]
    assert config.rate_limit_fail_open is fail_open
    assert len(config.upstreams["pool"].targets) == 3


def test_the_broken_soak_config_is_refused(tmp_path):
    path = tmp_path / "gateway.yaml"
    path.write_text(gateway_yaml(port=18080, admin_port=18081, secret="s" * 64, targets=[19001, 19002, 19003],
                                 redis_port=16379, fail_open=True, generation=4, broken=True))
    with pytest.raises(ConfigError) as info:
        load_config(str(path))
    assert info.value.problems == ["routes[2].upstream: unknown upstream 'missing_pool'"]



# --- the WebSocket class (bench/soak_ws.py) ---


@pytest.mark.parametrize(("seconds", "lifetime"), [(30, 12.5), (60, 12.5), (600, 75.0), (1200, 150.0)])
def test_a_socket_lives_two_and_a_half_reload_intervals(seconds, lifetime):
    assert ws_lifetime(seconds) == lifetime
    assert ws_lifetime(seconds) / reload_interval(seconds) == 2.5


def test_first_lives_spread_the_reconnects_over_one_lifetime():
    assert first_lives(4, 10.0) == [2.5, 5.0, 7.5, 10.0]
    assert first_lives(8, 75.0)[-1] == 75.0


@pytest.mark.parametrize(("slot", "path"), [(0, "/ws/t1"), (1, "/ws/t2"), (2, "/ws"), (7, "/ws")])
def test_two_slots_are_pinned_to_the_faulted_targets(slot, path):
    assert slot_path("/ws", slot) == path


def test_messages_name_slot_life_and_sequence_and_have_one_size():
    assert message(3, 1, 17).startswith("3.1.17.")
    assert {len(message(7, 12, n)) for n in (0, 9999)} == {WS_SIZE}


def _feed(sent, echoes):
    check = EchoCheck(2, 5)
    for _ in range(sent):
        check.next_message()
    return check, [check.feed(e) for e in echoes]


@pytest.mark.parametrize(("sent", "echoes", "results", "echoed", "mismatches", "waiting"), [
    (3, [0, 1, 2], [True, True, True], 3, 0, False),
    (3, [0, 1], [True, True], 2, 0, True),  # the last one still on its way
    (3, [0, 2], [True, False], 1, 1, False),  # one lost in the middle
    (3, [1, 0, 2], [False, False, False], 0, 3, False),  # reordered: each one is off the sequence
    (2, [0, 0, 1], [True, False, True], 2, 1, False),  # doubled
    (1, [0, 1], [True, False], 1, 1, False),  # an echo of what was never sent
    (2, ["2.5.0.altered", 1], [False, True], 1, 1, False),  # altered text, then back in step
    (1, [b"binary"], [False], 0, 1, True),  # the wrong kind of message
])
def test_the_echo_check_takes_only_the_next_message(sent, echoes, results, echoed, mismatches, waiting):
    texts = [message(2, 5, e) if isinstance(e, int) else e for e in echoes]
    check, got = _feed(sent, texts)
    assert (got, check.echoed, check.mismatches, check.waiting) == (results, echoed, mismatches, waiting)


def test_the_echo_check_names_its_first_mismatch():
    check, _ = _feed(3, [message(2, 5, 1), message(2, 5, 0)])
    assert check.first_mismatch == f"expected #0, got {message(2, 5, 1)[:40]!r}"


@pytest.mark.parametrize(("text", "value"), [
    ('# HELP gateway_websocket_connections x\n# TYPE gateway_websocket_connections gauge\n'
     'gateway_websocket_connections{route="ws"} 0.0\n', 0.0),
    ('gateway_websocket_connections{route="ws"} 2.0\ngateway_websocket_connections{route="b"} 1.0\n', 3.0),
    ('gateway_websocket_connections_total 5.0\ngateway_requests_total 9.0\n', None),
    ("", None),
])
def test_the_gauge_is_summed_over_its_routes(text, value):
    assert parse_gauge(text) == value


T0 = 1000.0
WINS = windows([(T0 + 10, Event(10, "target_kill", "t1", label="SIGKILL target t1")),
                (T0 + 12, Event(12, "target_restart", "t1")),
                (T0 + 20, Event(20, "target_503", "t2", label="target t2 answers 503")),
                (T0 + 25, Event(25, "target_ok", "t2"))])
RELOADS = [T0 + 5, T0 + 11.5, T0 + 15, T0 + 30]


def _sock(slot, life, opened, closed, code, by, target="t3", sent=50, echoed=None, mismatches=0):
    return {"slot": slot, "life": life, "opened": T0 + opened, "closed": T0 + closed, "generation": str(life),
            "target": target, "code": code, "reason": "", "by": by, "sent": sent,
            "echoed": sent if echoed is None else echoed, "mismatches": mismatches,
            "first_mismatch": "expected #3, got '2.0.4.'" if mismatches else "",
            "last_echo": T0 + closed - 0.1}


def _ws(socks, handshakes=None):
    hs = handshakes if handshakes is not None else [[s["opened"] - 0.01, s["opened"], "101"] for s in socks]
    return {"sockets": socks, "handshakes": hs, "slots": 2}


GOOD = [_sock(0, 0, 0, 11, 1014, "peer", target="t1", echoed=48), _sock(0, 1, 12, 40, 1000, "end"),
        _sock(1, 0, 0, 21, 1001, "peer", target="t2", echoed=49), _sock(1, 1, 22, 40, 1000, "end")]


def _verdicts(socks, handshakes=None, gauge=0.0, reloads=RELOADS):
    return {name.split(": ", 1)[1]: (ok, detail)
            for name, ok, detail in judge(_ws(socks, handshakes), WINS, reloads, gauge, T0)}


def test_a_run_whose_sockets_only_faults_closed_passes_every_websocket_criterion():
    got = _verdicts(GOOD)
    assert all(ok for ok, _ in got.values()), got
    assert "3 unanswered on sockets a fault closed" in got[
        "every echo back in order, none lost but on a socket a fault closed"][1]
    assert "each crossed by 1-2 open sockets" in got["open sockets survive every reload"][1]


@pytest.mark.parametrize(("change", "failing"), [
    # a socket closed by us that missed an echo
    (lambda s: s.__setitem__(1, _sock(0, 1, 12, 40, 1000, "end", echoed=49)),
     "every echo back in order, none lost but on a socket a fault closed"),
    # echoes out of order on a socket a fault closed
    (lambda s: s.__setitem__(0, _sock(0, 0, 0, 11, 1014, "peer", target="t1", echoed=40, mismatches=1)),
     "every echo back in order, none lost but on a socket a fault closed"),
    # 1014 outside the kill window
    (lambda s: s.__setitem__(0, _sock(0, 0, 0, 18, 1014, "peer", target="t1")),
     "only faults close sockets (1014/1001 in their window), every slot reconnects"),
    # 1014 on a socket to a target that was not killed
    (lambda s: s.__setitem__(0, _sock(0, 0, 0, 11, 1014, "peer", target="t3")),
     "only faults close sockets (1014/1001 in their window), every slot reconnects"),
    # 1001 inside the kill window: the wrong code for that fault
    (lambda s: s.__setitem__(0, _sock(0, 0, 0, 11, 1001, "peer", target="t1")),
     "only faults close sockets (1014/1001 in their window), every slot reconnects"),
    # a dropped connection (no close frame)
    (lambda s: s.__setitem__(0, _sock(0, 0, 0, 11, 1006, "peer", target="t1")),
     "only faults close sockets (1014/1001 in their window), every slot reconnects"),
    # a slot that never reconnected after its fault
    (lambda s: s.pop(1), "only faults close sockets (1014/1001 in their window), every slot reconnects"),
    # the kill met no socket: the 1014 path was not exercised
    (lambda s: s.__setitem__(0, _sock(0, 0, 0, 30, 1000, "client", target="t1")),
     "only faults close sockets (1014/1001 in their window), every slot reconnects"),
    # our own close answered with another code
    (lambda s: s.__setitem__(3, _sock(1, 1, 22, 40, 1011, "end")),
     "only faults close sockets (1014/1001 in their window), every slot reconnects"),
])
def test_each_websocket_criterion_fails_on_its_fault(change, failing):
    socks = [dict(s) for s in GOOD]
    change(socks)
    got = _verdicts(socks)
    assert [name for name, (ok, _) in got.items() if not ok] == [failing], got


def test_a_socket_dropped_right_after_a_reload_fails_the_reload_criterion():
    socks = [dict(s) for s in GOOD] + [_sock(0, 9, 1, 31, 1001, "peer")]
    got = _verdicts(socks)
    assert got["open sockets survive every reload"][0] is False
    assert "1 dropped at a reload: ['socket 0.9 1001 at 31.0s']" in got["open sockets survive every reload"][1]


def test_a_reload_no_open_socket_crossed_proves_nothing():
    got = _verdicts(GOOD, reloads=RELOADS + [T0 + 39.95])
    assert got["open sockets survive every reload"][0] is False


def test_a_handshake_refused_outside_the_fault_windows_fails():
    hs = [[s["opened"] - 0.01, s["opened"], "101"] for s in GOOD]
    inside, outside = [T0 + 11.0, T0 + 11.01, "502 bad_gateway"], [T0 + 30.0, T0 + 30.01, "503 no_healthy_upstream"]
    assert _verdicts(GOOD, hs + [inside])[
        "only faults close sockets (1014/1001 in their window), every slot reconnects"][0] is True
    ok, detail = _verdicts(GOOD, hs + [outside])[
        "only faults close sockets (1014/1001 in their window), every slot reconnects"]
    assert ok is False
    assert "503 no_healthy_upstream at 30.0s" in detail


@pytest.mark.parametrize(("gauge", "ok"), [(0.0, True), (1.0, False), (None, False)])
def test_the_gauge_must_be_back_to_zero(gauge, ok):
    assert _verdicts(GOOD, gauge=gauge)["gateway_websocket_connections back to 0"][0] is ok


def test_no_socket_at_all_fails():
    got = _verdicts([])
    assert got["every echo back in order, none lost but on a socket a fault closed"][0] is False


# --- the shutdown probe's frames and its verdict ---


@pytest.mark.parametrize("size", [0, 5, 125, 126, 65535, 65536])
def test_a_client_frame_reads_back_as_it_was_sent(size):
    payload = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    frame = client_frame(0x1, payload, b"\x01\x02\x03\x04")
    assert frame[0] == 0x81 and frame[1] & 0x80  # final text frame, masked as a client's must be
    assert payload == b"" or frame[-size:] != payload  # masked on the wire
    buf = bytearray(frame)

    def recv_exact(n):
        out = bytes(buf[:n])
        del buf[:n]
        return out

    assert read_frame(recv_exact) == (0x1, payload)
    assert not buf


@pytest.mark.parametrize(("payload", "got"), [
    (b"\x03\xe9gateway shutting down", (1001, "gateway shutting down")),
    (b"\x03\xf6", (1014, "")),
    (b"", (1005, "")),
])
def test_a_close_payload_gives_code_and_reason(payload, got):
    assert close_payload(payload) == got


def _probe(**over):
    base = {"status": "HTTP/1.1 101 Switching Protocols", "error": "", "sent": 44, "echoed": 43,
            "echoed_after_sigterm": 40, "code": 1001, "reason": "gateway shutting down", "closed_after_s": 10.2}
    return {**base, **over}


@pytest.mark.parametrize(("over", "ok"), [
    ({}, True),
    ({"code": 1006, "error": "ConnectionError: closed"}, False),  # dropped, no close frame
    ({"code": 1000}, False),
    ({"echoed_after_sigterm": 0}, False),  # the relay stopped at the signal
    ({"closed_after_s": 0.3}, False),  # closed at once: the drain was not waited for
    ({"closed_after_s": 16.0}, False),
    ({"status": "HTTP/1.1 503 Service Unavailable", "code": 0, "closed_after_s": -1.0, "echoed_after_sigterm": 0},
     False),
])
def test_the_shutdown_probe_must_echo_through_the_drain_then_get_1001(over, ok):
    assert judge_shutdown(_probe(**over), 10)[1] is ok


def test_no_shutdown_probe_result_fails():
    assert judge_shutdown(None, 10)[1] is False
