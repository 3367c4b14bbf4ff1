"""Packaging: `gateway --version`, the package data, the Dockerfile (built when docker is usable),
the systemd unit and the Kubernetes manifests (their relations to the config they carry), LICENSE."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import uuid
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway import __version__
from gateway.dashboard import ASSETS
from gateway.loader import parse_config

ROOT = Path(__file__).resolve().parents[2]
GATEWAY = str(Path(sys.executable).parent / "gateway")


@pytest.mark.parametrize("command", [[GATEWAY, "--version"], [sys.executable, "run.py", "--version"]])
def test_version(command: list[str]) -> None:
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert (done.returncode, done.stdout, done.stderr) == (0, f"gateway {__version__}\n", "")
    assert re.fullmatch(r"\d+\.\d+\.\d+", __version__)


def test_the_dashboard_files_are_package_data() -> None:
    """What `pip install .` (the Docker image) ships: setup.cfg's package_data covers every served file."""
    from setuptools.config.setupcfg import read_configuration

    patterns = read_configuration(str(ROOT / "setup.cfg"))["options"]["package_data"]["gateway.dashboard"]
    files = sorted(p.name for p in (ROOT / "gateway" / "dashboard").iterdir() if p.suffix != ".py" and p.is_file())
    assert files == ["app.js", "index.html", "style.css"]
    assert all(any(fnmatch(name, pattern) for pattern in patterns) for name in files)
    assert len(ASSETS) == 3 and all(body for _, body in ASSETS.values())


def test_license_is_the_mit_license_setup_cfg_names() -> None:
    assert "license = MIT" in (ROOT / "setup.cfg").read_text()
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License\n") and "THE SOFTWARE IS PROVIDED \"AS IS\"" in text


def test_changelog_names_the_current_version() -> None:
    assert f"## [{__version__}]" in (ROOT / "CHANGELOG.md").read_text()


# --- Dockerfile ---

def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in lines]


def test_dockerfile_shape() -> None:
    steps = dockerfile()
    froms = [args for op, args in steps if op == "FROM"]
    assert len(froms) == 1 and re.fullmatch(r"python:3\.\d+-slim", froms[0])
    [user] = [args for op, args in steps if op == "USER"]
    assert user.split(":")[0] not in ("root", "0")
    assert [op for op, _ in steps].index("USER") > max(i for i, (op, _) in enumerate(steps) if op == "RUN")
    [health] = [args for op, args in steps if op == "HEALTHCHECK"]
    assert "/-/health" in health and "--timeout=" in health
    assert dict(steps)["CMD"] == '["serve", "-c", "/etc/gateway/gateway.yaml"]'
    assert dict(steps)["ENTRYPOINT"] == '["gateway"]'
    assert any(op == "COPY" and args.endswith("/etc/gateway/gateway.yaml") for op, args in steps)


def docker_usable() -> str | None:
    """None when `docker build` can run here, else why not."""
    if shutil.which("docker") is None:
        return "no docker client on PATH"
    info = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True,
                          timeout=30)
    if info.returncode != 0:
        return "docker daemon not reachable: " + (info.stderr.strip().splitlines() or ["?"])[-1]
    return None


@pytest.mark.timeout(900)
def test_docker_image_builds_and_runs_as_configured() -> None:
    reason = docker_usable()
    if reason is not None:
        pytest.skip(f"docker build not tested: {reason}")
    tag = f"gateway-test:{uuid.uuid4().hex[:12]}"
    try:
        build = subprocess.run(["docker", "build", "-q", "-t", tag, str(ROOT)], capture_output=True, text=True,
                               timeout=900)
        assert build.returncode == 0, build.stderr[-3000:]
        version = subprocess.run(["docker", "run", "--rm", tag, "--version"], capture_output=True, text=True,
                                 timeout=120)
        assert version.stdout == f"gateway {__version__}\n"
        check = subprocess.run(["docker", "run", "--rm", tag, "check", "-c", "/etc/gateway/gateway.yaml"],
                               capture_output=True, text=True, timeout=120)
        assert (check.returncode, check.stdout) == (0, "ok\n"), check.stderr
        inspect = subprocess.run(["docker", "image", "inspect", "--format",
                                  "{{.Config.User}} {{json .Config.Healthcheck.Test}}", tag],
                                 capture_output=True, text=True, timeout=60)
        user, health = inspect.stdout.split(" ", 1)
        assert user == "10001:10001" and "/-/health" in health
        assets = subprocess.run(["docker", "run", "--rm", "--entrypoint", "python", tag, "-c",
                                 "from gateway.dashboard import ASSETS; print(sorted(ASSETS))"],
                                capture_output=True, text=True, timeout=120)
        assert assets.stdout == f"{sorted(ASSETS)}\n"
    finally:
        subprocess.run(["docker", "image", "rm", "-f", tag], capture_output=True, timeout=120)


# --- deploy/ ---

def kubernetes() -> dict[str, Any]:
    docs = list(yaml.safe_load_all((ROOT / "deploy" / "kubernetes" / "gateway.yaml").read_text()))
    return {doc["kind"]: doc for doc in docs}


def test_kubernetes_manifests_hold_together() -> None:
    docs = kubernetes()
    assert sorted(docs) == ["ConfigMap", "Deployment", "Service"]
    config_text = docs["ConfigMap"]["data"]["gateway.yaml"]
    config = parse_config(config_text, environ={"GATEWAY_JWT_SECRET": "j" * 64, "GATEWAY_ADMIN_TOKEN": "a" * 64})
    assert config.admin.token == "a" * 64

    pod = docs["Deployment"]["spec"]["template"]
    [container] = pod["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": config.server.port, "admin": config.admin.port}
    assert container["readinessProbe"]["httpGet"] == {"path": "/-/ready", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/-/health", "port": "http"}
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    # the kubelet SIGKILLs at the grace period: it must cover the preStop pause and the whole drain
    assert pod["spec"]["terminationGracePeriodSeconds"] > int(pre_stop[1]) + config.server.drain_seconds
    assert container["args"] == ["serve", "-c", "/etc/gateway/gateway.yaml"]
    [mount] = [m for m in container["volumeMounts"] if m["name"] == "config"]
    assert mount["mountPath"] == "/etc/gateway"
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    env = {e["name"] for e in container["env"]}
    assert set(re.findall(r"\$\{(\w+)", config_text)) <= env  # every reference the config makes is set

    service = docs["Service"]["spec"]
    assert service["selector"] == pod["metadata"]["labels"] == docs["Deployment"]["spec"]["selector"]["matchLabels"]
    assert [p["targetPort"] for p in service["ports"]] == ["http"]  # the admin port is not published


def test_systemd_unit_outlasts_the_drain_and_reloads_with_sighup() -> None:
    text = (ROOT / "deploy" / "systemd" / "gateway.service").read_text()
    keys: dict[str, str] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith("#"):
            name, value = line.split("=", 1)
            keys.setdefault(name, value)
    drain = parse_config((ROOT / "conf" / "gateway.yaml").read_text(), environ={}).server.drain_seconds
    assert int(keys["TimeoutStopSec"]) > drain
    assert keys["KillSignal"] == "SIGTERM" and keys["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert keys["ExecStart"].endswith("gateway serve -c /etc/gateway/gateway.yaml")
    assert keys["RestartPreventExitStatus"] == "2"  # a config error: restarting will not fix it
    assert keys["User"] != "root"
