"""The detector registry: what a models file says the server serves.

A detector's identity (its ``name``, ``title`` and ``labels``) is separate from how it
runs (its ``runtime`` and ``artifact``) and from its pre/post-processing (its
``family``). Everything downstream (the Triton repository, the ensembles, the fused
ensemble, the labels served with each) is derived from the :class:`Registry` that
:func:`load_models` reads from a TOML file such as the committed ``models.toml``::

    [[detector]]
    name = "parts"                  # -> ensemble detect_parts, outputs PARTS_* in detect_all
    title = "Parts detector v3"
    runtime = "onnx"                # torchscript | savedmodel | onnx | python
    artifact = "models/parts.onnx"  # relative to this file, or absolute
    family = "yolo"                 # nanodet | ssd | centernet | yolo | "pkg.module:Class"
    labels = "parts.txt"            # one label per line; default COCO-80
    input_size = 640                # the family's options, each with a default
    fuse = true                     # part of detect_all (default true)
    instances = 2                   # detector instances (default: the target's)
    native = false                  # keep it on the Python runner (default: its native backend)

A file that cannot be served is refused by :func:`load_models` with a
:class:`ModelsFileError` whose one-line message names the file, the entry and the key.
"""

from __future__ import annotations

import ast
import json
import re
import tomllib
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ensemble import contract, recipes
from ensemble.artifacts import (
    ArtifactError,
    ArtifactTensor,
    Binding,
    Signature,
    bind,
    config_dims,
    onnx_signature,
    read_signature,
)
from ensemble.families import Family, FamilyError, NetworkTensor, make_options, resolve

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODELS_FILE = REPO_ROOT / "models.toml"


@dataclass(frozen=True)
class Runtime:
    """How an artifact runs: in its native Triton backend, or in a Python-backend runner
    (``ensemble.runners``) where that backend is missing or cannot take the artifact."""

    title: str  # what people call it
    link_name: str  # the artifact's name in the model's version folder
    is_dir: bool  # a folder (SavedModel) rather than a file
    native_platform: str | None  # the Triton platform of its native backend, if any
    backend: str | None  # that backend's name (its folder under --backend-directory)


RUNTIMES: dict[str, Runtime] = {
    "torchscript": Runtime(
        "PyTorch (TorchScript)", "model.pt", False, "pytorch_libtorch", "pytorch"
    ),
    "savedmodel": Runtime(
        "TensorFlow (SavedModel)", "model.savedmodel", True, "tensorflow_savedmodel", "tensorflow"
    ),
    "onnx": Runtime("ONNX Runtime", "model.onnx", False, "onnxruntime_onnx", "onnxruntime"),
    # A user's own model code: a .py file whose class ``Model`` is built with
    # ``Model(artifact_dir, device, threads)`` and called with a batch.
    "python": Runtime("Python", "user_model.py", False, None, None),
}

# Keys every entry may have; any other key is an option of its family.
ENTRY_KEYS = (
    "name", "title", "runtime", "artifact", "recipe", "family", "labels", "fuse",
    "instances", "preferred_batch_sizes", "max_queue_delay_us", "native",
)  # fmt: skip


# Names the server's own models take (detect_all, the steps of every detector).
RESERVED_NAMES = ("all", "image_decode", "fuse_detections")
RESERVED_PREFIXES = ("detect_", "preprocess_", "postprocess_")


class ModelsFileError(ValueError):
    """A models file that cannot be served; ``str()`` is one line naming the file, the
    entry and the key."""


DEFAULT_QUEUE_DELAY_US = 0


@dataclass(frozen=True)
class Detector:
    """One detector the server serves."""

    name: str
    title: str
    runtime: str  # a key of RUNTIMES
    family_ref: str  # as the models file names it: "yolo" or "pkg.module:Class"
    family: Family = field(compare=False, repr=False)  # built with its options and labels
    options: Mapping[str, Any] = field(default_factory=dict)  # as written in the file
    labels: tuple[str, ...] = contract.COCO80_LABELS
    artifact: Path | None = None  # the user's file or folder, absolute
    recipe: str | None = None  # or a bundled build recipe (ensemble.recipes.RECIPES)
    fuse: bool = True
    instances: int | None = None  # None: the deployment target decides
    # Empty: the deployment target decides (configgen.DEFAULT_BATCH_SIZES, or a native
    # backend's own on the CPU).
    preferred_batch_sizes: tuple[int, ...] = ()
    # No wait for a batch to fill: a lone request runs at once (a 2 ms delay was 2 ms on
    # every request at concurrency 1), and under load requests queue up behind the busy
    # instances anyway, so batches still form.
    max_queue_delay_us: int = DEFAULT_QUEUE_DELAY_US
    search_path: tuple[str, ...] = ()  # folders a user's family or model imports from
    # The models file may keep a detector off its native backend (``native = false``).
    native: bool = True
    # The artifact's own tensors for the family's (see ensemble.artifacts.bind); None
    # where it cannot run natively, and ``native_refusal`` says why.
    binding: Binding | None = field(default=None, compare=False, repr=False)
    native_refusal: str | None = None

    @property
    def ensemble(self) -> str:
        return contract.ensemble_name(self.name)

    @property
    def runtime_info(self) -> Runtime:
        return RUNTIMES[self.runtime]

    def artifact_path(self) -> Path:
        """The file or folder to serve: the user's, or the recipe's build output."""
        if self.artifact is not None:
            return self.artifact
        assert self.recipe is not None
        return recipes.artifact_path(self.recipe)

    @property
    def inputs(self) -> tuple[NetworkTensor, ...]:
        return self.family.inputs

    @property
    def outputs(self) -> tuple[NetworkTensor, ...]:
        return self.family.outputs

    @property
    def model_inputs(self) -> tuple[NetworkTensor, ...]:
        """The detector's Triton model's inputs: the family's, under the artifact's names
        and with the dims it fixes where it runs natively."""
        if self.binding is None:
            return self.inputs
        got = self.binding.input
        return (NetworkTensor(got.name, self.inputs[0].dtype, config_dims(self.inputs[0], got)),)

    @property
    def model_outputs(self) -> tuple[NetworkTensor, ...]:
        """The detector's Triton model's outputs, in the family's order (see
        :attr:`model_inputs`)."""
        if self.binding is None:
            return self.outputs
        return tuple(
            NetworkTensor(self.binding.output(t.name).name, t.dtype,
                       config_dims(t, self.binding.output(t.name)))
            for t in self.outputs
        )  # fmt: skip

    def describe(self) -> dict:
        """What a client learns about this detector (``contract.DETECTORS_PARAMETER``)."""
        return {
            "name": self.name,
            "title": self.title,
            "runtime": self.runtime,
            "runtime_title": self.runtime_info.title,
            "labels": list(self.labels),
        }


@dataclass(frozen=True)
class Registry:
    detectors: tuple[Detector, ...]
    source: Path | None = None  # the models file it was read from

    @property
    def fused(self) -> tuple[Detector, ...]:
        return tuple(d for d in self.detectors if d.fuse)

    @property
    def ensembles(self) -> tuple[str, ...]:
        """Every ensemble served: one per detector, then ``detect_all`` if any is fused."""
        names = tuple(d.ensemble for d in self.detectors)
        return names + ((contract.DETECT_ALL,) if self.fused else ())

    def __getitem__(self, name: str) -> Detector:
        for d in self.detectors:
            if d.name == name:
                return d
        raise KeyError(name)

    def fused_labels(self) -> tuple[str, ...]:
        """The union of the fused detectors' labels: the first one's in its order, then
        each label another one adds, in that one's order."""
        return union_labels([d.labels for d in self.fused])


def union_labels(label_sets: Sequence[Sequence[str]]) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for labels in label_sets:
        for label in labels:
            seen.setdefault(label, None)
    return tuple(seen)


# --- reading a models file -------------------------------------------------------------


def load_models(path: Path | str | None = None) -> Registry:
    """Read and check a models file (default: the committed ``models.toml``).

    Raises :class:`ModelsFileError` for the first problem found: a TOML syntax error,
    a missing or unknown key, an unknown runtime or family, duplicate names, a missing
    artifact or labels file, a label count that disagrees with the model, or a family
    class that cannot be imported.
    """
    path = Path(path or DEFAULT_MODELS_FILE).resolve()
    where = _shown(path)
    try:
        document = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ModelsFileError(f"{where}: no such models file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ModelsFileError(f"{where}: cannot read it: {e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ModelsFileError(f"{where}: not valid TOML: {e}") from None
    unknown = sorted(set(document) - {"detector"})
    if unknown:
        raise ModelsFileError(
            f"{where}: unknown top-level key {unknown[0]!r}: write each model as a "
            "[[detector]] table"
        )
    entries = document.get("detector", [])
    if not isinstance(entries, list) or not entries:
        raise ModelsFileError(f"{where}: no [[detector]] table: list at least one detector")
    detectors: list[Detector] = []
    for index, entry in enumerate(entries, start=1):
        detector = _EntryReader(path, index, entry).read()
        for other in detectors:
            if other.name == detector.name:
                raise ModelsFileError(
                    f"{where}: detector {detector.name!r} (entry {index}): key 'name': "
                    f"duplicate name, entry {detectors.index(other) + 1} is called that too"
                )
        detectors.append(detector)
    return Registry(tuple(detectors), path)


def _shown(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


class _EntryReader:
    """Reads one ``[[detector]]`` table; every error names the file, entry and key."""

    def __init__(self, path: Path, index: int, entry: Any) -> None:
        self.path, self.index = path, index
        self.folder = path.parent
        self.entry = entry if isinstance(entry, dict) else {}
        name = self.entry.get("name")
        self.label = f"detector {name!r} (entry {index})" if name else f"entry {index}"

    def fail(self, key: str | None, message: str) -> ModelsFileError:
        at = f": key {key!r}" if key else ""
        return ModelsFileError(f"{_shown(self.path)}: {self.label}{at}: {message}")

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = None) -> Any:
        if key not in self.entry:
            return default
        value = self.entry[key]
        if isinstance(value, bool) and kind in (int, float):
            raise self.fail(key, f"must be a number, got {value!r}")
        if not isinstance(value, kind):
            names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
            raise self.fail(key, f"must be a {_TOML_NAMES.get(names, names)}, got {value!r}")
        return value

    def read(self) -> Detector:
        if not self.entry:
            raise self.fail(None, "each [[detector]] must be a table with at least a name")
        name = self.get("name", str)
        if name is None:
            raise self.fail("name", "missing: every detector needs a name")
        if not re.fullmatch(contract.DETECTOR_NAME_PATTERN, name):
            raise self.fail(
                "name",
                f"{name!r} is not a valid name: use lower-case letters, digits and _, "
                "starting with a letter",
            )
        if name in RESERVED_NAMES or name.startswith(RESERVED_PREFIXES):
            raise self.fail(
                "name",
                f"{name!r} would clash with the server's own models: not one of "
                f"{', '.join(RESERVED_NAMES)} nor starting with {', '.join(RESERVED_PREFIXES)}",
            )
        runtime = self.get("runtime", str)
        if runtime is None:
            raise self.fail("runtime", f"missing: choose one of {', '.join(RUNTIMES)}")
        if runtime not in RUNTIMES:
            raise self.fail(
                "runtime", f"unknown runtime {runtime!r}: choose one of {', '.join(RUNTIMES)}"
            )
        artifact, recipe = self._artifact(runtime)
        labels = self._labels()
        family_ref = self.get("family", str)
        if family_ref is None:
            raise self.fail("family", "missing: name its pre/post-processing family")
        # Where a user's family or model code is imported from; none for built-ins, so
        # that a generated repository does not depend on where the checkout lies.
        own_code = ":" in family_ref or runtime == "python"
        search_path = (str(self.folder),) if own_code else ()
        options = {k: v for k, v in self.entry.items() if k not in ENTRY_KEYS}
        try:
            family_cls = resolve(family_ref, (str(self.folder),))
        except FamilyError as e:
            raise self.fail("family", str(e)) from None
        try:
            family = family_cls(make_options(family_cls, options), labels)
        except FamilyError as e:
            raise self.fail(e.key or "family", str(e)) from None
        except Exception as e:  # a user's family may fail in any way
            raise self.fail("family", f"{family_ref} failed: {type(e).__name__}: {e}") from None
        detector = Detector(
            name=name,
            title=self.get("title", str, name),
            runtime=runtime,
            family_ref=family_ref,
            family=family,
            options=options,
            labels=labels,
            artifact=artifact,
            recipe=recipe,
            fuse=self.get("fuse", bool, True),
            instances=self._instances(),
            preferred_batch_sizes=self._batch_sizes(),
            max_queue_delay_us=self._queue_delay(),
            search_path=search_path,
            native=self.get("native", bool, True),
        )
        # An ONNX file is parsed once, for the label check and the binding both.
        onnx_model = _load_onnx(artifact) if runtime == "onnx" and artifact is not None else None
        self._check_classes(detector, onnx_model)
        return self._bound(detector, onnx_model)

    def _bound(self, detector: Detector, onnx_model=None) -> Detector:
        """``detector`` with the artifact's tensors bound to its family's, or the reason
        its artifact cannot run natively (``onnx_model``: the ONNX file, already loaded).
        A recipe's artifact carries its family's own names (a test checks it), so it
        binds before it is built."""
        if detector.runtime_info.native_platform is None:
            return detector
        if detector.artifact is None:
            signature = Signature(
                tuple(ArtifactTensor(t.name, t.dtype, t.dims) for t in detector.inputs),
                tuple(ArtifactTensor(t.name, t.dtype, t.dims) for t in detector.outputs),
            )
        elif onnx_model is not None:
            signature = onnx_signature(onnx_model)
        else:
            try:
                signature = read_signature(
                    detector.runtime, detector.artifact, len(detector.outputs)
                )
            except ArtifactError as e:
                return replace(detector, native_refusal=str(e))
        try:
            binding = bind(detector.inputs, detector.outputs, signature)
        except ArtifactError as e:
            return replace(detector, native_refusal=str(e))
        return replace(detector, binding=binding)

    def _artifact(self, runtime: str) -> tuple[Path | None, str | None]:
        artifact, recipe = self.get("artifact", str), self.get("recipe", str)
        if (artifact is None) == (recipe is None):
            raise self.fail(
                "artifact", "give either artifact (your model's file or folder) or recipe"
            )
        if recipe is not None:
            if recipe not in recipes.RECIPES:
                raise self.fail(
                    "recipe",
                    f"unknown recipe {recipe!r}: choose one of {', '.join(recipes.RECIPES)}",
                )
            built_for = recipes.RECIPES[recipe][1]
            if built_for != runtime:
                raise self.fail("runtime", f"recipe {recipe!r} builds a {built_for} artifact")
            return None, recipe
        path = Path(artifact).expanduser()
        path = (path if path.is_absolute() else self.folder / path).resolve()
        spec = RUNTIMES[runtime]
        if not path.exists():
            raise self.fail("artifact", f"{path} does not exist")
        if spec.is_dir and not (path / "saved_model.pb").is_file():
            raise self.fail("artifact", f"{path} is not a SavedModel folder (no saved_model.pb)")
        if not spec.is_dir and not path.is_file():
            raise self.fail("artifact", f"{path} is not a file")
        if runtime == "python" and path.suffix != ".py":
            raise self.fail("artifact", f"{path}: the python runtime takes a .py file")
        return path, None

    def _labels(self) -> tuple[str, ...]:
        labels = self.get("labels", str)
        if labels is None:
            return contract.COCO80_LABELS
        path = Path(labels).expanduser()
        path = path if path.is_absolute() else self.folder / path
        try:
            lines = path.read_text().splitlines()
        except OSError as e:
            raise self.fail("labels", f"cannot read {path}: {e.strerror or e}") from None
        names = tuple(line.strip() for line in lines if line.strip())
        if not names:
            raise self.fail("labels", f"{path} has no labels (one per line)")
        if len(set(names)) != len(names):
            twice = next(n for n in names if names.count(n) > 1)
            raise self.fail("labels", f"{path} lists {twice!r} twice")
        return names

    def _instances(self) -> int | None:
        n = self.get("instances", int)
        if n is not None and not 1 <= n <= 64:
            raise self.fail("instances", f"must be 1..64, got {n}")
        return n

    def _batch_sizes(self) -> tuple[int, ...]:
        sizes = self.get("preferred_batch_sizes", list, [])
        if not all(isinstance(s, int) and 1 <= s <= contract.MAX_BATCH_SIZE for s in sizes):
            raise self.fail(
                "preferred_batch_sizes",
                f"must be integers in 1..{contract.MAX_BATCH_SIZE}, got {sizes!r}",
            )
        return tuple(sorted(set(sizes)))

    def _queue_delay(self) -> int:
        delay = self.get("max_queue_delay_us", int, DEFAULT_QUEUE_DELAY_US)
        if not 0 <= delay <= 10_000_000:
            raise self.fail("max_queue_delay_us", f"must be 0..10000000, got {delay}")
        return delay

    def _check_classes(self, detector: Detector, onnx_model=None) -> None:
        n = len(detector.labels)
        fixed = detector.family.fixed_classes
        if fixed is not None and fixed != n:
            raise self.fail(
                "labels",
                f"{n} labels, but family {detector.family_ref} with these options predicts "
                f"{fixed} classes",
            )
        if detector.artifact is None:
            return
        named, found = read_artifact(detector.runtime, detector.artifact, onnx_model)
        if named is not None and len(named) != n:
            raise self.fail(
                "labels",
                f"{n} labels, but {detector.artifact.name} names {len(named)} classes "
                f"({', '.join(named[:5])}{', ...' if len(named) > 5 else ''})",
            )
        for spec in detector.outputs:
            dims = found.get(spec.name) if len(found) > 1 else next(iter(found.values()), None)
            if dims is None or len(dims) != len(spec.dims):
                continue
            for got, want in zip(dims, spec.dims, strict=True):
                if got is not None and got > 0 and want > 0 and got != want:
                    raise self.fail(
                        "labels",
                        f"{n} labels do not fit the model: its output {spec.name!r} has dims "
                        f"{list(dims)}, family {detector.family_ref} expects "
                        f"{list(spec.dims)} for {n} classes",
                    )


_TOML_NAMES = {"str": "string", "int": "integer", "bool": "boolean (true/false)", "list": "list"}


def read_artifact(
    runtime: str, path: Path, onnx_model=None
) -> tuple[list[str] | None, dict[str, tuple[int | None, ...]]]:
    """What an artifact says of its classes, where it can be read cheaply:
    ``(class names, output dims)``.

    - class names: Ultralytics writes them into an ONNX file's metadata, a
      TorchScript's ``config.txt`` and a SavedModel's ``metadata.yaml``; None where the
      file says nothing (or cannot be read here);
    - output dims per image, by output name (``None`` for a size the file leaves
      open): ONNX files carry them in the graph; ``{}`` for other runtimes, which are
      checked when their first batch runs.

    ``onnx_model``: the ONNX file already loaded (else it is loaded here).
    """
    model = onnx_model
    if model is None and runtime == "onnx":
        model = _load_onnx(path)
    return _class_names(runtime, path, model), _output_dims(model)


def _load_onnx(path: Path):
    """The ONNX model without its weights' external data; None where it cannot be read
    here (the server will say why when it loads it)."""
    try:
        import onnx

        return onnx.load(str(path), load_external_data=False)
    except Exception:
        return None


def _output_dims(onnx_model) -> dict[str, tuple[int | None, ...]]:
    if onnx_model is None:
        return {}
    return {
        t.name: tuple(None if d < 0 else d for d in t.dims or ())
        for t in onnx_signature(onnx_model).outputs
    }


def _class_names(runtime: str, path: Path, onnx_model) -> list[str] | None:
    try:
        if runtime == "onnx":
            metadata = {p.key: p.value for p in onnx_model.metadata_props} if onnx_model else {}
            raw = metadata.get("names")
            names = ast.literal_eval(raw) if raw else None
        elif runtime == "torchscript":
            with zipfile.ZipFile(path) as archive:
                entry = next(
                    (n for n in archive.namelist() if n.endswith("/extra/config.txt")), None
                )
                names = json.loads(archive.read(entry)).get("names") if entry else None
        elif runtime == "savedmodel" and (path / "metadata.yaml").is_file():
            names = _yaml_names((path / "metadata.yaml").read_text())
        else:
            names = None
    except Exception:  # a file of another exporter: nothing to compare with
        return None
    if isinstance(names, dict):
        return [str(names[k]) for k in sorted(names, key=lambda k: int(k))]
    return None


def _yaml_names(text: str) -> dict[int, str] | None:
    """The ``names:`` mapping of Ultralytics' metadata.yaml (``  0: cat`` lines)."""
    lines = text.splitlines()
    if "names:" not in lines:
        return None
    names = {}
    for line in lines[lines.index("names:") + 1 :]:
        match = re.fullmatch(r"\s+(\d+):\s*(.*)", line)
        if not match:
            break
        names[int(match.group(1))] = match.group(2).strip().strip("'\"")
    return names


def parameters_json(value: Any) -> str:
    """Compact JSON for a config parameter."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
