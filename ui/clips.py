"""The page's video-clip tab (being built: see build_tab)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gradio as gr

from client import DetectorClient


def build_tab(
    client: DetectorClient, models: Any, downloads_root: Path, model: Any, score: Any, iou: Any
) -> None:
    """The tab's components and events, inside the caller's ``gr.Tab``."""
    gr.Markdown("Video clips are not available on this page yet.", elem_id="video-message")
