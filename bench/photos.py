"""The photos every benchmark sends: scikit-image's bundled PNGs, the same files for
perf_analyzer, the old design and the in-process limit."""

from __future__ import annotations

from pathlib import Path

PHOTO_NAMES = ("astronaut", "coffee", "horse", "motorcycle_left", "chelsea")


def photo_paths() -> list[Path]:
    import skimage.data

    folder = Path(skimage.data.__file__).parent
    return [folder / f"{name}.png" for name in PHOTO_NAMES]
