"""The soak's gateway config and its fault schedule, both scaled from the run's length.

`gateway_yaml()` is the config the soak serves and reloads: JWT (HS256) on every route, a
Redis rate limit on every route (a loose one on the traffic routes, so every request pays
the Redis round trip, and a tight one on `/api/limited`, the route whose limit is checked),
a pool of three targets with retries, health checks and a breaker, an aggregate route over
that pool, a `websocket: true` route to the pool's echo at `/ws` and one each to t1 alone
(`/ws/t1`) and t2 alone (`/ws/t2`), so the kill and the 503 fault always meet open sockets
(each 101 carries the config generation that admitted it, `X-Soak-Generation`), access log
and metrics on.

`schedule()` lays the faults out on the loaded phase of `seconds` seconds, as fractions of
it, so a 60 s run sees every fault in the same order as the default 600 s one; `windows()`
says, for each fault that may legitimately cost 5xx answers, when (see `GRACE_S`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["DRAIN_SECONDS", "Event", "GRACE_S", "LIMIT", "Window", "gateway_yaml", "reload_interval", "schedule", "windows"]

# The checked rate limit: LIMIT requests per LIMIT_WINDOW_S on /api/limited, one subject.
LIMIT = 10
LIMIT_WINDOW_S = 2.0
LIMITED_RATE = 10.0  # offered per second: twice what the limit lets through
# A 5xx counts as caused by a fault when its request overlaps [fault start, fault end + GRACE_S].
GRACE_S = 3.0
MAX_IDLE = 64  # the pool's max_idle_connections (the default), per target
DRAIN_SECONDS = 10  # server.drain_seconds: at SIGTERM, open WebSockets get 1001 after this


@dataclass(frozen=True)
class Event:
    """One thing the soak does at `at` seconds into the loaded phase."""

    at: float
    action: str  # target_kill, target_restart, target_503, target_ok, redis_kill, redis_start,
    #              reload, reload_broken, malformed_burst, slow_headers; redis_starting (stamped, not scheduled)
    arg: str = ""
    duration: float = 0.0  # for malformed_burst and slow_headers
    fail_open: bool = True  # for reloads: the config's rate_limit_fail_open
    label: str = ""


@dataclass
class Window:
    """A fault during which 5xx answers are expected, with its grace."""

    name: str
    start: float  # wall clock
    end: float  # wall clock, grace included
    detail: str = ""
    hits: dict[str, int] = field(default_factory=dict)


def reload_interval(seconds: float) -> float:
    """30 s on the default 10-minute run, scaled down, never under 5 s."""
    return max(5.0, 30.0 * seconds / 600.0)


def schedule(seconds: float) -> list[Event]:
    """The faults of issue 19 on a run of `seconds`, sorted by time."""
    d = seconds
    kill_for = max(2.0, 0.03 * d)
    fault_for = max(3.0, 0.06 * d)
    redis_for = max(3.0, 0.04 * d)
    ev = [
        Event(0.12 * d, "target_kill", "t1", label="SIGKILL target t1"),
        Event(0.12 * d + kill_for, "target_restart", "t1", label="restart target t1"),
        Event(0.25 * d, "target_503", "t2", label="target t2 answers 503"),
        Event(0.25 * d + fault_for, "target_ok", "t2", label="target t2 answers again"),
        Event(0.40 * d, "redis_kill", "open", label="SIGKILL redis (fail_open: true)"),
        Event(0.40 * d + redis_for, "redis_start", "open", label="restart redis"),
        Event(0.60 * d, "redis_kill", "closed", label="SIGKILL redis (fail_open: false)"),
        Event(0.60 * d + redis_for, "redis_start", "closed", label="restart redis"),
        Event(0.72 * d, "malformed_burst", duration=max(2.0, 0.02 * d), label="malformed requests burst"),
        Event(0.78 * d, "slow_headers", duration=max(5.0, min(90.0, 0.15 * d)),
              label="slow-header clients"),
    ]
    # Reloads every interval; fail_open is false from just before the second Redis kill until after
    # its restart (the reloads decide it), and the reload nearest a third of the run is broken.
    step = reload_interval(d)
    closed_from = 0.60 * d - min(step, 0.05 * d)
    closed_until = 0.60 * d + redis_for + GRACE_S
    times = [step * k for k in range(1, int(d / step) + 1) if step * k < d - 1]
    broken = min(times, key=lambda t: abs(t - d / 3)) if times else None
    switch_off = min((t for t in times if t >= closed_from), default=None)
    switch_on = min((t for t in times if t >= closed_until), default=None)
    for t in times:
        closed = switch_off is not None and t >= switch_off and (switch_on is None or t < switch_on)
        if t == broken:
            ev.append(Event(t, "reload_broken", label="reload: broken config (refused)"))
        else:
            note = " -> fail_open: false" if t == switch_off else " -> fail_open: true" if t == switch_on else ""
            ev.append(Event(t, "reload", fail_open=not closed, label="reload" + note))
    # Without a reload in time (a very short run) the closed-Redis fault still needs fail_open: false.
    if switch_off is None or switch_off > 0.60 * d:
        ev = [e for e in ev if not (e.action == "reload" and e.at == switch_off)]
        ev.append(Event(closed_from, "reload", fail_open=False, label="reload -> fail_open: false"))
    return sorted(ev, key=lambda e: e.at)


def windows(events: list[tuple[float, Event]]) -> list[Window]:
    """The 5xx windows from the events as they happened (wall clock `at`, event): a killed
    target until its restart, a 503 target until it answers again, and Redis down while
    `rate_limit_fail_open` is false, until its restart; each extended by GRACE_S. The
    start is the fault itself: a request in flight at that moment may fail."""
    out: list[Window] = []
    opened: dict[str, tuple[float, str]] = {}
    pairs = {"target_kill": "target_restart", "target_503": "target_ok", "redis_kill": "redis_start"}
    for at, e in events:
        if e.action in pairs and not (e.action == "redis_kill" and e.arg == "open"):
            opened[pairs[e.action]] = (at, e.label)
        elif e.action in opened:
            start, label = opened.pop(e.action)
            out.append(Window(label, start, at + GRACE_S, f"{at - start:.1f}s + {GRACE_S:g}s grace"))
    return out


def gateway_yaml(*, port: int, admin_port: int, secret: str, targets: list[int], redis_port: int,
                 fail_open: bool, generation: int, broken: bool = False) -> str:
    """The soak's gateway config (SPEC §3). `generation` goes into a response header so each
    reload really changes the config; `broken` names an unknown upstream (a load error)."""
    target_list = ", ".join(f"http://127.0.0.1:{p}" for p in targets)
    upstream = "missing_pool" if broken else "pool"
    return f"""# Generated by bench/soak.py (generation {generation})
server:
  host: 127.0.0.1
  port: {port}
  processes: 1
  max_body_bytes: 4194304
  drain_seconds: {DRAIN_SECONDS}

admin:
  host: 127.0.0.1
  port: {admin_port}

auth:
  jwt:
    algorithms: [HS256]
    secret: "{secret}"
    claims_to_headers: {{sub: X-User-Id}}

upstreams:
  pool:
    targets: [{target_list}]
    balance: round_robin
    connect_timeout: 1
    request_timeout: 10
    retry: {{attempts: 3, backoff_seconds: 0.02, max_backoff_seconds: 0.2, on_statuses: [502, 503, 504]}}
    health_check: {{path: /health, interval_seconds: 1, timeout_seconds: 1, healthy_threshold: 2, unhealthy_threshold: 2}}
    circuit_breaker: {{failure_threshold: 5, open_seconds: 2}}
    max_idle_connections: {MAX_IDLE}

  # One target each, for the WebSocket slots pinned to the faulted targets (bench/soak_ws.py);
  # healthy again on the first good check, so a restarted target takes handshakes within GRACE_S.
  ws_t1:
    targets: [http://127.0.0.1:{targets[0]}]
    connect_timeout: 1
    health_check: {{path: /health, interval_seconds: 1, timeout_seconds: 1, healthy_threshold: 1, unhealthy_threshold: 2}}
  ws_t2:
    targets: [http://127.0.0.1:{targets[1]}]
    connect_timeout: 1
    health_check: {{path: /health, interval_seconds: 1, timeout_seconds: 1, healthy_threshold: 1, unhealthy_threshold: 2}}

rate_limit_store: redis://127.0.0.1:{redis_port}/0
rate_limit_fail_open: {"true" if fail_open else "false"}

routes:
  - name: limited
    path: /api/limited
    methods: [GET]
    upstream: pool
    rewrite_prefix: /small
    rate_limit: {{requests: {LIMIT}, window_seconds: {LIMIT_WINDOW_S:g}, key: subject}}
  - name: overview
    path: /api/overview
    rate_limit: {{requests: 1000000, window_seconds: 60, key: subject}}
    timeout: 10
    aggregate:
      - {{name: a, upstream: pool, path: /part/a}}
      - {{name: b, upstream: pool, path: /part/b}}
  - name: api
    path: /api
    methods: [GET, POST]
    upstream: {upstream}
    strip_prefix: true
    rate_limit: {{requests: 1000000, window_seconds: 60, key: subject}}
    response_headers: {{set: {{X-Soak-Generation: "{generation}"}}}}
  - name: ws
    path: /ws
    upstream: pool
    websocket: true
    websocket_idle_seconds: 60
    rate_limit: {{requests: 1000000, window_seconds: 60, key: subject}}
    response_headers: {{set: {{X-Soak-Generation: "{generation}"}}}}
  - name: ws-t1
    path: /ws/t1
    upstream: ws_t1
    rewrite_prefix: /ws
    websocket: true
    websocket_idle_seconds: 60
    rate_limit: {{requests: 1000000, window_seconds: 60, key: subject}}
    response_headers: {{set: {{X-Soak-Generation: "{generation}"}}}}
  - name: ws-t2
    path: /ws/t2
    upstream: ws_t2
    rewrite_prefix: /ws
    websocket: true
    websocket_idle_seconds: 60
    rate_limit: {{requests: 1000000, window_seconds: 60, key: subject}}
    response_headers: {{set: {{X-Soak-Generation: "{generation}"}}}}

logging: {{level: info, format: json}}
"""
