"""What ``make image`` needs from the machine it runs on, checked without podman.

- The image check (deploy/images/check.py) makes the photo it sends from the photos
  scikit-image bundles: a fresh checkout after ``make setup`` has no .cache/photos (the
  benchmarks' size sweep fills it), and the check once stopped there.
- The debootstrapped base image's apt sources (``scripts/image.sh sources``) are this
  machine's own mirrors, security suite included; no registry host is written in the
  script or the cpu image's Dockerfile.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parent.parent
IMAGE_SH = REPO / "scripts" / "image.sh"
# A host name under a top-level domain, or a URL: what a registry or mirror is named by.
HOST_NAME = re.compile(r"[a-z0-9-]+(\.[a-z0-9-]+)*\.(io|org|com|net|dev)\b|://", re.IGNORECASE)


def test_check_makes_its_photo_in_a_fresh_checkout(tmp_path: Path) -> None:
    """check.py copied into a checkout that has no .cache at all (the code it imports
    linked in) writes scikit-image's astronaut as a JPEG into the folder it is given,
    and writes nothing under .cache."""
    import skimage.data

    from ensemble.imaging import decode_image

    checkout = tmp_path / "checkout"
    (checkout / "deploy" / "images").mkdir(parents=True)
    (checkout / "deploy" / "images" / "check.py").write_bytes(
        (REPO / "deploy" / "images" / "check.py").read_bytes()
    )
    for name in ("ensemble", "bench", "client", "models.toml", "pyproject.toml"):
        (checkout / name).symlink_to(REPO / name)
    out = tmp_path / "work"
    out.mkdir()
    made = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, pathlib, check; print(check.photo(pathlib.Path(sys.argv[1])))",
            str(out),
        ],
        cwd=checkout / "deploy" / "images",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert made.returncode == 0, made.stderr
    path = Path(made.stdout.strip().splitlines()[-1])
    assert path.parent == out and path.suffix == ".jpg"
    data = path.read_bytes()
    assert data[:3] == b"\xff\xd8\xff"
    pixels = decode_image(data)  # RGB, as skimage.data gives it
    astronaut = skimage.data.astronaut()
    assert pixels.shape == astronaut.shape == (512, 512, 3)
    # JPEG at quality 90: a few grey levels on average, not another photo.
    assert np.abs(pixels.astype(int) - astronaut).mean() < 4
    assert not (checkout / ".cache").exists()


def apt_config(tmp_path: Path, sources: str, release_files: dict[str, str] | None = None) -> dict:
    """An environment whose apt reads only ``sources`` (deb822) and the lists folder
    holding ``release_files`` (``{file name: Release text}``, each with an empty
    Packages index beside it, as apt-get update leaves them), for amd64."""
    parts = tmp_path / "sources.list.d"
    lists = tmp_path / "lists"
    parts.mkdir()
    lists.mkdir()
    (parts / "debian.sources").write_text(sources)
    for name, text in (release_files or {}).items():
        (lists / f"{name}_InRelease").write_text(text)
        (lists / f"{name}_main_binary-amd64_Packages").write_text("")
    conf = tmp_path / "apt.conf"
    conf.write_text(
        f'Dir::Etc::sourcelist "{tmp_path / "none.list"}";\n'
        f'Dir::Etc::sourceparts "{parts}";\n'
        f'Dir::State::lists "{lists}";\n'
        'APT::Architecture "amd64";\nAPT::Architectures { "amd64"; };\n'
    )
    return {"PATH": "/usr/bin:/bin", "APT_CONFIG": str(conf)}


def image_sources(env: dict) -> tuple[list[dict[str, str]], str]:
    """``scripts/image.sh sources`` under ``env``: its deb822 stanzas and its stderr."""
    done = subprocess.run(
        [str(IMAGE_SH), "sources"], env=env, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    stanzas = [
        dict(line.split(": ", 1) for line in block.splitlines())
        for block in done.stdout.strip().split("\n\n")
        if block.strip()
    ]
    return stanzas, done.stderr


@pytest.fixture
def apt_get() -> None:
    if subprocess.run(["sh", "-c", "command -v apt-get"], capture_output=True).returncode:
        pytest.skip("no apt-get: scripts/image.sh reads the host's apt configuration")


@pytest.mark.usefixtures("apt_get")
def test_image_sources_are_the_hosts_mirrors(tmp_path: Path) -> None:
    """Each suite from the mirror this machine's apt takes it from (security from its
    own), read from the sources as written: no apt-get update has run."""
    env = apt_config(
        tmp_path,
        "Types: deb\nURIs: http://mirror.invalid/debian\nSuites: bookworm bookworm-updates\n"
        "Components: main\n\n"
        "Types: deb\nURIs: http://security.invalid/debian-security/\n"
        "Suites: bookworm-security\nComponents: main\n",
    )
    stanzas, _ = image_sources(env)
    assert [(s["Suites"], s["URIs"]) for s in stanzas] == [
        ("bookworm", "http://mirror.invalid/debian"),
        ("bookworm-updates", "http://mirror.invalid/debian"),
        ("bookworm-security", "http://security.invalid/debian-security"),
    ]
    assert {s["Signed-By"] for s in stanzas} == {"/usr/share/keyrings/debian-archive-keyring.gpg"}


@pytest.mark.usefixtures("apt_get")
def test_image_sources_follow_a_suite_named_by_its_alias(tmp_path: Path) -> None:
    """A host whose security source says oldstable-security (its Release file's codename
    is bookworm-security) gives that mirror; a suite the host lacks is left out, and
    said so."""
    env = apt_config(
        tmp_path,
        "Types: deb\nURIs: http://mirror.invalid/debian\nSuites: bookworm\nComponents: main\n\n"
        "Types: deb\nURIs: http://security.invalid/debian-security\n"
        "Suites: oldstable-security\nComponents: main\n",
        {
            "security.invalid_debian-security_dists_oldstable-security": (
                "Suite: oldstable-security\nCodename: bookworm-security\n"
                "Components: main\nArchitectures: amd64\n"
            )
        },
    )
    stanzas, said = image_sources(env)
    assert [(s["Suites"], s["URIs"]) for s in stanzas] == [
        ("bookworm", "http://mirror.invalid/debian"),
        ("bookworm-security", "http://security.invalid/debian-security"),
    ]
    assert "no bookworm-updates" in said


@pytest.mark.parametrize("path", ["scripts/image.sh", "deploy/images/cpu.Dockerfile"])
def test_names_no_registry_host(path: str) -> None:
    """The cpu image's registries and mirrors are the host's (its apt sources, its
    podman's short-name resolution), so neither file names one."""
    text = (REPO / path).read_text()
    assert [m.group(0) for m in HOST_NAME.finditer(text)] == []
