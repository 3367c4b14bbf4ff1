"""gateway.server.freeze_heap: what a serving process sets up for the cyclic collector (run in a
process of its own: pytest's own collector settings stay as they are)."""

from __future__ import annotations

import json
import subprocess
import sys

PROBE = """
import gc, json
from gateway.server import YOUNG_GC_THRESHOLD, freeze_heap
before = gc.get_threshold()
freeze_heap()
frozen = gc.get_freeze_count()
survivors = []
for n in range(5000):  # the objects of requests in flight: alive, not garbage
    survivors.append({"request": n})
young_collections = [0]
gc.callbacks.append(lambda phase, info: phase == "start" and info["generation"] == 0
                    and young_collections.__setitem__(0, young_collections[0] + 1))
for n in range(5000):
    survivors.append([n])
print(json.dumps({"before": before, "after": gc.get_threshold(), "threshold": YOUNG_GC_THRESHOLD,
                  "frozen": frozen, "young_collections": young_collections[0]}))
"""


def test_a_serving_process_freezes_its_heap_and_collects_the_young_generation_rarely() -> None:
    out = json.loads(subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                                    check=True).stdout)
    assert out["before"][0] == 700  # CPython's default, for the comparison below
    assert out["after"] == [out["threshold"], out["before"][1], out["before"][2]]
    assert out["frozen"] > 10_000  # modules, classes: out of every collection's sight
    assert out["young_collections"] == 0  # 10,000 live objects: CPython's 700 would have walked them 14 times
