"""The page's live webcam tab (being built: see build_tab)."""

from __future__ import annotations

from typing import Any

import gradio as gr

from client import DetectorClient


def build_tab(client: DetectorClient, models: Any, model: Any, score: Any, iou: Any) -> None:
    """The tab's components and events, inside the caller's ``gr.Tab``."""
    gr.Markdown("The live webcam is not available on this page yet.", elem_id="webcam-message")
