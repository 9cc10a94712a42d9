"""Pre- and post-processing of detector families, and the registry they join.

A family turns one decoded image into its network's input tensor and that network's
raw outputs back into detection rows. It is a subclass of :class:`Family` with:

- ``name``: the key a models file names it by (``family = "yolo"``); a subclass with a
  name registers itself on definition, so a family module is all a new family needs.
- ``Options``: a dataclass of the family's own settings (input size, normalisation,
  ...), each with a default; a models file entry may set any of them.
- ``inputs`` / ``outputs``: the network's tensors (names, dtypes, per-image dims).
- ``preprocess`` and ``postprocess``, see :class:`Family`.

``postprocess`` returns rows ``(x1, y1, x2, y2, score, class_id)``: xyxy in pixels of
the original image, clipped to it, ``score >= score_threshold``, class-aware NMS at
``iou_threshold``, ``class_id`` an index into the detector's own label list, sorted by
score descending, at most :data:`ensemble.contract.MAX_DETECTIONS` rows, float32
``[N, 6]``.

A user's own family lives outside this package and is named in the models file as
``"package.module:ClassName"`` (importable from the models file's folder); it need not
register, only subclass :class:`Family`.
"""

from __future__ import annotations

import dataclasses
import importlib
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np


@dataclass(frozen=True)
class NetworkTensor:
    """One input or output tensor of a family's network, per image (the batch dimension
    left out), as the artifact declares it; ``ensemble.spec.Tensor`` is a tensor of a
    Triton model's config."""

    name: str
    dtype: str  # Triton dtype name without the TYPE_ prefix: FP32, UINT8, INT32, BYTES
    dims: tuple[int, ...]  # -1 where the size varies


@dataclass(frozen=True)
class NoOptions:
    """A family without settings of its own."""


class Family:
    """Base class of every family; see the module docstring."""

    name: ClassVar[str] = ""
    Options: ClassVar[type] = NoOptions
    # How many classes the network predicts, when the family fixes it (a COCO-80
    # network); None when the artifact decides (its labels must then say).
    fixed_classes: ClassVar[int | None] = None

    def __init__(self, options: Any = None, labels: Sequence[str] = ()) -> None:
        self.options = options if options is not None else self.Options()
        self.labels = tuple(labels)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # Only a class that names itself registers: a user's subclass of a built-in
        # inherits the name but is found through its "module:Class" reference.
        if cls.__dict__.get("name"):
            if cls.name in FAMILIES and FAMILIES[cls.name] is not cls:
                raise ValueError(f"two families are called {cls.name!r}")
            FAMILIES[cls.name] = cls

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    @property
    def inputs(self) -> tuple[NetworkTensor, ...]:
        """The network's input tensors (one, for every family here)."""
        raise NotImplementedError

    @property
    def outputs(self) -> tuple[NetworkTensor, ...]:
        raise NotImplementedError

    def preprocess(self, image_rgb: np.ndarray) -> np.ndarray:
        """One ``uint8`` RGB ``(height, width, 3)`` image -> the network's input tensor
        for it (batch dimension left out), as ``inputs[0]`` describes."""
        raise NotImplementedError

    def postprocess(
        self,
        outputs: Mapping[str, np.ndarray],
        image_size: tuple[int, int],
        score_threshold: float,
        iou_threshold: float,
    ) -> np.ndarray:
        """One image's raw outputs by tensor name -> float32 ``[N, 6]`` detection rows in
        pixels of the original image of ``image_size = (height, width)``."""
        raise NotImplementedError


# name -> class; filled by Family.__init_subclass__ when a family module is imported.
FAMILIES: dict[str, type[Family]] = {}

BUILTIN_MODULES = ("nanodet", "ssd", "centernet", "yolo")


class FamilyError(ValueError):
    """A family reference or its options are wrong; the message says which and why,
    and ``key`` names the option at fault (None when it is the reference itself)."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


def add_import_path(folders: Sequence[str]) -> None:
    """Let ``import`` find a user's modules in ``folders`` (the models file's folder),
    ahead of the rest of ``sys.path``."""
    for folder in reversed(folders):
        if folder not in sys.path:
            sys.path.insert(0, folder)


def builtin_families() -> dict[str, type[Family]]:
    for module in BUILTIN_MODULES:
        importlib.import_module(f"{__name__}.{module}")
    return dict(FAMILIES)


def resolve(reference: str, search_path: Sequence[str] = ()) -> type[Family]:
    """The family class a models file names: a built-in name (``"yolo"``) or
    ``"package.module:ClassName"`` importable from ``search_path`` or ``sys.path``."""
    builtins = builtin_families()
    if ":" not in reference:
        if reference not in builtins:
            raise FamilyError(
                f"unknown family {reference!r}: choose one of {', '.join(sorted(builtins))}, "
                'or name your own class as "package.module:ClassName"'
            )
        return builtins[reference]
    module_name, _, class_name = reference.partition(":")
    add_import_path(search_path)
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # a user's module may fail in any way while importing
        raise FamilyError(
            f"cannot import {module_name!r} for family {reference!r}: {type(e).__name__}: {e}"
        ) from None
    cls = getattr(module, class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, Family)):
        raise FamilyError(
            f"{reference!r}: {module_name} has no class {class_name!r} that subclasses "
            "ensemble.families.Family"
        )
    return cls


def make_options(family: type[Family], values: Mapping[str, Any]) -> Any:
    """The family's ``Options`` from a models file's keys, type-checked against each
    field's default (an int is accepted where a float is expected; a list for a tuple)."""
    fields = {f.name: f for f in dataclasses.fields(family.Options)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        known = ", ".join(sorted(fields)) or "none"
        raise FamilyError(
            f"unknown key {unknown[0]!r} (family {family.name or family.__name__} "
            f"has options: {known})",
            key=unknown[0],
        )
    converted = {}
    for key, value in values.items():
        default = _default(fields[key])
        converted[key] = _coerce(key, value, default)
    return family.Options(**converted)


def _default(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return None


def _coerce(key: str, value: Any, default: Any) -> Any:
    if default is None:
        return value
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif isinstance(default, tuple):
        ok = isinstance(value, list | tuple) and len(value) == len(default)
        if ok:
            value = tuple(_coerce(key, v, d) for v, d in zip(value, default, strict=True))
    else:
        ok = isinstance(value, type(default))
    if not ok:
        raise FamilyError(
            f"key {key!r} must be {_kind(default)} like the default {default!r}, got {value!r}",
            key=key,
        )
    return value


def _kind(default: Any) -> str:
    if isinstance(default, tuple):
        return f"a list of {len(default)}"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(
        type(default), type(default).__name__
    )
