"""The soak's verdicts, its table and its plot (bench/soak.py calls `evaluate` and `write_report`).

The criteria (each a `Verdict`; any failed one makes `make soak` exit 1):

- no request lost: every request sent got a status line (`lost: ...` and `connect failed`
  outcomes count; a generator that could not keep up and did not send is reported apart);
- no POST reached an upstream twice (the targets' records), and every POST answered 200 was
  recorded by exactly one target;
- no 5xx outside the fault windows (soak_config.windows(): a killed target until its
  restart, a 503 target until it recovers, Redis down under fail_open false until its
  restart, each plus GRACE_S; a request counts as inside when its [sent, answered] span
  overlaps a window). A cut answer and an aggregate answered incomplete count like a 5xx;
  the hostile clients' answers count too;
- no 500 at all (a gateway bug whatever the faults), no Python traceback in its log;
- every other answer outside the windows is a 200 (the rate-limited stream excepted);
- RSS growth over the last half under 5 %: the median RSS of the last 10 % of the run over
  the median of the 10 % after half-way (medians, so one sample taken during a 1 MiB
  transfer does not decide);
- fds back to baseline: after the load, the gateway's fds other than pooled upstream and
  Redis connections are at most what they were after calibration, no client socket is left,
  and pooled upstream connections are within max_idle_connections per target;
- the rate limit held: between Redis kills and restarts, allowed <= LIMIT + 1 + span / T
  (GCRA's promise, T = window / limit); none allowed while Redis was down under fail_open
  false; some refused (the limiter did act); see rate_limit_check();
- every good reload answered 200, the broken one 400; the gateway exits 0 on SIGTERM;
- the WebSocket sockets (bench/soak_ws.judge()): every echo back in order, none lost but on
  a socket a fault closed; only faults close sockets (1014 in a killed target's window, 1001
  in a 503 target's, on a socket to that target; each of those faults closes at least one),
  every handshake outside the windows answered 101 and every slot reconnected; every reload crossed by open sockets that went on
  echoing after it; `gateway_websocket_connections` back to 0; a socket open at SIGTERM
  echoes through the drain and gets 1001 once drain_seconds is over.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from statistics import median
from typing import TYPE_CHECKING, Any

from soak_config import DRAIN_SECONDS, GRACE_S, LIMIT, LIMIT_WINDOW_S, LIMITED_RATE, MAX_IDLE, Window, windows
from soak_ws import close_counts, handshake_counts, judge, judge_shutdown

if TYPE_CHECKING:
    from soak import Run

__all__ = ["Verdict", "evaluate", "write_report"]

RSS_GROWTH_MAX = 0.05


@dataclass
class Verdict:
    name: str
    ok: bool
    detail: str


def _bad(outcome: str) -> bool:
    """An outcome that only a fault may explain: 5xx, a cut answer, an incomplete aggregate."""
    return outcome[:1] == "5" or outcome == "cut" or outcome.endswith("aggregate incomplete")


def _in(windows_: list[Window], sent: float, done: float) -> Window | None:
    return next((w for w in windows_ if sent <= w.end and done >= w.start), None)


def _status_code(outcome: str) -> int:
    head = outcome.split(" ", 1)[0]
    return int(head) if head.isdigit() else 0


def rate_limit_check(run: Run) -> tuple[bool, str, list[str]]:
    """(held, one line, a line per segment) for the rate-limited stream.

    The run is cut at every Redis kill, at each restart's start and where the restarted Redis first
    answered the harness (between those two it may have answered the gateway already: not judged). The gateway decided each request between
    its sending and its answer, so a request counts in a segment only when that whole span lies
    inside it (one straddling a cut could have been decided on either side; those are counted
    apart). Within a segment where Redis was up, GCRA promises at most LIMIT + span / T allowed
    (a full burst, then one per T); while Redis was down under fail_open false, none."""
    interval = LIMIT_WINDOW_S / LIMIT
    limited = sorted(tuple(x) for x in run.load.get("limited", []))  # (sent, done, status)
    cuts: list[tuple[float, str]] = [(run.t0 - 5, "start")]
    for at, e in run.events:
        if e.action == "redis_kill":
            cuts.append((at, f"redis down (fail_open {'true' if e.arg == 'open' else 'false'})"))
        elif e.action == "redis_starting":
            cuts.append((at, "redis starting"))
        elif e.action == "redis_start":
            cuts.append((at, "redis restarted (empty)"))
    cuts.append((run.t0 + run.seconds + 60, "end"))
    lines, held, straddling = [], True, 0
    for (t0, label), (t1, _) in zip(cuts, cuts[1:], strict=False):
        got = [(s, d, st) for s, d, st in limited if t0 <= s and d < t1]
        straddling += sum(1 for s, d, _ in limited if s < t1 <= d)
        allowed = sum(1 for *_, st in got if st == 200)
        refused = sum(1 for *_, st in got if st == 429)
        where = f"{max(0.0, t0 - run.t0):6.1f}s-{min(t1, run.t0 + run.seconds) - run.t0:6.1f}s {label}"
        if label == "redis starting":  # up at some moment in it (it answered start_redis() at its end): not judged
            lines.append(f"{where}: {allowed} allowed, {refused} refused; not judged (Redis came up within it)")
            continue
        if label.startswith("redis down"):
            closed = "false" in label
            held &= not (closed and allowed)
            lines.append(f"{where}: {allowed} allowed, {refused} refused, {len(got) - allowed - refused} other; "
                         + (f"{allowed} allowed (0 wanted)" if closed else "limit lifted, as configured"))
            continue
        span = max((d for _, d, _ in got), default=t0) - min((s for s, _, _ in got), default=t0)
        bound = LIMIT + 1 + math.floor(span / interval)
        ok = allowed <= bound
        held &= ok
        lines.append(f"{where}: {allowed} allowed (GCRA bound {bound}), {refused} refused{'' if ok else '  OVER'}")
    # The sliding-window view the issue asks for: most answers allowed in any LIMIT_WINDOW_S.
    allowed_t = [d for _, d, st in limited if st == 200]
    worst, j = 0, 0
    for i, t in enumerate(allowed_t):
        while allowed_t[j] <= t - LIMIT_WINDOW_S:
            j += 1
        worst = max(worst, i - j + 1)
    total_refused = sum(1 for *_, st in limited if st == 429)
    held &= total_refused > 0
    summary = (f"{LIMIT} per {LIMIT_WINDOW_S:g}s for one subject, {len(limited)} offered at {LIMITED_RATE:g}/s, "
               f"{total_refused} refused; most allowed in any {LIMIT_WINDOW_S:g}s of answers: {worst} "
               f"({straddling} straddled a Redis kill or restart and are not counted)")
    return held, summary, lines


def evaluate(run: Run) -> list[Verdict]:
    load = run.load
    wins = windows(run.events)
    run.windows = wins
    events = load["events"]
    lost = [e for e in events if e[3].startswith(("lost", "connect failed"))]
    outside_bad, outside_other, five_hundreds = [], [], []
    for kind, sent, done, outcome, _lat, rid in events:
        if outcome.startswith("500"):
            five_hundreds.append((kind, outcome, rid))
        w = _in(wins, sent, done)
        if w is not None:
            w.hits[outcome] = w.hits.get(outcome, 0) + 1
            continue
        if _bad(outcome):
            outside_bad.append((round(sent - run.t0, 2), kind, outcome, rid))
        elif kind != "limited" and not outcome.startswith(("lost", "connect failed")):
            outside_other.append((round(sent - run.t0, 2), kind, outcome, rid))
    hostile_5xx = [f"{case}: {o} x{n}" for case, outs in run.hostile.get("malformed", {}).items()
                   for o, n in outs.items() if o.startswith("5")]
    # Only the measured POSTs: calibration's ids start with "cal-", the hostile clients' POSTs have none ("-").
    dup = {k: v for k, v in run.post_records.items() if len(v) > 1 and k.startswith("soak-")}
    posts = {k: v for k, v in load["post_ids"].items()}
    unrecorded = [k for k, o in posts.items() if o == "200" and len(run.post_records.get(k, [])) != 1]

    v = [
        Verdict("no request lost", not lost,
                f"{len(lost)} lost of {load['requests']:,} sent" + (f": {lost[:5]}" if lost else "")),
        Verdict("no POST reached an upstream twice", not dup,
                f"{len(posts):,} POSTs sent, {sum(1 for k in run.post_records if k.startswith('soak-')):,} "
                f"recorded by the targets, {len(dup)} twice" + (f": {list(dup.items())[:5]}" if dup else "")),
        Verdict("every POST answered 200 reached exactly one target", not unrecorded,
                f"{len(unrecorded)} not" + (f": {unrecorded[:5]}" if unrecorded else "")),
        Verdict("no 5xx outside the fault windows", not outside_bad and not hostile_5xx,
                f"{len(outside_bad)} outside (+{len(hostile_5xx)} to hostile clients); windows: "
                + "; ".join(f"{w.name} {w.detail}: {sum(w.hits.values())} non-200" for w in wins)
                + (f"; first: {outside_bad[:5]}" if outside_bad else "") + (f" {hostile_5xx}" if hostile_5xx else "")),
        Verdict("no 500 internal_error, no traceback", not five_hundreds and not run.tracebacks,
                f"{len(five_hundreds)} x 500, {len(run.tracebacks)} tracebacks in the gateway's stderr"
                + (f": {five_hundreds[:3]} {run.tracebacks[:1]}" if five_hundreds or run.tracebacks else "")),
        Verdict("every other answer outside the windows is 200", not outside_other,
                f"{len(outside_other)} not" + (f": {outside_other[:5]}" if outside_other else "")),
    ]
    v.append(_rss_verdict(run))
    v.append(_fd_verdict(run))
    held, summary, _ = rate_limit_check(run)
    v.append(Verdict("the rate limit held across the Redis restarts", held, summary))
    good = [r for r in run.reloads if not r["broken"]]
    broken = [r for r in run.reloads if r["broken"]]
    reload_ok = all(r["status"] == 200 for r in good) and all(r["status"] == 400 for r in broken) and bool(broken)
    v.append(Verdict("reloads: each good one 200, the broken one refused (400)", reload_ok,
                     f"{sum(r['status'] == 200 for r in good)}/{len(good)} good answered 200, "
                     f"broken: {[r['status'] for r in broken]}"
                     + ("" if reload_ok else f"; {[r for r in run.reloads if r['status'] not in (200, 400)][:3]}")))
    v.append(Verdict("the gateway exits 0 on SIGTERM at the end", run.gateway_exit == 0,
                     f"exit {run.gateway_exit}"))
    if "ws" in load:
        reload_times = [at for at, e in run.events if e.action in ("reload", "reload_broken")]
        v += [Verdict(*x) for x in judge(load["ws"], wins, reload_times, run.ws_gauge, run.t0)]
        v.append(Verdict(*judge_shutdown(run.ws_shutdown, DRAIN_SECONDS)))
    return v


def _window_median(run: Run, lo: float, hi: float) -> float:
    vals = [s.rss_mib for s in run.samples if lo * run.seconds <= s.t < hi * run.seconds]
    return median(vals) if vals else 0.0


def _rss_verdict(run: Run) -> Verdict:
    mid, end = _window_median(run, 0.5, 0.6), _window_median(run, 0.9, 1.0)
    growth = (end - mid) / mid if mid else float("inf")
    peak = max((s.rss_mib for s in run.samples), default=0.0)
    return Verdict("RSS growth over the last half under 5 %", growth < RSS_GROWTH_MAX,
                   f"median {mid:.1f} MiB at 50-60 % of the run, {end:.1f} MiB at 90-100 %: "
                   f"{growth:+.1%} (peak {peak:.1f} MiB)")


def _fd_verdict(run: Run) -> Verdict:
    def core(k: dict[str, int]) -> int:
        return sum(n for kind, n in k.items() if kind not in ("upstream", "redis"))

    base, end = run.baseline_fds, run.end_fds
    ok = (core(end) <= core(base) and end.get("client", 0) == 0
          and end.get("upstream", 0) <= 3 * MAX_IDLE)
    return Verdict("fds back to the baseline at the end", ok,
                   f"baseline {sum(base.values())} {base}; end {sum(end.values())} {end}; "
                   f"without pooled upstream/Redis connections {core(base)} -> {core(end)}")


def _fmt_counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {n:,}" for k, n in sorted(counts.items(), key=lambda kv: -kv[1]))


def table(run: Run, verdicts: list[Verdict], argv: list[str]) -> str:
    load = run.load
    m = run.machine
    by_outcome: dict[str, int] = {}
    for outcomes in load["by_kind"].values():
        for o, n in outcomes.items():
            by_outcome[o] = by_outcome.get(o, 0) + n
    per_s = load["per_second"]
    steady = [row[1] for row in per_s[2:-2]] or [0]
    lines = [
        f"gateway soak {run.started:%Y-%m-%d %H:%M:%S}: {m.get('cpu')}, {m.get('cpus')} CPUs, kernel "
        f"{m.get('kernel')}, Python {m.get('python')}, tornado {m.get('tornado')}",
        f"command: bench/soak.py {' '.join(argv)}".rstrip() + f"  (loaded phase {run.seconds:g}s)",
        f"load average before / after: {' / '.join(run.loadavg)}",
        f"calibration: closed loop, {run.calibration['workers']} workers, {run.calibration['seconds']:g}s of the mix: "
        f"max {run.calibration['rps']:,.0f} req/s (gateway CPU {run.calibration['cpu_gateway']:.0%}, load "
        f"generator {run.calibration['cpu_loadgen']:.0%}); soak rate {run.rate:,.0f} req/s ({run.share:.0%})",
        "",
        "| measure | value |",
        "| --- | --- |",
        f"| requests sent (mix + rate-limited stream) | {load['requests']:,} |",
        f"| answered/s (median of seconds) | {median(steady):,.0f} |",
        f"| not sent (generator at its in-flight cap) | {load['not_sent']:,} |",
    ]
    for kind, (p50, p99) in sorted(load["latency_by_kind"].items()):
        n = sum(load["by_kind"].get(kind, {}).values())
        lines.append(f"| {kind}: requests, p50 / p99 of 200s | {n:,}, {p50:.1f} / {p99:.1f} ms |")
    lines += [
        f"| outcomes | {_fmt_counts(by_outcome)} |",
        f"| POSTs sent / recorded twice | {len(load['post_ids']):,} / "
        f"{sum(1 for k, t in run.post_records.items() if len(t) > 1 and k.startswith('soak-'))} |",
        f"| gateway RSS first / peak / last sample | {run.samples[0].rss_mib:.1f} / "
        f"{max(s.rss_mib for s in run.samples):.1f} / {run.samples[-1].rss_mib:.1f} MiB |",
        f"| gateway fds baseline / peak / end | {sum(run.baseline_fds.values())} / "
        f"{max(s.fds for s in run.samples)} / {sum(run.end_fds.values())} |",
        f"| gateway CPU (median of seconds) | {median(s.cpu_gateway for s in run.samples):.0%} |",
        f"| access-log lines | {run.access_lines:,} |",
        f"| gateway stderr lines by level | {_fmt_counts(run.gateway_stderr)} |",
        f"| reloads (good / broken) | {sum(not r['broken'] for r in run.reloads)} / "
        f"{sum(r['broken'] for r in run.reloads)} |",
    ]
    ws = load.get("ws")
    if ws:
        socks = ws["sockets"]
        lines += [
            f"| WebSocket: slots, sockets opened (life {ws['lifetime']:g} s) | {ws['slots']}, {len(socks):,} |",
            f"| WebSocket messages sent / echoed in order | {sum(s['sent'] for s in socks):,} / "
            f"{sum(s['echoed'] for s in socks):,} |",
            f"| WebSocket closes by code | {', '.join(f'{k} x{n}' for k, n in sorted(close_counts(socks).items()))} |",
            f"| WebSocket handshakes | {_fmt_counts(handshake_counts(ws))} |",
            f"| gateway_websocket_connections after the load | {run.ws_gauge} |",
        ]
    mal = run.hostile.get("malformed", {})
    if mal:
        flat: dict[str, int] = {}
        for outs in mal.values():
            for o, n in outs.items():
                flat[o] = flat.get(o, 0) + n
        lines.append(f"| malformed requests ({len(mal)} cases) | {_fmt_counts(flat)} |")
    sh = run.hostile.get("slow_headers")
    if sh:
        lines.append(f"| slow-header clients | {sh['clients']:.0f} opened, {sh['closed_by_gateway']:.0f} closed by "
                     f"the gateway (median after {sh['closed_after_median_s']:.1f} s), "
                     f"{sh['still_open_at_end']:.0f} open when they gave up |")
    warning = overload_warning(run)
    if warning:
        lines += ["", f"WARNING: {warning}"]
    lines += ["", f"fault windows (5xx expected; grace {GRACE_S:g} s):"]
    for w in run.windows:
        lines.append(f"  {w.start - run.t0:6.1f}s-{w.end - run.t0:6.1f}s  {w.name}: {_fmt_counts(w.hits) or 'none'}")
    _, summary, seg = rate_limit_check(run)
    lines += ["", f"rate limit: {summary}", *("  " + s for s in seg), "", "criteria:"]
    for v in verdicts:
        lines.append(f"  {'PASS' if v.ok else 'FAIL'}  {v.name}: {v.detail}")
    return "\n".join(lines)


def overload_warning(run: Run) -> str | None:
    """A sentence when the open loop found the gateway slower than the closed loop did at its
    maximum (or the generator hit its in-flight cap): then the machine was busier than during
    calibration and the soak measured overload, not the intended share."""
    cal = run.calibration.get("latency_by_kind", {}).get("get_1k")
    got = run.load["latency_by_kind"].get("get_1k")
    slower = bool(cal and got and got[0] > cal[0])
    if not slower and not run.load["not_sent"]:
        return None
    return (f"the gateway was overloaded: get_1k p50 {got[0] if got else 0:.0f} ms in the open loop vs "
            f"{cal[0] if cal else 0:.0f} ms in the closed loop at its maximum; {run.load['not_sent']:,} requests "
            "not sent (generator at its in-flight cap). Something else took CPU since calibration: the run "
            "measures overload, not the intended share (on a shared machine, try SOAK_SHARE=0.5)")


def plot(run: Run, path: Path) -> str | None:
    """The PNG: throughput, latency, RSS and fds over time, faults shaded. None when written."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib missing (pip install -e '.[bench]'): no plot"
    load = run.load
    off = load["started"] - run.t0
    per_s = load["per_second"][:-1] or load["per_second"]
    t = [row[0] + off for row in per_s]
    ws = load.get("ws")
    fig, ax = plt.subplots(5 if ws else 4, 1, figsize=(12, 13.5 if ws else 11), sharex=True)
    ax[0].plot(t, [row[1] for row in per_s], lw=0.8, label="answered/s")
    ax[0].plot(t, [row[2] for row in per_s], lw=0.8, label="200/s")
    ax[0].axhline(run.rate, color="grey", ls=":", lw=0.8, label=f"offered {run.rate:,.0f}/s")
    ax[0].set_ylabel("requests/s")
    ax[1].plot(t, [row[3] for row in per_s], lw=0.8, label="p50")
    ax[1].plot(t, [row[4] for row in per_s], lw=0.8, label="p99")
    ax[1].set_yscale("log")
    ax[1].set_ylabel("latency ms\n(slow readers left out)")
    st = [s.t for s in run.samples]
    ax[2].plot(st, [s.rss_mib for s in run.samples], lw=0.9, color="tab:purple", label="gateway RSS")
    ax[2].set_ylabel("RSS MiB")
    ax[3].plot(st, [s.fds for s in run.samples], lw=0.9, label="all fds")
    for kind in ("client", "upstream"):
        ax[3].plot(st, [s.fd_kinds.get(kind, 0) for s in run.samples], lw=0.7, label=kind)
    ax[3].set_ylabel("gateway open fds")
    if ws:
        eps = ws["echo_per_second"][:-1] or ws["echo_per_second"]
        ax[4].plot([sec + off for sec, _ in eps], [n for _, n in eps], lw=0.8, color="tab:green",
                   label=f"echoes/s ({ws['slots']} sockets)")
        top = max((n for _, n in eps), default=1)
        by_code: dict[str, list[float]] = {}
        for sk in ws["sockets"]:
            key = f"close {sk['code']}" + (" (ours)" if sk["by"] != "peer" else "")
            by_code.setdefault(key, []).append(sk["closed"] - run.t0)
        for (key, xs), marker in zip(sorted(by_code.items()), "v^xo+*", strict=False):
            ax[4].plot(xs, [top * 1.1] * len(xs), ls="", marker=marker, ms=5, label=key)
        refused = [h[0] - run.t0 for h in ws["handshakes"] if h[2] != "101"]
        if refused:
            ax[4].plot(refused, [top * 1.2] * len(refused), ls="", marker="|", ms=7, color="tab:red",
                       label="handshake refused")
        ax[4].set_ylim(bottom=0)
        ax[4].set_ylabel("WebSocket")
    ax[-1].set_xlabel("seconds into the loaded phase")
    for w in run.windows:
        for a in ax:
            a.axvspan(w.start - run.t0, w.end - run.t0, color="tab:red", alpha=0.12, lw=0)
        ax[0].text(w.start - run.t0, ax[0].get_ylim()[1] * 0.97, w.name, fontsize=7, va="top", rotation=90)
    spans = {"redis_kill": "redis_start"}
    opened: dict[str, float] = {}
    for at, e in run.events:
        x = at - run.t0
        if e.action in ("reload", "reload_broken"):
            for a in ax:
                a.axvline(x, color="tab:red" if e.action == "reload_broken" else "grey",
                          lw=1.0 if e.action == "reload_broken" else 0.4, ls="--" if e.action == "reload_broken" else ":")
        elif e.action == "redis_kill" and e.arg == "open":
            opened["redis_start"] = x
        elif e.action in spans.values() and e.action in opened:
            start = opened.pop(e.action)
            for a in ax:
                a.axvspan(start, x, color="gold", alpha=0.2, lw=0)
        elif e.action in ("malformed_burst", "slow_headers"):
            for a in ax:
                a.axvspan(x, x + e.duration, color="tab:orange", alpha=0.12, lw=0)
            ax[0].text(x, ax[0].get_ylim()[1] * 0.97, e.label, fontsize=7, va="top", rotation=90)
    for a in ax:
        a.legend(loc="lower right", fontsize=7)
        a.grid(alpha=0.3)
    fig.suptitle(f"gateway soak, {run.seconds:g}s at {run.rate:,.0f} req/s offered ({run.share:.0%} of the measured max); "
                 "red: 5xx windows, gold: Redis down (fail_open), orange: hostile clients, dotted: reloads "
                 "(red dashed: broken)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return None


def write_report(run: Run, verdicts: list[Verdict], results: Path, argv: list[str]) -> None:
    text = table(run, verdicts, argv)
    print("\n" + text, flush=True)
    results.mkdir(exist_ok=True)
    stamp = f"soak-{run.started:%Y%m%d-%H%M%S}"
    (results / f"{stamp}.txt").write_text(text + "\n")
    why = plot(run, results / f"{stamp}.png")
    data: dict[str, Any] = {
        "t0": run.t0, "seconds": run.seconds, "rate": run.rate, "share": run.share, "calibration": run.calibration, "ports": run.ports,
        "machine": run.machine, "loadavg": run.loadavg,
        "events": [[round(at - run.t0, 2), e.action, e.arg, e.label] for at, e in run.events],
        "windows": [[round(w.start - run.t0, 2), round(w.end - run.t0, 2), w.name, w.hits]
                    for w in run.windows],
        "reloads": run.reloads, "hostile": run.hostile, "baseline_fds": run.baseline_fds, "end_fds": run.end_fds,
        "samples": [s.__dict__ for s in run.samples], "per_second": run.load["per_second"],
        "load_started": run.load["started"] - run.t0, "by_kind": run.load["by_kind"],
        "events_not_200": run.load["events"][:5000], "gateway_exit": run.gateway_exit,
        "verdicts": [v.__dict__ for v in verdicts],
        "websocket": {**run.load.get("ws", {}), "gauge_after_load": run.ws_gauge, "shutdown_probe": run.ws_shutdown},
    }
    (results / f"{stamp}.json").write_text(json.dumps(data, indent=1) + "\n")
    print(f"\nwritten: bench/results/{stamp}.{{txt,json{',png' if why is None else ''}}}"
          + (f" ({why})" if why else ""), flush=True)
