"""The photos every benchmark sends: the same files for perf_analyzer, the old design
and the in-process limit.

They are scikit-image's bundled photos (nothing is downloaded), saved as JPEG at
quality 90, because that is what users upload: camera and web photos are JPEG. The
bundled PNGs are 16-773 kB for 0.1-0.4 MP; as JPEG the same pixels are 12-116 kB, the
size a phone photo scaled for the web has. ``--photo-format png`` in ``python -m bench``
sends the PNGs as they are instead.

The size sweep (``bench.sweep``) needs camera-sized photos: :func:`sized_photo` scales
the same photos to a number of megapixels (1 MP = 10^6 pixels), aspect ratio kept, and
adds mild Gaussian noise before the JPEG encoding. Scaled up from 0.1-0.4 MP, a photo
is smoother than a camera's: at 12 MP its JPEG would be 0.06-0.15 bytes per pixel.
The noise is luminance grain, the same on R, G and B (cameras smooth away colour
noise far more than grain), of sigma :data:`NOISE_SIGMA` grey levels; with it the
photos are 0.1-0.2 bytes per pixel, the low end of camera JPEGs (about 0.2-0.5 at
quality 90; sigma 6 would reach 0.3). They are made the same on every run (fixed
seed) and kept under ``.cache/photos/``.
"""

from __future__ import annotations

import functools
import hashlib
import os
import zlib
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
PHOTO_NAMES = ("astronaut", "coffee", "horse", "motorcycle_left", "chelsea")
JPEG_QUALITY = 90
FORMATS = ("jpeg", "png")
NOISE_SIGMA = 3.0  # grey levels (of 255): the standard deviation of the grain
NOISE_SEED = 10
SIZED_CACHE = REPO / ".cache" / "photos"
# Rows of noise made at a time: 24 MP of float32 noise at once would take 290 MB.
_NOISE_BAND_ROWS = 256


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


# --- camera-sized photos (the size sweep) -------------------------------------------


def scaled_size(width: int, height: int, megapixels: float) -> tuple[int, int]:
    """``(width, height)`` in pixels of a ``width x height`` photo scaled to about
    ``megapixels`` (10^6 pixels), aspect ratio kept (each side rounded, at least 1)."""
    if width < 1 or height < 1 or megapixels <= 0:
        raise ValueError(f"cannot scale a {width}x{height} photo to {megapixels} MP")
    aspect = width / height
    new_width = max(1, round((megapixels * 1e6 * aspect) ** 0.5))
    return new_width, max(1, round(new_width / aspect))


def sized_photo(
    name: str,
    megapixels: float,
    *,
    sigma: float = NOISE_SIGMA,
    seed: int = NOISE_SEED,
    quality: int = JPEG_QUALITY,
    cache: Path | None = SIZED_CACHE,
) -> bytes:
    """The bundled photo ``name`` (one of scikit-image's, as :data:`PHOTO_NAMES`) as a
    JPEG (``quality``) of about ``megapixels``: scaled with OpenCV's bicubic
    interpolation (aspect kept, :func:`scaled_size`), then Gaussian noise of ``sigma``
    grey levels added to each pixel (the same to its R, G and B: grain, not colour
    noise), drawn from ``seed`` and the photo's name and size,
    so the same arguments give the same bytes. Kept in ``cache`` (a folder; None makes
    it anew), under a name that holds everything it is made from."""
    import cv2
    import skimage.data

    from ensemble.imaging import decode_image, encode_jpeg

    png = (Path(skimage.data.__file__).parent / f"{name}.png").read_bytes()
    source = decode_image(png)
    width, height = scaled_size(source.shape[1], source.shape[0], megapixels)
    # The source file and the libraries that turn it into pixels decide the bytes.
    made_from = hashlib.sha256(png + f"{cv2.__version__} {np.__version__}".encode()).hexdigest()
    path = None
    if cache is not None:
        path = cache / f"{name}-{width}x{height}-s{sigma:g}-{seed}-q{quality}-{made_from[:12]}.jpg"
        if path.is_file():
            return path.read_bytes()
    pixels = cv2.resize(source, (width, height), interpolation=cv2.INTER_CUBIC)
    rng = np.random.default_rng([seed, zlib.crc32(name.encode()), width, height])
    for top in range(0, height, _NOISE_BAND_ROWS):
        band = pixels[top : top + _NOISE_BAND_ROWS].astype(np.float32)
        grain = rng.standard_normal((*band.shape[:2], 1), dtype=np.float32)
        band += grain * np.float32(sigma)
        np.clip(np.rint(band, out=band), 0, 255, out=band)
        pixels[top : top + _NOISE_BAND_ROWS] = band
    data = encode_jpeg(pixels, quality)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Another run never reads half a file.
        partial = path.with_suffix(f".{os.getpid()}.part")
        partial.write_bytes(data)
        partial.replace(path)
    return data


def sized_photos(megapixels: float, **options) -> tuple[bytes, ...]:
    """Every photo of :data:`PHOTO_NAMES` as :func:`sized_photo` makes it (``options``
    are its keywords), in that order."""
    return tuple(sized_photo(name, megapixels, **options) for name in PHOTO_NAMES)
