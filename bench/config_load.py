"""Config load time: ``gateway check``'s in-process work on a file, and a generated 200-route config.

Load happens at start and on reload only, so this is reported, not optimised. Run:
``.venv/bin/python bench/config_load.py [--routes 200] [--repeat 50]``; prints the median CPU
milliseconds (process time, steadier than wall time on a shared machine) of
:func:`gateway.loader.parse_config` for ``conf/gateway.yaml`` and for the generated config, and
of the YAML reading alone (:func:`gateway.yamldoc.read_document`), which is most of it.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from gateway.loader import parse_config
from gateway.yamldoc import Problems, read_document

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


def median_ms(text: str, source: str, repeat: int, yaml_only: bool = False) -> float:
    samples = []
    for _ in range(repeat):
        start = time.process_time()
        if yaml_only:
            read_document(text, source, Problems())
        else:
            parse_config(text, source=source, environ={})
        samples.append((time.process_time() - start) * 1000)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--routes", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=50)
    args = parser.parse_args()
    shipped = ROOT / "conf" / "gateway.yaml"
    for name, text, source in (("conf/gateway.yaml", shipped.read_text(), str(shipped)),
                               (f"{args.routes} routes", generated(args.routes), "<string>")):
        whole, yaml_only = (median_ms(text, source, args.repeat, yaml_only) for yaml_only in (False, True))
        print(f"{name}: {whole:.2f} ms CPU, of which reading the YAML {yaml_only:.2f} ms (medians of {args.repeat})")


if __name__ == "__main__":
    main()
