"""RSS of a one-process gateway across waves of concurrent client connections (127.0.0.1, bounded).

Each wave opens N connections at once, sends one request on each (HS256 JWT, the 108-byte
body of an nginx backend), reads the answers, closes them all and waits a second. A leak
grows RSS wave after wave; an allocator high-water mark grows it once, on the first wave
that reaches a new peak of connections. `make soak`'s RSS criterion reads the latter as
growth when its peak of connections comes in its last half (README, Soak and chaos).

    .venv/bin/python bench/conn_memory.py [--connections 600] [--waves 8]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jwt

sys.path.insert(0, str(Path(__file__).resolve().parent))
from procs import free_ports, wait_port  # noqa: E402
from targets import backend_nginx_conf, gateway_yaml, write_bodies  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
_LENGTH = re.compile(rb"Content-Length: (\d+)", re.I)


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def waves(port: int, pid: int, token: str, connections: int, count: int) -> None:
    head = f"GET /api/small HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {token}\r\n\r\n".encode()

    async def one() -> asyncio.StreamWriter:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(head)
        answer = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
        match = _LENGTH.search(answer)
        await reader.readexactly(int(match.group(1)) if match else 0)
        return writer

    print(f"gateway RSS at start: {rss_mib(pid):.1f} MiB", flush=True)
    for n in range(count):
        writers = await asyncio.gather(*(one() for _ in range(connections)))
        peak = rss_mib(pid)
        for writer in writers:
            writer.close()
        await asyncio.sleep(1.0)
        print(f"wave {n + 1}: {connections} open {peak:.1f} MiB, all closed {rss_mib(pid):.1f} MiB", flush=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--connections", type=int, default=600)
    p.add_argument("--waves", type=int, default=8)
    a = p.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 4 * a.connections + 256)), hard))
    work = Path(tempfile.mkdtemp(prefix="gateway-connmem-"))
    work.chmod(0o755)  # nginx workers read the bodies
    started: list[subprocess.Popen[bytes]] = []
    try:
        www = work / "www"
        www.mkdir()
        write_bodies(www)
        (work / "nginx").mkdir()
        backend, port, admin = free_ports(3)
        (work / "nginx" / "nginx.conf").write_text(backend_nginx_conf(work / "nginx", backend, www, 1))
        started.append(subprocess.Popen(["nginx", "-p", str(work / "nginx"), "-c", str(work / "nginx" / "nginx.conf"),
                                         "-e", str(work / "nginx" / "error.log")]))
        secret = secrets.token_urlsafe(32)
        token = jwt.encode({"sub": "bench", "exp": int(time.time()) + 3600}, secret, algorithm="HS256")
        (work / "gateway.yaml").write_text(gateway_yaml(port, admin, backend, secret, 1))
        gateway = subprocess.Popen([sys.executable, str(REPO_ROOT / "run.py"), "serve", "-c", str(work / "gateway.yaml")],
                                   cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=open(work / "gateway.log", "wb"))
        started.append(gateway)
        wait_port(backend, 10, started[0])
        wait_port(port, 20, gateway)
        asyncio.run(waves(port, gateway.pid, token, a.connections, a.waves))
        return 0
    finally:
        for proc in reversed(started):
            proc.send_signal(signal.SIGQUIT if proc.args[0] == "nginx" else signal.SIGTERM)
        for proc in started:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
