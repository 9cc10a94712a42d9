"""The web demo over the detection ensembles: ``python -m ui`` (see ``ui.app``)."""

from ui.app import build_app

__all__ = ["build_app"]
