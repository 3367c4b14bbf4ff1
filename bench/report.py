"""Summaries of the wrk runs: medians, ratios, latency added over direct, and the one table."""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from loadgen import WrkResult

__all__ = ["Row", "format_table", "summarize"]

REFERENCES = ("direct", "nginx", "aiohttp")


@dataclass
class Row:
    """One line of the table: a target at one body size, medians over the rounds."""

    target: str
    label: str
    size: str
    runs: int
    rps: float | None
    rps_spread: float | None
    p50_ms: float | None
    p99_ms: float | None
    errors: int
    peak_rss_mib: float | None
    vs_direct: float | None
    vs_nginx: float | None
    vs_aiohttp: float | None
    vs_aiohttp_paired: float | None  # median over rounds of req/s ÷ aiohttp's in the same round
    cpu_us: float | None  # median CPU µs per request at the load connections (the process tree's)
    vs_aiohttp_cpu: float | None  # aiohttp's CPU per request ÷ this target's (>1: cheaper than aiohttp)
    c1_p50_ms: float | None
    c1_added_ms: float | None
    note: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _median(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def summarize(results: Sequence[WrkResult], labels: dict[str, str], notes: dict[str, str],
              rss_mib: dict[str, float], order: Sequence[str], sizes: Sequence[str],
              load_connections: int) -> list[Row]:
    """Fold the runs into rows, in `order` then `sizes`; ratios are of median req/s at the same size."""
    def pick(target: str, size: str, conns: int) -> list[WrkResult]:
        return [r for r in results if r.target == target and r.size == size and r.connections == conns]

    med_rps: dict[tuple[str, str], float | None] = {}
    c1_p50: dict[tuple[str, str], float | None] = {}
    for t in order:
        for s in sizes:
            med_rps[t, s] = _median(r.rps for r in pick(t, s, load_connections) if r.ok)
            c1_p50[t, s] = _median(r.p50_ms for r in pick(t, s, 1) if r.ok)

    def ratio(t: str, s: str, ref: str) -> float | None:
        mine, theirs = med_rps.get((t, s)), med_rps.get((ref, s))
        return mine / theirs if mine is not None and theirs else None

    def paired(t: str, s: str, ref: str) -> float | None:
        """Each round's ratio (the runs closest in time, so a slow spell of a shared machine hits
        both), then their median: steadier than the ratio of medians when rounds differ a lot."""
        theirs = {r.round: r.rps for r in pick(ref, s, load_connections) if r.ok and r.rps}
        return _median(r.rps / theirs[r.round] for r in pick(t, s, load_connections)
                       if r.ok and r.round in theirs)

    def cpu(t: str, s: str) -> float | None:
        return _median(r.cpu_us for r in pick(t, s, load_connections) if r.ok)

    rows = []
    for t in order:
        for s in sizes:
            load = [r for r in pick(t, s, load_connections) if r.ok]
            everything = pick(t, s, load_connections) + pick(t, s, 1)
            direct_c1 = c1_p50.get(("direct", s))
            mine_c1 = c1_p50[t, s]
            rps = med_rps[t, s]
            spread = (max(r.rps for r in load) - min(r.rps for r in load)) / rps if load and rps else None
            rows.append(Row(
                target=t, label=labels[t], size=s, runs=len(load), rps=rps, rps_spread=spread,
                p50_ms=_median(r.p50_ms for r in load), p99_ms=_median(r.p99_ms for r in load),
                errors=sum(r.errors for r in everything) + sum(1 for r in everything if not r.ok),
                peak_rss_mib=rss_mib.get(t),
                vs_direct=ratio(t, s, "direct"), vs_nginx=ratio(t, s, "nginx"),
                vs_aiohttp=ratio(t, s, "aiohttp"), vs_aiohttp_paired=paired(t, s, "aiohttp"),
                cpu_us=cpu(t, s), vs_aiohttp_cpu=_over(cpu("aiohttp", s), cpu(t, s)),
                c1_p50_ms=mine_c1,
                c1_added_ms=(mine_c1 - direct_c1) if mine_c1 is not None and direct_c1 is not None else None,
                note=notes.get(t, ""),
            ))
    return rows


def _over(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _fmt_pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.0f}%"


def format_table(rows: Sequence[Row], load_connections: int) -> str:
    """The one table, as aligned text."""
    head = ["target", "body", "req/s", "spread", "p50 ms", "p99 ms", "errors", "RSS MiB",
            "x direct", "x nginx", "x aiohttp", "paired", "CPU us", "x aiohttp CPU", "c1 p50 ms", "+ms c1", "note"]
    body = [[r.label, r.size, _fmt(r.rps, ",.0f"), _fmt_pct(r.rps_spread), _fmt(r.p50_ms, ".2f"), _fmt(r.p99_ms, ".2f"),
             str(r.errors), _fmt(r.peak_rss_mib, ".1f"), _fmt(r.vs_direct, ".2f"),
             _fmt(r.vs_nginx, ".2f"), _fmt(r.vs_aiohttp, ".2f"), _fmt(r.vs_aiohttp_paired, ".2f"),
             _fmt(r.cpu_us, ".0f"), _fmt(r.vs_aiohttp_cpu, ".2f"), _fmt(r.c1_p50_ms, ".3f"),
             "" if r.target == "direct" else _fmt(r.c1_added_ms, "+.3f"), r.note] for r in rows]
    widths = [max(len(line[i]) for line in [head, *body]) for i in range(len(head))]
    numeric = set(range(2, 16))

    def line(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if i in numeric else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True))).rstrip()

    rule = "-" * len(line(head))
    out = [line(head), rule, *(line(cells) for cells in body), rule,
            f"req/s, p50, p99: medians over the rounds at {load_connections} connections; spread: "
            "(max - min) / median req/s over the rounds; errors: non-2xx/3xx + socket errors, all runs.",
            "x direct / x nginx / x aiohttp: median req/s over that target's at the same body size; paired: the median "
            "of each round's req/s over aiohttp's in that round.",
            "CPU us: the process tree's CPU (user + system) per request at load, median over the rounds; x aiohttp CPU: "
            "aiohttp's over this target's (above 1: cheaper per request than aiohttp).",
            "c1 p50: median p50 at 1 connection; + ms c1: that minus the backend's own (latency added).",
            "RSS: peak VmHWM of the process tree (summed over processes)."]
    return "\n".join(out)
