"""Image files in and out: decode, resize, draw detections, encode JPEG.

Images are numpy ``uint8`` arrays of shape ``(height, width, 3)`` in RGB order.
Boxes are ``(x1, y1, x2, y2)`` in continuous pixel coordinates of the image they are
drawn on (origin at the top-left corner of the top-left pixel), as everywhere in
:mod:`ensemble.boxes`.
"""

from __future__ import annotations

import colorsys
import io
import re
import struct
import warnings
from collections.abc import Sequence

import cv2
import numpy as np
from PIL import Image

from ensemble import contract


class ImageError(ValueError):
    """The input is not an image this service accepts; the message can be shown to a user."""


MAX_IMAGE_SIDE = contract.MAX_IMAGE_SIDE


# EXIF orientation tag values -> how to turn the stored pixels into the displayed image.
_ORIENTATION_TAG = 0x0112
_ORIENT = {
    2: lambda a: a[:, ::-1],  # mirrored left-right
    3: lambda a: a[::-1, ::-1],  # rotated 180
    4: lambda a: a[::-1],  # mirrored top-bottom
    5: lambda a: a.swapaxes(0, 1),  # transposed
    6: lambda a: np.rot90(a, -1),  # stored rotated 90 counter-clockwise: turn it clockwise
    7: lambda a: a.swapaxes(0, 1)[::-1, ::-1],  # transversed
    8: lambda a: np.rot90(a, 1),  # stored rotated 90 clockwise: turn it back
}


def decode_image(data: bytes, max_pixels: int = contract.MAX_IMAGE_PIXELS) -> np.ndarray:
    """Decode an encoded image file into a ``uint8`` RGB array ``(height, width, 3)``.

    Reads whatever Pillow can identify and OpenCV or Pillow can decode: JPEG, PNG, BMP,
    WebP, TIFF, GIF (first frame), PNM, JPEG 2000 and more. Grayscale becomes three
    equal channels; 16-bit and float samples are scaled to 8 bits; an alpha channel is
    composited onto white, so transparent areas look as they do on a white page instead
    of showing whatever colour the encoder left under them (often black, which would
    hide dark content). An EXIF orientation tag is applied, so the result is upright as
    viewers show it (OpenCV's ``IMREAD_UNCHANGED``, used for its alpha and 16-bit
    samples, ignores the tag).

    The width and height are read from the header before any pixel is decoded; an image
    of more than ``max_pixels`` pixels is rejected without allocating it. So are files
    whose structure would make a reader spend seconds or gigabytes before the pixels
    (see :func:`_check_structure`).

    Raises :class:`ImageError` for empty data, data that is not an image, images over
    the size limit or with a side over :data:`MAX_IMAGE_SIDE` pixels, and files whose
    pixels cannot be decoded.
    """
    return decode_scaled(data, 0, max_pixels)[0]


# The reductions a JPEG decoder does while decoding (libjpeg's DCT scaling), largest first.
REDUCTIONS = (8, 4, 2)
_REDUCED_JPEG = {
    2: cv2.IMREAD_REDUCED_COLOR_2,
    4: cv2.IMREAD_REDUCED_COLOR_4,
    8: cv2.IMREAD_REDUCED_COLOR_8,
}


def reduction(width: int, height: int, min_side: int) -> int:
    """The largest of 1, 2, 4, 8 that keeps the longest side of a ``width x height``
    image at least ``min_side`` pixels once divided (rounded up); 1 when ``min_side``
    is 0 (full size asked for)."""
    if min_side <= 0:
        return 1
    longest = max(width, height)
    return next((f for f in REDUCTIONS if -(-longest // f) >= min_side), 1)


def decode_scaled(
    data: bytes, min_side: int = 0, max_pixels: int = contract.MAX_IMAGE_PIXELS
) -> tuple[np.ndarray, tuple[int, int]]:
    """Like :func:`decode_image`, but only as large as needed: the image reduced by
    ``f`` = :func:`reduction` (its longest side stays at least ``min_side`` pixels;
    0: full size), and the ``(height, width)`` of the full upright image.

    Each side of the result is the full one divided by ``f``, rounded up, so boxes
    found on it map back by multiplying by ``full / reduced`` per axis. A JPEG is
    decoded reduced (libjpeg scales the DCT: a 24 Mpx photo at 1/8 decodes about 10x
    faster and in 1/64 of the memory); other formats are decoded whole, then shrunk by
    area averaging, so every later step handles the smaller image.
    """
    data = bytes(data)
    if not data:
        raise ImageError("The image is empty (0 bytes).")
    _check_structure(data)
    width, height, orientation = _read_header(data, max_pixels)
    factor = reduction(width, height, min_side)
    reduced = (-(-height // factor), -(-width // factor))

    pixels = None
    if factor > 1 and data[:3] == b"\xff\xd8\xff":
        # The reduced modes give 8-bit BGR (a JPEG has no alpha); orientation is ours.
        flags = _REDUCED_JPEG[factor] | cv2.IMREAD_IGNORE_ORIENTATION
        pixels = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flags)
    if pixels is None:
        pixels = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
        # None: a format OpenCV does not read (GIF, ICO, ...) or a damaged file.
        pixels = _decode_with_pillow(data) if pixels is None else _opencv_to_rgb_order(pixels)
        rgb = _to_rgb8(pixels)
        _check_decoded_size(rgb, height, width)
        if factor > 1:
            rgb = cv2.resize(rgb, reduced[::-1], interpolation=cv2.INTER_AREA)
    else:
        rgb = _opencv_to_rgb_order(pixels)
        _check_decoded_size(rgb, *reduced)
    if orientation in _ORIENT:
        rgb = _ORIENT[orientation](rgb)
    if orientation in _SWAPS_SIDES:
        height, width = width, height
    return np.ascontiguousarray(rgb), (height, width)


# EXIF orientations whose upright image is the stored one turned a quarter.
_SWAPS_SIDES = frozenset({5, 6, 7, 8})


def _check_decoded_size(rgb: np.ndarray, height: int, width: int) -> None:
    if rgb.shape[:2] != (height, width):
        # Some containers (multi-page, multi-resolution) hold more than the header's image.
        # Refuse a surprise rather than trust the size check for a different image.
        raise ImageError(
            f"The image header says {width}x{height} pixels but it decoded to "
            f"{rgb.shape[1]}x{rgb.shape[0]}."
        )


def _read_header(data: bytes, max_pixels: int) -> tuple[int, int, int]:
    """Width, height and EXIF orientation (1 if none) from the header, without decoding."""
    try:
        with warnings.catch_warnings():
            # Pillow's own bomb warning (over 89 Mpx) duplicates our limit; it raises
            # DecompressionBombError past twice that, handled below.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:  # lazy: parses the header only
                width, height = img.size
                orientation = 1
                # Only where EXIF sits in the header: asking a PNG without it would decode.
                if "exif" in img.info:
                    orientation = int(img.getexif().get(_ORIENTATION_TAG, 1) or 1)
    except Image.DecompressionBombError as exc:
        match = re.search(r"\((\d+) pixels\)", str(exc))
        claimed = f"{int(match.group(1)) / 1e6:.1f} megapixels" if match else "too many pixels"
        raise ImageError(
            f"The image is too large ({claimed}); the limit is {max_pixels / 1e6:.1f} megapixels."
        ) from None
    except Image.UnidentifiedImageError:
        raise ImageError(
            f"The data is not an image in a supported format (JPEG, PNG, BMP, WebP, TIFF, GIF, "
            f"...): {len(data)} bytes starting with {data[:8]!r}."
        ) from None
    except Exception as exc:  # a recognised format whose header is broken
        raise ImageError(f"The image header is damaged: {exc}.") from None
    if width < 1 or height < 1:
        raise ImageError(f"The image header says {width}x{height} pixels; that is no image.")
    if width * height > max_pixels:
        raise ImageError(
            f"The image is {width}x{height} pixels ({width * height / 1e6:.1f} megapixels); "
            f"the limit is {max_pixels / 1e6:.1f} megapixels."
        )
    if max(width, height) > MAX_IMAGE_SIDE:
        raise ImageError(
            f"The image is {width}x{height} pixels; a side may be at most {MAX_IMAGE_SIDE} "
            f"pixels, the most a JPEG (the annotated image) holds."
        )
    return width, height, orientation


# Real files have a few dozen chunks, segments or blocks before their pixels, PNGs up to
# a few thousand IDAT chunks after them (8 kB each); a reader walks each in Python, or
# sizes a buffer by it, so files made of nothing else are refused past these counts.
_MAX_PNG_CHUNKS = 2**16
_MAX_HEADER_PIECES = 4096  # JPEG segments and fill bytes, GIF extension blocks


def _check_structure(data: bytes) -> None:
    """Refuse a PNG, JPEG or GIF file whose structure would cost its readers seconds or
    gigabytes before any pixel, with :class:`ImageError`.

    Found by fuzzing (``tests/test_fuzz_images.py``), each for a file of at most the
    64 MiB a request may hold:

    - OpenCV's PNG reader (4.11) sizes its buffer for a chunk by the chunk's length field
      before reading it, and libpng does the same for text chunks: one chunk claiming
      2**31 bytes in a 10 kB file cost 2 GiB and seconds.
    - Pillow's header reader walks PNG chunks, JPEG segments and JPEG fill bytes in
      Python, a few microseconds each: a file of empty ones kept it busy for 20-40 s.
    - Pillow joins GIF comment blocks by repeated concatenation, in time that grows with
      the square of their number: 4 MiB of empty comments took it 66 s.
    """
    if data.startswith(_PNG_SIGNATURE):
        _check_png_chunks(data)
    elif data.startswith(b"\xff\xd8"):
        _check_jpeg_segments(data)
    elif data.startswith((b"GIF87a", b"GIF89a")):
        _check_gif_blocks(data)


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_CHUNK_HEAD = struct.Struct(">I4s")  # length of the chunk's data in bytes, type


def _check_png_chunks(data: bytes) -> None:
    """Every chunk up to IEND must fit in the file, and there may be at most
    :data:`_MAX_PNG_CHUNKS` of them."""
    at, chunks = len(_PNG_SIGNATURE), 0
    while at + _PNG_CHUNK_HEAD.size <= len(data):
        length, kind = _PNG_CHUNK_HEAD.unpack_from(data, at)
        # A chunk is its length and type (8 bytes), its data and a CRC (4 bytes).
        if at + 12 + length > len(data):
            raise ImageError(
                f"The image is damaged or truncated: its PNG chunk "
                f"{kind.decode('latin-1')!r} at byte {at} claims {length} bytes, more than "
                f"the {len(data) - at - 8} that follow it."
            )
        if kind == b"IEND":
            return
        chunks += 1
        if chunks > _MAX_PNG_CHUNKS:
            raise ImageError(
                f"The image is damaged: it has more than {_MAX_PNG_CHUNKS} PNG chunks."
            )
        at += 12 + length


_JPEG_FILL = re.compile(rb"\xff+")
_JPEG_STANDALONE = {0x01, *range(0xD0, 0xD9)}  # markers without a length: TEM, RSTn, SOI


def _check_jpeg_segments(data: bytes) -> None:
    """At most :data:`_MAX_HEADER_PIECES` segments and extra fill bytes (0xFF) before
    the first scan, where Pillow's reader stops."""
    at, pieces = 2, 0
    while pieces <= _MAX_HEADER_PIECES:
        fill = _JPEG_FILL.match(data, at)
        if fill is None or fill.end() >= len(data):
            return  # not a marker, or the end: the readers say what is wrong
        pieces += fill.end() - fill.start()  # one 0xFF per marker, the rest is fill
        marker, at = data[fill.end()], fill.end() + 1
        if marker in (0xDA, 0xD9):  # start of scan, end of image
            return
        if marker not in _JPEG_STANDALONE:
            if at + 2 > len(data):
                return
            at += max(2, int.from_bytes(data[at : at + 2], "big"))  # the length counts itself
    raise ImageError(
        f"The image is damaged: its JPEG header has more than {_MAX_HEADER_PIECES} "
        f"segments and fill bytes."
    )


def _check_gif_blocks(data: bytes) -> None:
    """At most :data:`_MAX_HEADER_PIECES` extension blocks and their sub-blocks before
    the first image, the part Pillow's reader walks to open the file."""
    if len(data) < 13:
        return
    at, flags, pieces = 13, data[10], 0  # after the header and logical screen descriptor
    if flags & 0x80:  # a global colour table of 2**(n+1) RGB entries
        at += 3 << ((flags & 7) + 1)
    while at + 1 < len(data) and data[at] == 0x21:  # an extension: its label, sub-blocks
        at, size = at + 2, None
        while at < len(data) and size != 0:  # a size byte, that many bytes; size 0 ends
            size, at, pieces = data[at], at + 1 + data[at], pieces + 1
            if pieces > _MAX_HEADER_PIECES:
                raise ImageError(
                    f"The image is damaged: its GIF header has more than "
                    f"{_MAX_HEADER_PIECES} extension blocks."
                )


def _opencv_to_rgb_order(pixels: np.ndarray) -> np.ndarray:
    """OpenCV's BGR / BGRA channel order to RGB / RGBA; gray and gray+alpha unchanged."""
    # cvtColor, not fancy indexing: ~10 ms instead of ~60 ms for 12 Mpx.
    if pixels.ndim == 3 and pixels.shape[2] == 3:
        return cv2.cvtColor(pixels, cv2.COLOR_BGR2RGB)
    if pixels.ndim == 3 and pixels.shape[2] == 4:
        return cv2.cvtColor(pixels, cv2.COLOR_BGRA2RGBA)
    return pixels


def _decode_with_pillow(data: bytes) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.mode.startswith(("I", "F")):  # 16/32-bit gray: keep the depth for scaling
                return np.asarray(img)
            has_alpha = "A" in img.getbands() or "transparency" in img.info
            return np.asarray(img.convert("RGBA" if has_alpha else "RGB"))
    except Exception as exc:
        raise ImageError(f"The image is damaged or truncated: {exc}.") from None


def _to_rgb8(pixels: np.ndarray) -> np.ndarray:
    """Gray / gray+alpha / RGB / RGBA of any common depth -> uint8 RGB, alpha over white.

    Deeper samples are scaled to 8 bits first, then alpha is composited in 8-bit
    integers, in bands of rows: float math over the whole image took 10 to 25 s and
    2 GB for 40 Mpx of RGBA (the size limit); this takes a fraction of a second and
    little more memory than the output.
    """
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    if pixels.ndim != 3 or pixels.shape[2] not in (1, 2, 3, 4):
        raise ImageError(f"Unsupported image layout: array of shape {pixels.shape}.")
    if pixels.dtype != np.uint8:
        pixels = _to_uint8(pixels)
    channels = pixels.shape[2]
    has_alpha = channels in (2, 4)
    if has_alpha and pixels[..., -1].min() < 255:
        color = _over_white(pixels)
    else:
        color = pixels[..., : channels - has_alpha]
    return np.repeat(color, 3, axis=2) if color.shape[2] == 1 else color


def _to_uint8(pixels: np.ndarray) -> np.ndarray:
    """16-bit, signed or float samples -> uint8, rounded: 0..65535 (integers) or 0..1
    (floats, the display range of HDR and float TIFF) onto 0..255, the rest clipped."""
    if np.issubdtype(pixels.dtype, np.floating):
        samples = np.array(pixels, np.float32)  # our own copy, cleaned in place
        np.nan_to_num(samples, copy=False)
        np.clip(samples, 0.0, 1.0, out=samples)
        scale = 255.0
    else:
        if np.issubdtype(pixels.dtype, np.signedinteger):  # Pillow's 16-bit modes: int32
            pixels = np.clip(pixels, 0, 65535).astype(np.uint16)
        if pixels.dtype != np.uint16:
            raise ImageError(f"Unsupported image sample type: {pixels.dtype}.")
        samples, scale = pixels, 1 / 257  # 65535 / 257 = 255
    # OpenCV drops a single channel's axis; the reshape puts it back.
    return cv2.convertScaleAbs(samples, alpha=scale).reshape(pixels.shape)


# Rows are composited this many pixels at a time, so the temporaries stay a few MB.
_BAND_PIXELS = 2**20


def _over_white(pixels: np.ndarray) -> np.ndarray:
    """Gray+alpha or RGBA ``uint8`` pixels seen on white: each colour channel becomes
    ``255 - (255 - color) * alpha / 255``, rounded; the alpha channel goes."""
    height, width, channels = pixels.shape
    out = np.empty((height, width, channels - 1), np.uint8)
    rows = max(1, _BAND_PIXELS // width)
    for top in range(0, height, rows):
        *colors, alpha = cv2.split(pixels[top : top + rows])
        # OpenCV's uint8 arithmetic rounds and saturates; numpy's would wrap.
        seen = [
            cv2.bitwise_not(cv2.multiply(cv2.bitwise_not(c), alpha, scale=1 / 255)) for c in colors
        ]
        out[top : top + rows] = cv2.merge(seen).reshape(len(alpha), width, channels - 1)
    return out


def resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Stretch an image to ``width x height`` pixels with bilinear interpolation.

    No letterbox: the aspect ratio is not kept, as in the three families' reference
    preprocessing, so boxes map back by scaling x and y separately. OpenCV samples at
    pixel centres (TF's ``half_pixel_centers=True``); TF.js ``resizeBilinear``, which
    the NanoDet and CenterNet references use, samples at corners, a sub-pixel shift.
    Keeps the dtype and channel count.
    """
    if width < 1 or height < 1:
        raise ValueError(f"resize target must be at least 1x1, got {width}x{height}")
    return cv2.resize(image, (int(width), int(height)), interpolation=cv2.INTER_LINEAR)


def fit_within(
    image: np.ndarray, max_side: int, photo_size: tuple[int, int] | None = None
) -> np.ndarray:
    """``image`` scaled down (area averaging) so that its longest side is at most
    ``max_side`` pixels; unchanged when it already fits or when ``max_side`` is 0.

    The result has the size the photo itself, ``photo_size = (height, width)`` (default:
    the image's own), would have scaled to fit, each side rounded to the nearest pixel
    (at least 1): the image may be a reduced decode of the photo, whose sides were
    rounded up.
    """
    height, width = photo_size or image.shape[:2]
    if max_side <= 0 or max(height, width) <= max_side:
        return image
    scale = max_side / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    if size == (image.shape[1], image.shape[0]):
        return image
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def encode_jpeg(image_rgb: np.ndarray, quality: int = 90) -> bytes:
    """Encode a ``uint8`` RGB ``(height, width, 3)`` image as JPEG bytes."""
    image_rgb = np.asarray(image_rgb)
    if image_rgb.dtype != np.uint8 or image_rgb.ndim != 3 or image_rgb.shape[2] != 3:
        raise ValueError(f"need uint8 HxWx3 RGB, got {image_rgb.dtype} {image_rgb.shape}")
    ok, encoded = cv2.imencode(
        ".jpg", image_rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(quality)]
    )
    if not ok:
        raise RuntimeError("OpenCV could not encode the image as JPEG")
    return encoded.tobytes()


def class_color(class_id: int) -> tuple[int, int, int]:
    """A stable RGB colour for a class: hues spaced by the golden ratio, so neighbouring
    class ids get clearly different colours and the same class always gets the same one."""
    hue = (int(class_id) * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.75, 0.95)
    return (round(r * 255), round(g * 255), round(b * 255))


_FONT = cv2.FONT_HERSHEY_SIMPLEX


def draw_detections(
    image_rgb: np.ndarray,
    detections: np.ndarray,
    labels: Sequence[str],
    track_ids: Sequence[int] | None = None,
) -> np.ndarray:
    """Return a copy of ``image_rgb`` with each detection drawn as a box and a label.

    ``detections`` is ``[N, 6]`` rows ``(x1, y1, x2, y2, score, class_id)`` in pixels of
    this image (only the real rows, not padding); ``labels[class_id]`` names a class
    (ids outside ``labels`` are shown as numbers). The label reads ``"person 0.92"`` on
    a filled tag in the class colour above the box, or just inside its top edge when
    there is no room above, and is moved left as needed to stay inside the image. Line
    width and text size grow with the image so they read at 64 px and at 4000 px.
    Higher scores are drawn last, so they end up on top. With ``track_ids`` (one per
    row, -1 for none), a tracked box reads ``"#7 person 0.92"`` and takes its track's
    colour, so that one object keeps one colour over a clip.
    """
    canvas = np.array(image_rgb, dtype=np.uint8, copy=True, order="C")
    if canvas.ndim != 3 or canvas.shape[2] != 3:
        raise ValueError(f"need HxWx3 RGB, got shape {canvas.shape}")
    height, width = canvas.shape[:2]
    det = np.asarray(detections, dtype=np.float64).reshape(-1, 6)
    ids = np.full(len(det), -1) if track_ids is None else np.asarray(track_ids).reshape(-1)
    finite = np.isfinite(det).all(axis=1)
    det, ids = det[finite], ids[finite]
    order = np.argsort(det[:, 4], kind="stable")
    det, ids = det[order], ids[order]

    size = (height + width) / 2
    line = max(1, round(size * 0.003))
    font_scale = max(0.3, size * 0.0008)
    font_thickness = max(1, round(font_scale * 1.5))

    for (x1, y1, x2, y2, score, class_value), track in zip(det, ids, strict=True):
        class_id = int(round(class_value))
        color = track_color(int(track)) if track >= 0 else class_color(class_id)
        left, top = _pixel(x1, width), _pixel(y1, height)
        right, bottom = max(left, _pixel(x2, width) - 1), max(top, _pixel(y2, height) - 1)
        cv2.rectangle(canvas, (left, top), (right, bottom), color, line)

        name = labels[class_id] if 0 <= class_id < len(labels) else str(class_id)
        text = f"#{int(track)} {name} {score:.2f}" if track >= 0 else f"{name} {score:.2f}"
        (text_w, text_h), baseline = cv2.getTextSize(text, _FONT, font_scale, font_thickness)
        pad = max(1, round(text_h * 0.3))
        tag_w, tag_h = text_w + 2 * pad, text_h + baseline + pad
        tag_left = min(max(0, left - line // 2), max(0, width - tag_w))
        tag_top = top - line // 2 - tag_h
        if tag_top < 0:  # no room above the box: put the tag inside its top edge
            tag_top = top
        tag_top = min(max(0, tag_top), max(0, height - tag_h))
        cv2.rectangle(
            canvas, (tag_left, tag_top), (tag_left + tag_w - 1, tag_top + tag_h - 1), color, -1
        )
        luminance = 0.299 * color[0] + 0.587 * color[1] + 0.114 * color[2]
        text_color = (0, 0, 0) if luminance > 150 else (255, 255, 255)
        cv2.putText(
            canvas,
            text,
            (tag_left + pad, tag_top + pad + text_h),
            _FONT,
            font_scale,
            text_color,
            font_thickness,
            cv2.LINE_AA,
        )
    return canvas


def track_color(track_id: int) -> tuple[int, int, int]:
    """A stable RGB colour for a track: as :func:`class_color`, offset so that a track
    and a class of the same number differ."""
    return class_color(track_id * 7 + 3)


def draw_trails(
    image_rgb: np.ndarray, trails: dict[int, Sequence[tuple[float, float]]]
) -> np.ndarray:
    """``image_rgb`` (drawn on in place and returned) with each track's recent path, a
    line through its box centres (pixels of this image) in the track's colour."""
    height, width = image_rgb.shape[:2]
    line = max(1, round((height + width) / 2 * 0.002))
    for track, points in trails.items():
        if len(points) < 2:
            continue
        path = np.array([(_pixel(x, width), _pixel(y, height)) for x, y in points], np.int32)
        cv2.polylines(image_rgb, [path], False, track_color(track), line, cv2.LINE_AA)
    return image_rgb


def _pixel(coordinate: float, limit: int) -> int:
    """Nearest pixel edge index of a continuous coordinate, kept inside ``0..limit``."""
    return int(min(max(round(coordinate), 0), limit))
