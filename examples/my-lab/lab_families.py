"""A lab's own pre-processing: CenterNet on gamma-corrected pixels.

The models file names it ``family = "lab_families:GammaCenterNet"``; it is imported from
the models file's folder. A family is a subclass of ``ensemble.families.Family`` (here of
the built-in CenterNet, to reuse its post-processing) with an ``Options`` dataclass whose
fields the models file may set (``gamma = 0.9``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ensemble.families.centernet import CenterNet


@dataclass(frozen=True)
class GammaOptions:
    input_size: int = 512
    max_boxes: int = 100
    gamma: float = 1.0  # < 1 brightens dark street scenes, > 1 darkens


class GammaCenterNet(CenterNet):
    Options = GammaOptions

    def preprocess(self, image_rgb: np.ndarray) -> np.ndarray:
        """CenterNet's input of the image with every channel raised to ``gamma`` (on 0..1)."""
        table = (255.0 * (np.arange(256) / 255.0) ** self.options.gamma).round()
        return super().preprocess(table.astype(np.uint8)[image_rgb])
