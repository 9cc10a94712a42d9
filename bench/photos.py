"""The photos every benchmark sends: the same files for perf_analyzer, the old design
and the in-process limit.

They are scikit-image's bundled photos (nothing is downloaded), saved as JPEG at
quality 90, because that is what users upload: camera and web photos are JPEG. The
bundled PNGs are 16-773 kB for 0.1-0.4 MP; as JPEG the same pixels are 12-116 kB, the
size a phone photo scaled for the web has. ``--photo-format png`` in ``python -m bench``
sends the PNGs as they are instead.
"""

from __future__ import annotations

import functools
from pathlib import Path

PHOTO_NAMES = ("astronaut", "coffee", "horse", "motorcycle_left", "chelsea")
JPEG_QUALITY = 90
FORMATS = ("jpeg", "png")


def photo_paths() -> list[Path]:
    """The bundled PNG files."""
    import skimage.data

    folder = Path(skimage.data.__file__).parent
    return [folder / f"{name}.png" for name in PHOTO_NAMES]


@functools.cache
def photo_files(fmt: str = "jpeg") -> tuple[bytes, ...]:
    """The photos as encoded files: ``fmt`` "jpeg" (made from the PNGs, quality
    :data:`JPEG_QUALITY`, the same bytes on every run) or "png" (the files as they are)."""
    if fmt not in FORMATS:
        raise ValueError(f"photo format must be one of {FORMATS}, not {fmt!r}")
    pngs = [p.read_bytes() for p in photo_paths()]
    if fmt == "png":
        return tuple(pngs)
    from ensemble.imaging import decode_image, encode_jpeg

    return tuple(encode_jpeg(decode_image(png), JPEG_QUALITY) for png in pngs)
