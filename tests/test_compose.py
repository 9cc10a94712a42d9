"""docker-compose.yml and the images' files, checked offline (no Docker, no podman).

Compose cannot run where this repository is tested (no Docker engine, no registry), so
what can be known without it is pinned here: every file it mounts exists, Prometheus's
config passes promtool with the chart's rules where compose mounts them, the scrape
targets and Grafana's wiring agree with the ports the launcher is given, and the
launcher's arguments are ones it accepts.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path, PurePosixPath

import pytest
import yaml

from ensemble.server import argument_parser

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parent.parent
COMPOSE = REPO / "docker-compose.yml"
CHART_FILES = REPO / "deploy" / "helm" / "triton-detectors" / "files"
LAUNCHER = ["python3", "-m", "ensemble.server"]


@pytest.fixture(scope="module")
def services() -> dict:
    return yaml.safe_load(COMPOSE.read_text())["services"]


def bind_mounts(service: dict) -> dict[PurePosixPath, Path]:
    """``{path in the container: file or folder in the repository}`` of a service's
    bind mounts (``./x:/y[:ro]``); named volumes are left out."""
    mounts = {}
    for spec in service.get("volumes", []):
        source, target = spec.split(":")[:2]
        if source.startswith("./"):
            mounts[PurePosixPath(target)] = REPO / source
    return mounts


def launcher_args(services: dict):
    command = services["triton"]["command"]
    assert command[:3] == LAUNCHER, "the triton service starts the project's launcher"
    return argument_parser().parse_args(command[3:])


def test_every_mounted_path_exists(services):
    for name, service in services.items():
        for target, source in bind_mounts(service).items():
            assert source.exists(), f"{name} mounts {source} at {target}: missing"


def test_monitoring_loads_the_charts_own_rules_and_dashboard(services):
    assert CHART_FILES / "recording-rules.yaml" in bind_mounts(services["prometheus"]).values()
    assert CHART_FILES / "dashboard.json" in bind_mounts(services["grafana"]).values()


def test_no_service_makes_a_container_network(services):
    for name, service in services.items():
        assert service.get("network_mode") == "host", f"{name}: host networking only"
    assert "networks" not in yaml.safe_load(COMPOSE.read_text())


def test_triton_runs_the_launcher_for_the_ngc_target(services):
    args = launcher_args(services)
    assert args.target == "ngc"
    assert args.host == "0.0.0.0"
    build = services["triton"]["build"]
    assert (REPO / build["context"] / build["dockerfile"]).is_file()


def prometheus_config(services) -> tuple[dict, dict[PurePosixPath, Path]]:
    mounts = bind_mounts(services["prometheus"])
    flag = next(a for a in services["prometheus"]["command"] if a.startswith("--config.file="))
    config_path = PurePosixPath(flag.split("=", 1)[1])
    return yaml.safe_load(mounts[config_path].read_text()), mounts


def test_prometheus_scrapes_the_launchers_metrics_ports_as_a_pod(services):
    args = launcher_args(services)
    config, _ = prometheus_config(services)
    scraped = {}
    for job in config["scrape_configs"]:
        for group in job["static_configs"]:
            # the recording rules aggregate by (namespace, pod), as in Kubernetes
            assert {"namespace", "pod"} <= set(group.get("labels", {})), job["job_name"]
            for target in group["targets"]:
                scraped[int(target.rsplit(":", 1)[1])] = job["job_name"]
    assert set(scraped) == {args.metrics_port, args.supervisor_port}


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
def test_prometheus_config_and_its_rules_pass_promtool(services, tmp_path):
    """The files laid out as compose mounts them, so the config's rule_files resolve."""
    flag = next(a for a in services["prometheus"]["command"] if a.startswith("--config.file="))
    root = PurePosixPath(flag.split("=", 1)[1]).parent
    config = None
    for target, source in bind_mounts(services["prometheus"]).items():
        if root in target.parents:
            copy = tmp_path / target.relative_to(root)
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source, copy)
            if source.name == "prometheus.yml":
                config = copy
    assert config is not None
    done = subprocess.run(
        ["promtool", "check", "config", config.name],
        cwd=config.parent, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 1 rule files found" in done.stdout


def test_grafana_reads_this_prometheus_and_the_mounted_dashboard(services):
    mounts = bind_mounts(services["grafana"])
    provisioning = next(
        s for t, s in mounts.items() if t == PurePosixPath("/etc/grafana/provisioning")
    )
    (source,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yaml").read_text())[
        "datasources"
    ]
    listen = next(
        a.split("=", 1)[1]
        for a in services["prometheus"]["command"]
        if a.startswith("--web.listen-address=")
    )
    assert source["url"] == f"http://{listen}"
    (provider,) = yaml.safe_load(
        (provisioning / "dashboards" / "triton-detectors.yaml").read_text()
    )["providers"]
    dashboards = [t for t, s in mounts.items() if s == CHART_FILES / "dashboard.json"]
    assert [PurePosixPath(provider["options"]["path"])] == [t.parent for t in dashboards]


def pins(path: Path) -> dict[str, str]:
    found = {}
    for line in path.read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.-]+)(\[[^]]*\])?==([^\s#;]+)", line)
        if m:
            found[m.group(1).lower().replace("_", "-")] = m.group(3)
    return found


def test_ngc_image_pins_follow_requirements_txt():
    ngc = pins(REPO / "deploy" / "images" / "ngc-requirements.txt")
    project = pins(REPO / "requirements.txt")
    shared = set(ngc) & set(project)
    assert {"numpy", "tritonclient", "pillow"} <= shared
    assert {name: ngc[name] for name in shared} == {name: project[name] for name in shared}
