"""What the page's tabs share: what the page gives each tab (``Page``), how long
uploads are kept, the error a tab shows for input it refuses, the thresholds' check,
file-name slugs and a table's wire value."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # for the annotations only: those modules import this one
    import gradio as gr

    from client import DetectorClient
    from ui.catalog import ServerModels
    from ui.results import ResultFolders

# Uploads (and result files) older than this are deleted by the page's cache sweep: a
# re-run needs a re-upload.
UPLOAD_MAX_AGE_S = 600


@dataclass(frozen=True)
class Page:
    """What the page gives each tab's ``build_tab``: the one client every user shares,
    the server's model catalogue, the result folders, the page's inputs every tab reads
    (the model choice and the two thresholds) and its upload limit (Gradio's ``"50mb"``
    form; None: Gradio's default)."""

    client: DetectorClient
    models: ServerModels
    folders: ResultFolders
    model: gr.Radio
    score: gr.Slider
    iou: gr.Slider
    max_file_size: str | None = None


class InputError(ValueError):
    """What the user gave cannot be sent; ``str()`` says why, for the page."""


def threshold(value: Any, what: str) -> float:
    """``value`` as a threshold in [0, 1]; ``InputError`` naming ``what`` otherwise."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{what} must be a number between 0 and 1, got {value!r}") from None
    if not (math.isfinite(number) and 0.0 <= number <= 1.0):
        raise InputError(f"{what} must be between 0 and 1, got {value!r}")
    return number


def slug(text: str, default: str = "image") -> str:
    """``text`` for a file name: lower case, every run of other characters one "-"."""
    return re.sub(r"[^0-9a-z]+", "-", text.lower()).strip("-") or default


def table_value(headers: list[str], rows: list[list]) -> dict:
    """A Dataframe's wire value (what its postprocess makes of a list of rows)."""
    return {"headers": list(headers), "data": rows, "metadata": None}


# Labels (COCO's among them) whose plural is not made by the rules of ``plural``.
IRREGULAR_PLURALS = {
    "person": "people",
    "mouse": "mice",
    "knife": "knives",
    "sheep": "sheep",
    "skis": "skis",
    "scissors": "scissors",
    "broccoli": "broccoli",
}


def plural(label: str) -> str:
    """``label`` for more than one object: "people", "buses", "wine glasses", "cars"."""
    if label in IRREGULAR_PLURALS:
        return IRREGULAR_PLURALS[label]
    if label.endswith(("s", "sh", "ch", "x", "z")):
        return label + "es"
    if len(label) > 1 and label.endswith("y") and label[-2] not in "aeiou":
        return label[:-1] + "ies"
    return label + "s"


def objects_text(counts: Mapping[str, int]) -> str:
    """Distinct objects per label in words, in the order given: ``{"person": 3, "car":
    1}`` -> "3 people, 1 car"; "none" when there are none."""
    return (
        ", ".join(f"{n} {label if n == 1 else plural(label)}" for label, n in counts.items() if n)
        or "none"
    )
