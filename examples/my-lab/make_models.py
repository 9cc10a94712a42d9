"""Stand-ins for a lab's own model files, for the README's worked example.

A real lab already has its exports. This script makes files of the same kinds, so the
example runs anywhere this repository is set up, without a model hub:

- ``models/shapes.onnx`` and ``models/shapes.torchscript``: an *untrained* Ultralytics
  YOLO11n with 3 classes (``labels/shapes.txt``), exported at 320 px the way a lab
  exports its trained one (``yolo export format=onnx dynamic=True`` /
  ``format=torchscript``). Untrained, it finds nothing real: its scores are all below
  0.005, so the example asks with a score threshold of 0.001 to see the wiring work.
- ``models/street.onnx``, ``models/people.pt`` and ``models/cars.savedmodel``: links to
  the three bundled COCO detectors built by ``make models``, standing in for a lab's
  ONNX, TorchScript and SavedModel files.

    .venv/bin/python examples/my-lab/make_models.py     # then serve examples/my-lab/models.toml
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODELS = HERE / "models"
REPO = HERE.parent.parent
SHAPE_LABELS = ("circle", "square", "triangle")
IMAGE_SIZE = 320


def import_ultralytics():
    """``ultralytics``, imported offline and without torchvision.

    Ultralytics reads torchvision's version at import time (and only needs torchvision
    to *run* models, which nobody does here), but PyPI's torchvision does not load
    beside the CPU torch this project pins. So that one lookup is answered with the
    release that goes with torch 2.13; exporting and its NMS never import torchvision.
    No settings file, update check or pip install may reach the network.
    """
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_AUTOINSTALL", "0")
    os.environ.setdefault("YOLO_CONFIG_DIR", str(Path(tempfile.gettempdir()) / "ultralytics"))
    try:
        importlib.metadata.version("torchvision")
    except importlib.metadata.PackageNotFoundError:
        real_version = importlib.metadata.version
        importlib.metadata.version = lambda name: (  # type: ignore[assignment]
            "0.28.0" if name == "torchvision" else real_version(name)
        )
    import ultralytics
    from ultralytics.utils import LOGGER, SETTINGS

    SETTINGS.update({"sync": False})
    LOGGER.setLevel(logging.WARNING)  # its export banners; errors still show
    return ultralytics


def export_untrained_yolo(out: Path, labels=SHAPE_LABELS, image_size=IMAGE_SIZE) -> dict:
    """Export an untrained YOLO11n with ``len(labels)`` classes to ``out/shapes.onnx``
    (dynamic batch and size) and ``out/shapes.torchscript``; returns the paths."""
    import torch

    import_ultralytics()
    from ultralytics import YOLO
    from ultralytics.utils import YAML
    from ultralytics.utils.checks import check_yaml

    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as work, _cwd(work):
        config = YAML.load(check_yaml("yolo11.yaml"))
        config["nc"] = len(labels)
        # The "n" in the file name picks the model's scale (yolo11n).
        YAML.save(Path(work) / "yolo11n-shapes.yaml", config)
        torch.manual_seed(0)
        model = YOLO(str(Path(work) / "yolo11n-shapes.yaml"), task="detect")
        model.model.names = dict(enumerate(labels))
        onnx = model.export(format="onnx", imgsz=image_size, dynamic=True, simplify=True)
        script = model.export(format="torchscript", imgsz=image_size)
        paths = {"onnx": out / "shapes.onnx", "torchscript": out / "shapes.torchscript"}
        shutil.move(Path(work) / onnx, paths["onnx"])
        shutil.move(Path(work) / script, paths["torchscript"])
    return paths


@contextlib.contextmanager
def _cwd(folder: str):
    before = os.getcwd()
    os.chdir(folder)  # Ultralytics exports into the working directory
    try:
        yield
    finally:
        os.chdir(before)


def link_bundled(out: Path) -> dict:
    """Links to the bundled detectors' built artifacts, named as a lab's files."""
    sys.path.insert(0, str(REPO))
    from ensemble.recipes import artifact_path

    links = {
        "street.onnx": artifact_path("centernet_mobilenetv3"),
        "people.pt": artifact_path("nanodet_m"),
        "cars.savedmodel": artifact_path("ssd_mobilenet_v2"),
    }
    for name, target in links.items():
        if not target.exists():
            raise SystemExit(f"{target} is missing: build the bundled models with `make models`")
        link = out / name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(target, target_is_directory=target.is_dir())
    return {name: out / name for name in links}


def main() -> int:
    made = {**export_untrained_yolo(MODELS), **link_bundled(MODELS)}
    for path in made.values():
        print(f"made {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
