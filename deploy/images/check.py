"""Run the cpu image and check that it answers the contract (``scripts/image.sh check``).

Starts the image with podman on free loopback ports (host networking: no container
network is created), the restricted APIs behind a fresh ``$TRITON_API_KEY``, then:

- waits for ``/v2/health/ready`` (every model loaded) and reports how long it took;
- runs the project's client (``python -m client``) on scikit-image's astronaut (made from
  the bundled photo: nothing in .cache/photos is needed) with ``detect_all`` and with
  each ``detect_<name>`` of ``models.toml``: it must exit 0, find objects, and write
  annotated JPEGs (``detect_all``: one per fused detector too);
- checks that each detector runs in its native backend (the image builds them);
- checks that the restricted APIs refuse a request without the key and take one with it;
- checks that every process in the container runs as a non-root user;
- stops the container with SIGTERM and reports the launcher's exit code and what it
  logged while stopping.

With ``--kube`` (``scripts/image.sh kube``) the same checks run on the chart's
Deployment (cpu values) started by ``podman kube play --network=host``.

Run with the project's venv: ``.venv/bin/python deploy/images/check.py [IMAGE]``.
Exit status 0 when every check passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from ensemble.contract import API_KEY_HEADER  # noqa: E402
from ensemble.processes import free_port  # noqa: E402
from ensemble.registry import load_models  # noqa: E402

HOST = "127.0.0.1"
READY_TIMEOUT_S = 600
STOP_TIMEOUT_S = 60  # the front drains for up to 20 s, then Triton's exit timeout is 10 s


def podman(
    *args: str, check: bool = True, timeout: float = 120, env: dict | None = None
) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["podman", *args], capture_output=True, text=True, check=check, timeout=timeout, env=env
    )


def http_status(url: str, method: str = "GET", headers: dict | None = None) -> int:
    request = urllib.request.Request(url, method=method, headers=headers or {}, data=None)
    if method == "POST":
        request.data = b"{}"
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return 0


def photo(folder: Path) -> Path:
    """``folder``/astronaut.jpg: scikit-image's astronaut (512 x 512 pixels, a person)
    as the benchmarks' JPEG (``bench.photos``), made from the bundled PNG. Nothing that
    setup or a benchmark leaves in .cache/photos is needed."""
    from bench.photos import PHOTO_NAMES, photo_files

    path = folder / "astronaut.jpg"
    path.write_bytes(photo_files("jpeg")[PHOTO_NAMES.index("astronaut")])
    return path


class Checks:
    def __init__(self) -> None:
        self.failed: list[str] = []

    def expect(self, ok: bool, what: str, detail: str = "") -> bool:
        print(f"  {'ok  ' if ok else 'FAIL'} {what}{f': {detail}' if detail else ''}", flush=True)
        if not ok:
            self.failed.append(what)
        return ok


def run_client(grpc_url: str, model: str, image: Path, out: Path) -> tuple[int, str, float]:
    start = time.monotonic()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "client",
            "--url",
            grpc_url,
            "--model",
            model,
            "--out",
            str(out),
            str(image),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    return done.returncode, (done.stdout + done.stderr).strip(), time.monotonic() - start


def check_answers(checks: Checks, grpc_url: str, image: Path, work: Path) -> None:
    detectors = list(load_models().detectors)
    fused = [d.name for d in detectors if d.fuse]
    for model in ["detect_all", *(d.ensemble for d in detectors)]:
        out = work / model
        code, text, seconds = run_client(grpc_url, model, image, out)
        last = text.splitlines()[-1] if text else ""
        if not checks.expect(code == 0, f"{model} answered", f"{seconds:.1f} s, {last}"):
            print(text)
            continue
        results = json.loads((out / "results.json").read_text())
        checks.expect(len(results) > 0, f"{model} found objects", f"{len(results)} detections")
        drawn = [out / f"{image.stem}.jpg"]
        if model == "detect_all":
            drawn += [out / f"{image.stem}.{name}.jpg" for name in fused]
        for path in drawn:
            ok = path.is_file() and path.read_bytes()[:3] == b"\xff\xd8\xff"
            checks.expect(ok, f"{model} drew {path.name}", "a JPEG" if ok else "missing")


def launcher_args(ports: dict[str, int]) -> list[str]:
    args = ["python", "-m", "ensemble.server", "--host", HOST, "--workdir", "/work"]
    return args + [f"--{p}-port={n}" for p, n in ports.items()]


def start_container(image: str, ports: dict[str, int], key: str) -> Running:
    """``podman run`` of the image with the launcher on loopback ports."""
    name = f"triton-detectors-check-{os.getpid()}"
    # -e NAME takes the value from podman's environment: the key is not on a command line.
    podman(
        "run", "-d", "--name", name, "--network=host", "--shm-size=1g",
        "-e", "TRITON_API_KEY", image, *launcher_args(ports),
        timeout=300, env={**os.environ, "TRITON_API_KEY": key},
    )  # fmt: skip
    return Running(name, stop=["stop", "-t", str(STOP_TIMEOUT_S), name], remove=["rm", "-f", name])


def kube_deployment(image: str, ports: dict[str, int], key: str) -> dict:
    """The chart's Deployment rendered with the cpu values (cluster.chart), this image,
    these ports and loopback, changed only where podman 4.3's kube play differs from a
    cluster: no Secret object (the key as a plain value); no container ports (with the
    host network it refuses them; the probes then name the HTTP port by number); no
    memory-backed emptyDir at /dev/shm (its emptyDir is root-owned, a cluster's is
    world-writable; podman's own /dev/shm stays)."""
    from cluster.chart import CPU_VALUES, render

    repository, tag = image.rsplit(":", 1)
    values = {
        "image": {"repository": repository, "tag": tag},
        "ports": ports,
        "server": {"extraArgs": ["--host", HOST]},  # the launcher takes the last --host
    }
    (deployment,) = [d for d in render([CPU_VALUES], values) if d["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    container["env"] = [
        {"name": e["name"], "value": key} if e["name"] == "TRITON_API_KEY" else e
        for e in container["env"]
    ]
    named = {p["name"]: p["containerPort"] for p in container.pop("ports")}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        get = container.get(probe, {}).get("httpGet")
        if get:
            get["port"] = named.get(get["port"], get["port"])
    shm = {v["name"] for v in pod["volumes"] if v.get("emptyDir", {}).get("medium") == "Memory"}
    pod["volumes"] = [v for v in pod["volumes"] if v["name"] not in shm]
    container["volumeMounts"] = [m for m in container["volumeMounts"] if m["name"] not in shm]
    return deployment


def start_kube_play(image: str, ports: dict[str, int], key: str, work: Path) -> Running:
    """``podman kube play --network=host`` of the chart's Deployment (one replica)."""
    deployment = kube_deployment(image, ports, key)
    manifest = work / "deployment.yaml"
    manifest.write_text(yaml.safe_dump(deployment, sort_keys=False))
    podman("kube", "play", "--network=host", str(manifest), timeout=300)
    pod = f"{deployment['metadata']['name']}-pod-0"
    return Running(
        f"{pod}-triton",
        stop=["pod", "stop", "-t", str(STOP_TIMEOUT_S), pod],
        remove=["kube", "down", str(manifest)],
    )


@dataclass
class Running:
    container: str
    stop: list[str]  # podman arguments that send SIGTERM and wait
    remove: list[str]


def wait_ready(checks: Checks, running: Running, http: str, started: float) -> bool:
    while time.monotonic() - started < READY_TIMEOUT_S:
        if http_status(f"{http}/v2/health/ready") == 200:
            return checks.expect(True, "ready", f"{time.monotonic() - started:.1f} s after start")
        state = podman("inspect", "-f", "{{.State.Status}}", running.container, check=False)
        if state.stdout.strip() not in ("created", "running"):
            break
        time.sleep(0.5)
    logs = podman("logs", running.container, check=False)
    return checks.expect(False, "ready", (logs.stdout + logs.stderr)[-3000:])


def check_running(checks: Checks, running: Running, ports: dict[str, int], key: str) -> None:
    with tempfile.TemporaryDirectory(prefix="image-check-") as work:
        check_answers(checks, f"{HOST}:{ports['grpc']}", photo(Path(work)), Path(work))

    # The image carries the native backends: each detector runs in its own.
    for d in load_models().detectors:
        url = f"http://{HOST}:{ports['http']}/v2/models/{d.name}/config"
        with urllib.request.urlopen(url, timeout=10) as r:
            platform = json.loads(r.read()).get("platform") or "a Python runner"
        checks.expect(
            platform == d.runtime_info.native_platform, f"{d.name} native", f"on {platform}"
        )

    index = f"http://{HOST}:{ports['http']}/v2/repository/index"
    without = http_status(index, "POST")
    with_key = http_status(index, "POST", {API_KEY_HEADER: key})
    checks.expect(
        without in (401, 403) and with_key == 200,
        "restricted API needs the key",
        f"{without} without, {with_key} with",
    )

    top = podman("top", running.container, "user", "huser", "pid", "comm").stdout.splitlines()
    inside = sorted({line.split()[0] for line in top[1:]})  # names in the image
    on_host = sorted({line.split()[1] for line in top[1:]})  # the same uids, host's names
    uid = podman("exec", running.container, "id", "-u").stdout.strip()
    checks.expect(
        "root" not in inside + on_host and uid == "1000",
        "non-root",
        f"{len(top) - 1} processes as {inside} (on the host: {on_host}), exec id -u = {uid}",
    )


def stop(checks: Checks, running: Running) -> None:
    started = time.monotonic()
    podman(*running.stop, check=False, timeout=STOP_TIMEOUT_S + 30)
    took = time.monotonic() - started
    code = podman("inspect", "-f", "{{.State.ExitCode}}", running.container, check=False)
    logs = podman("logs", running.container, check=False)
    said = [line for line in (logs.stdout + logs.stderr).splitlines() if "stop" in line.lower()]
    # The launcher exits 0 once stopped; Triton's own code says whether it finished
    # unloading within its exit timeout.
    triton = re.findall(r"Triton stopped \(exit code (-?\d+|None)\)", logs.stdout + logs.stderr)
    checks.expect(
        code.stdout.strip() == "0" and triton[-1:] == ["0"],
        "SIGTERM: clean exit",
        f"exit {code.stdout.strip()} after {took:.1f} s; {' | '.join(said[-2:])}",
    )
    podman(*running.remove, check=False)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("image", nargs="?", default="localhost/triton-detectors:cpu")
    ap.add_argument(
        "--kube", action="store_true",
        help="podman kube play the chart's Deployment (cpu values) instead of podman run",
    )  # fmt: skip
    args = ap.parse_args(argv)
    if shutil.which("podman") is None:
        sys.exit("podman is not installed: scripts/image.sh cpu installs it")
    if podman("image", "exists", args.image, check=False).returncode != 0:
        sys.exit(f"no image {args.image}: build it with make image TARGET=cpu")

    size = int(podman("image", "inspect", "-f", "{{.Size}}", args.image).stdout)
    ports = {name: free_port(HOST) for name in ("http", "grpc", "metrics", "supervisor")}
    key = secrets.token_urlsafe(24)
    how = "podman kube play of the chart's Deployment" if args.kube else "podman run"
    print(f"{args.image} ({size / 2**30:.2f} GiB), {how}, on {HOST} {ports}", flush=True)
    checks = Checks()
    with tempfile.TemporaryDirectory(prefix="image-check-") as work:
        started = time.monotonic()
        if args.kube:
            running = start_kube_play(args.image, ports, key, Path(work))
        else:
            running = start_container(args.image, ports, key)
        try:
            if wait_ready(checks, running, f"http://{HOST}:{ports['http']}", started):
                check_running(checks, running, ports, key)
        finally:
            stop(checks, running)
    if checks.failed:
        print(f"FAILED: {', '.join(checks.failed)}")
        return 1
    print("the image answers the contract")
    return 0


if __name__ == "__main__":
    sys.exit(main())
