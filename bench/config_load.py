"""Config load time: ``gateway check``'s in-process work on a file, and a generated 200-route config.

Load happens at start and on reload only, so this is reported, not optimised. Run:
``.venv/bin/python bench/config_load.py [--routes 200] [--repeat 50]``; prints the median
milliseconds of :func:`gateway.loader.parse_config` for ``conf/gateway.yaml`` and for the
generated config.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from gateway.loader import parse_config

ROOT = Path(__file__).resolve().parents[1]


def generated(routes: int) -> str:
    """``routes`` routes over 10 upstreams, each route with methods, a rate limit and header rules."""
    lines = ["upstreams:"]
    for u in range(10):
        lines += [f"  u{u}:", f"    targets: [http://127.0.0.1:{9000 + u}, {{url: 'http://127.0.0.1:{9100 + u}/b',"
                  " weight: 2}]", "    retry: {attempts: 3, on_statuses: [502, 503]}",
                  "    health_check: {path: /health}"]
    lines.append("routes:")
    for r in range(routes):
        lines += [f"  - name: r{r}", f"    path: /api/r{r}", f"    upstream: u{r % 10}", "    methods: [GET, POST]",
                  "    strip_prefix: true", "    rate_limit: {requests: 100, window_seconds: 60, key: ip}",
                  "    request_headers: {set: {X-Api-Version: '2'}, remove: [Cookie]}", "    timeout: 5"]
    return "\n".join(lines) + "\n"


def median_ms(text: str, source: str, repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        parse_config(text, source=source, environ={})
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--routes", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=50)
    args = parser.parse_args()
    shipped = ROOT / "conf" / "gateway.yaml"
    print(f"conf/gateway.yaml: {median_ms(shipped.read_text(), str(shipped), args.repeat):.2f} ms (median of "
          f"{args.repeat})")
    print(f"{args.routes} routes: {median_ms(generated(args.routes), '<string>', args.repeat):.2f} ms (median of "
          f"{args.repeat})")


if __name__ == "__main__":
    main()
