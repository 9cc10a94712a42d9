"""Damaged and forged image files for the fuzz tests (test_fuzz_images: through
``ensemble.imaging.decode_image``; test_fuzz_images_server: through the server).

Real JPEG, PNG, WebP, BMP, TIFF and GIF files, made from the bundled test photos at a
small size, are damaged in four ways: bit flips, overwritten byte ranges, truncation,
and forged header fields (each format's width and height set to huge, zero and
negative-looking values, wrong chunk and marker lengths, impossible sample layouts).
Every case comes from a seeded generator, so a failure names a case that comes back
on the next run.
"""

from __future__ import annotations

import functools
import io
import math
import random
import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
from PIL import Image

from bench.photos import photo_paths
from ensemble.imaging import MAX_IMAGE_SIDE

FORMATS = ("jpeg", "png", "webp", "bmp", "tiff", "gif")
MUTATIONS = ("bitflip", "overwrite", "truncate", "forge")

# Base images are this small (width, height) so thousands of cases decode in seconds.
BASE_SIZE = (96, 64)

# Random cases of each mutation per base file; the forgeries are a fixed list per base.
RANDOM_CASES = {"bitflip": 70, "overwrite": 70, "truncate": 40}

# Bytes of the floods among the forgeries: many empty chunks, segments, fill bytes or
# comment blocks. Pillow walks each in Python, and GIF comments in quadratic time: at
# this size they took it 2 s (PNG, JPEG) to a minute (GIF) before they were refused.
FLOOD = 4 * 2**20

# Headers sit in the first bytes: half the random damage lands there.
HEADER_BYTES = 128

SEED = "issue-9-fuzz"


@dataclass(frozen=True)
class Case:
    fmt: str  # one of FORMATS
    base: str  # which base file of the format
    mutation: str  # one of MUTATIONS
    what: str  # the exact change, to reproduce a failure by hand
    data: bytes

    @property
    def name(self) -> str:
        return f"{self.fmt}/{self.base}/{self.mutation}: {self.what}"


# --- the base files -------------------------------------------------------------------


def _photo(index: int, mode: str = "RGB") -> Image.Image:
    with Image.open(photo_paths()[index]) as img:
        return img.convert(mode).resize(BASE_SIZE)


def _save(img: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, fmt, **params)
    return buffer.getvalue()


@functools.cache
def base_files() -> dict[str, dict[str, bytes]]:
    """Real files of each format, a few encoder settings each, by format and name."""
    rgb, other, alpha = _photo(1), _photo(0), _photo(2, "RGBA")
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: the EXIF block is parsed and the image turned
    gray16 = Image.fromarray(np.asarray(other.convert("L")).astype(np.uint16) * 257)
    return {
        "jpeg": {
            "baseline+exif": _save(rgb, "JPEG", quality=80, exif=exif.tobytes()),
            "progressive": _save(other, "JPEG", quality=70, progressive=True),
            "gray": _save(other.convert("L"), "JPEG", quality=70),
        },
        "png": {
            "rgb": _save(rgb, "PNG"),
            "rgba": _save(alpha, "PNG"),
            "palette": _save(rgb.quantize(16), "PNG", transparency=0),
            "gray16": _save(gray16, "PNG"),
            "rgb, 1 kB IDATs": _small_idats(_save(rgb, "PNG"), 1024),
        },
        "webp": {
            "lossy": _save(rgb, "WEBP", quality=60),
            "lossless": _save(other, "WEBP", lossless=True),
            "alpha": _save(alpha, "WEBP", quality=60),  # VP8X + ALPH + VP8
        },
        "bmp": {
            "rgb24": _save(rgb, "BMP"),
            "palette8": _save(other.quantize(64), "BMP"),
            "rgba32": _save(alpha, "BMP"),
        },
        "tiff": {
            "raw": _save(rgb, "TIFF"),
            "deflate": _save(other, "TIFF", compression="tiff_deflate"),
            "lzw+alpha": _save(alpha, "TIFF", compression="tiff_lzw"),
        },
        "gif": {
            "photo": _save(rgb, "GIF"),
            "transparent": _save(alpha, "GIF", transparency=0),
            "4 colours": _save(other.quantize(4), "GIF"),  # 2-bit LZW codes
        },
    }


def _small_idats(png: bytes, size: int) -> bytes:
    """The PNG with its pixel data split into IDAT chunks of ``size`` bytes, as some
    encoders write them."""
    idat, length = png_chunks(png)[b"IDAT"]
    body = png[idat + 8 : idat + 8 + length]
    pieces = b"".join(png_chunk(b"IDAT", body[i : i + size]) for i in range(0, length, size))
    return png[:idat] + pieces + png[idat + 12 + length :]


# --- random damage ----------------------------------------------------------------------


def _offset(rng: random.Random, data: bytes) -> int:
    """A byte offset into ``data``, half the time among the header bytes."""
    if rng.random() < 0.5:
        return rng.randrange(min(len(data), HEADER_BYTES))
    return rng.randrange(len(data))


def bitflip(rng: random.Random, data: bytes) -> tuple[str, bytes]:
    out = bytearray(data)
    flips = []
    for _ in range(rng.randint(1, 8)):
        at, bit = _offset(rng, data), rng.randrange(8)
        out[at] ^= 1 << bit
        flips.append(f"{at}.{bit}")
    return f"flip bits (byte.bit) {' '.join(flips)}", bytes(out)


def overwrite(rng: random.Random, data: bytes) -> tuple[str, bytes]:
    at = _offset(rng, data)
    length = min(rng.randint(1, 32), len(data) - at)
    fill = rng.choice(("random", "zero", "0xff"))
    payload = {"random": rng.randbytes(length), "zero": bytes(length), "0xff": b"\xff" * length}
    return f"{length} {fill} bytes at {at}", data[:at] + payload[fill] + data[at + length :]


def truncate(rng: random.Random, data: bytes) -> tuple[str, bytes]:
    keep = _offset(rng, data)
    return f"keep the first {keep} of {len(data)} bytes", data[:keep]


RANDOM_MUTATIONS: dict[str, Callable[[random.Random, bytes], tuple[str, bytes]]] = {
    "bitflip": bitflip,
    "overwrite": overwrite,
    "truncate": truncate,
}


# --- forged header fields ---------------------------------------------------------------

Forgeries = Iterator[tuple[str, bytes]]


def _put(data: bytes, offset: int, layout: str, *values: int) -> bytes:
    out = bytearray(data)
    struct.pack_into(layout, out, offset, *values)
    return bytes(out)


def _insert(data: bytes, offset: int, extra: bytes) -> bytes:
    return data[:offset] + extra + data[offset:]


def forged_sizes(width: int, height: int, limit: int, largest: int) -> list[tuple[int, int]]:
    """Width and height pairs to forge into a header whose fields hold up to ``largest``:
    zero, one, the largest value, sizes just at and just over ``limit`` pixels, and a
    side just longer than a JPEG (the annotated image) holds."""
    side = math.isqrt(limit)
    pairs = [
        (0, height), (width, 0), (0, 0), (1, 1),
        (largest, height), (width, largest), (largest, largest),
        (side, side), (side + 1, side + 1),  # at the limit (allowed), then just over
        (limit // height, height), (limit // height + 1, height),
        (width * 2, height), (width, height + 1),  # a little off: the body no longer fits
        (MAX_IMAGE_SIDE + 1, 1), (1, MAX_IMAGE_SIDE + 1),
    ]  # fmt: skip
    return [(w, h) for w, h in dict.fromkeys(pairs) if w <= largest and h <= largest]


def _size_label(w: int, h: int, limit: int) -> str:
    over = w * h > limit or max(w, h) > MAX_IMAGE_SIDE
    return f"{w}x{h}" + (" (over the limit)" if over else "")


# JPEG ----


_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def jpeg_segments(data: bytes) -> list[tuple[int, int, int]]:
    """(marker, offset of its 0xFF, length field) of each segment up to the scan."""
    segments, at = [], 2
    while at + 4 <= len(data) and data[at] == 0xFF:
        marker, length = data[at + 1], struct.unpack_from(">H", data, at + 2)[0]
        segments.append((marker, at, length))
        if marker == 0xDA:  # start of scan: entropy-coded data follows
            break
        at += 2 + length
    return segments


def jpeg_forgeries(data: bytes, limit: int) -> Forgeries:
    segments = jpeg_segments(data)
    first = {}
    for marker, at, length in segments:
        first.setdefault(0xC0 if marker in _SOF else marker, (at, length))
    sof, sof_length = first[0xC0]
    height, width = struct.unpack_from(">HH", data, sof + 5)
    for w, h in forged_sizes(width, height, limit, 0xFFFF):
        yield f"SOF says {_size_label(w, h, limit)}", _put(data, sof + 5, ">HH", h, w)
    for length in (0, 1, 2, 8, sof_length - 1, sof_length + 1, sof_length + 3, 0xFFFF):
        yield f"SOF length {length}", _put(data, sof + 2, ">H", length)
    for precision in (0, 1, 12, 16, 255):
        yield f"SOF precision {precision}", _put(data, sof + 4, "B", precision)
    components = data[sof + 9]
    for count in sorted({0, 1, 2, 3, 4, 255} - {components}):
        yield f"SOF {count} components", _put(data, sof + 9, "B", count)
    for sampling in (0x00, 0x05, 0x50, 0x44, 0xFF):
        yield f"SOF sampling 0x{sampling:02x}", _put(data, sof + 11, "B", sampling)
    for table in (3, 4, 255):
        yield f"SOF quantisation table {table}", _put(data, sof + 12, "B", table)
    for marker in sorted(_SOF - {data[sof + 1]}):
        yield f"SOF marker 0x{marker:02x}", _put(data, sof + 1, "B", marker)
    second_sof = data[sof : sof + 2 + sof_length]
    second_sof = _put(second_sof, 5, ">HH", 0xFFFF, 0xFFFF)
    scan = first[0xDA][0]
    yield "a second SOF of 65535x65535 before the scan", _insert(data, scan, second_sof)
    dqt, dqt_length = first[0xDB]
    for length in (0, 2, 3, dqt_length - 1, dqt_length + 1, 0xFFFF):
        yield f"DQT length {length}", _put(data, dqt + 2, ">H", length)
    for spec in (0x04, 0x10, 0xF0, 0xFF):
        yield f"DQT precision/id 0x{spec:02x}", _put(data, dqt + 4, "B", spec)
    dht, dht_length = first[0xC4]
    for length in (0, 2, dht_length + 1, 0xFFFF):
        yield f"DHT length {length}", _put(data, dht + 2, ">H", length)
    yield "DHT code counts all 255", _put(data, dht + 5, "16B", *[255] * 16)
    for spec in (0x04, 0x20, 0xFF):
        yield f"DHT class/id 0x{spec:02x}", _put(data, dht + 4, "B", spec)
    sos, sos_length = first[0xDA]
    for length in (0, 2, sos_length + 2, 0xFFFF):
        yield f"SOS length {length}", _put(data, sos + 2, ">H", length)
    for count in (0, 4, 255):
        yield f"SOS {count} components", _put(data, sos + 4, "B", count)
    yield "SOS table selectors 0xff", _put(data, sos + 6, "B", 0xFF)
    spectral = sos + 5 + 2 * data[sos + 4]
    yield "SOS spectral selection 63..0", _put(data, spectral, "BB", 63, 0)
    yield "SOS successive approximation 0xff", _put(data, spectral + 2, "B", 0xFF)
    for interval in (0, 1):
        dri = struct.pack(">HHH", 0xFFDD, 4, interval)
        yield f"DRI restart interval {interval}", _insert(data, 2, dri)
    yield "an APP0 of length 65535", _insert(data, 2, b"\xff\xe0\xff\xff" + b"JFIF\0")
    yield "no EOI", data[:-2]
    yield "two SOIs", b"\xff\xd8" + data
    # Floods: cheap to send, and each piece costs a reader time (see FLOOD).
    yield f"{FLOOD} fill bytes before the first segment", _insert(data, 2, b"\xff" * FLOOD)
    yield (
        f"{FLOOD // 4} empty comment segments",
        _insert(data, 2, b"\xff\xfe\x00\x02" * (FLOOD // 4)),
    )
    exif = data.find(b"Exif\0\0")
    if exif > 0:
        tiff = exif + 6
        order = "<" if data[tiff : tiff + 2] == b"II" else ">"
        ifd = tiff + struct.unpack_from(order + "I", data, tiff + 4)[0]
        for value in (0, 9, 0xFFFF):
            # The single entry is the orientation tag; its SHORT value sits at +8.
            yield f"EXIF orientation {value}", _put(data, ifd + 2 + 8, order + "H", value)
        yield "EXIF entry count 65535", _put(data, ifd, order + "H", 0xFFFF)
        yield "EXIF IFD offset 2**32-1", _put(data, tiff + 4, order + "I", 0xFFFFFFFF)
        yield "EXIF byte order swapped", _put(data, tiff, "2s", b"II" if order == ">" else b"MM")
        yield (
            "EXIF orientation a LONG, 2**30 of them",
            _put(data, ifd + 4, order + "HI", 4, 1 << 30),
        )


# PNG ----


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_chunk_list(data: bytes) -> list[tuple[bytes, int, int]]:
    """Type, offset and length of each chunk."""
    chunks, at = [], 8
    while at + 8 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, at)
        chunks.append((kind, at, length))
        at += 12 + length
    return chunks


def png_chunks(data: bytes) -> dict[bytes, tuple[int, int]]:
    """Offset and length of the first chunk of each type."""
    chunks = {}
    for kind, at, length in png_chunk_list(data):
        chunks.setdefault(kind, (at, length))
    return chunks


def _png_ihdr(data: bytes, ihdr: bytes, fix_crc: bool = True) -> bytes:
    """``data`` with the IHDR body replaced (the CRC recomputed unless told not to)."""
    crc = zlib.crc32(b"IHDR" + ihdr) if fix_crc else struct.unpack_from(">I", data, 29)[0]
    return data[:16] + ihdr + struct.pack(">I", crc) + data[33:]


@functools.cache
def _zlib_bomb() -> bytes:
    """16 MiB of zeros in 16 kB of zlib: more than any chunk of a 96x64 image inflates to,
    and more than Pillow's 1 MiB limit for text and profile chunks."""
    return zlib.compress(bytes(16 * 2**20), 9)


def png_forgeries(data: bytes, limit: int) -> Forgeries:
    chunks = png_chunks(data)
    ihdr = data[16:29]
    width, height, depth, color = struct.unpack_from(">IIBB", ihdr)
    for w, h in forged_sizes(width, height, limit, 0xFFFFFFFF):
        yield f"IHDR says {_size_label(w, h, limit)}", _png_ihdr(data, _put(ihdr, 0, ">II", w, h))
    for w, h in ((0x7FFFFFFF, height), (width, 0x80000000), (0xFFFFFFFF, 0xFFFFFFFF)):
        label = f"IHDR says {_size_label(w, h, limit)}"
        yield label, _png_ihdr(data, _put(ihdr, 0, ">II", w, h))
        yield label + ", stale CRC", _png_ihdr(data, _put(ihdr, 0, ">II", w, h), fix_crc=False)
    for value in sorted({0, 1, 2, 3, 7, 8, 16, 255} - {depth}):
        yield f"IHDR bit depth {value}", _png_ihdr(data, _put(ihdr, 8, "B", value))
    for value in sorted({0, 1, 2, 3, 4, 5, 6, 7, 255} - {color}):
        yield f"IHDR colour type {value}", _png_ihdr(data, _put(ihdr, 9, "B", value))
    for at, name in ((10, "compression"), (11, "filter"), (12, "interlace")):
        for value in (1, 2, 255) if name == "interlace" else (1, 255):
            yield f"IHDR {name} {value}", _png_ihdr(data, _put(ihdr, at, "B", value))
    for length in (0, 12, 14, 0xFFFFFFFF):
        yield f"IHDR length {length}", _put(data, 8, ">I", length)
    idat, idat_length = chunks[b"IDAT"]
    for length in (0, 1, idat_length - 1, idat_length + 1, 0x7FFFFFFF, 0xFFFFFFFF):
        yield f"IDAT length {length}", _put(data, idat, ">I", length)
    for index, (kind, at, _) in enumerate(png_chunk_list(data)):
        label = f"chunk {index} ({kind.decode()}) length 2**31-1"
        yield label, _put(data, at, ">I", 0x7FFFFFFF)
    end = idat + 8 + idat_length
    yield "IDAT CRC wrong", _put(data, end, ">I", struct.unpack_from(">I", data, end)[0] ^ 1)
    for label, body in (
        ("IDAT that inflates to 16 MiB", _zlib_bomb()),
        ("IDAT is an empty zlib stream", zlib.compress(b"")),
        ("IDAT is not zlib", b"\x00" * 64),
    ):
        yield label, data[:idat] + png_chunk(b"IDAT", body) + data[end + 4 :]
    empty = png_chunk(b"quIT", b"")
    yield f"{FLOOD // 12} empty chunks", _insert(data, idat, empty * (FLOOD // 12))
    yield "no IEND", data[:-12]
    yield "IEND length 5", _put(data, len(data) - 12, ">I", 5)
    bomb = _zlib_bomb()
    for label, chunk in (
        ("zTXt that inflates to 16 MiB", png_chunk(b"zTXt", b"Comment\0\0" + bomb)),
        ("iCCP that inflates to 16 MiB", png_chunk(b"iCCP", b"icc\0\0" + bomb)),
        ("eXIf with orientation 6", png_chunk(b"eXIf", _exif_orientation(6))),
        ("eXIf that is garbage", png_chunk(b"eXIf", b"MM\0*garbage")),
        ("acTL of 2**32-1 frames", png_chunk(b"acTL", struct.pack(">II", 0xFFFFFFFF, 0))),
        ("fcTL of 2**32-1 x 2**32-1", png_chunk(b"fcTL", _fctl(0xFFFFFFFF, 0xFFFFFFFF))),
        ("PLTE of 0 entries", png_chunk(b"PLTE", b"")),
        ("PLTE of 257 entries", png_chunk(b"PLTE", bytes(771))),
        ("tRNS of 65535 bytes", png_chunk(b"tRNS", bytes(0xFFFF))),
        ("an unknown critical chunk", png_chunk(b"ABCD", b"x")),
        (
            "a second IHDR of 2**31 x 2**31",
            png_chunk(b"IHDR", _put(ihdr, 0, ">II", 1 << 31, 1 << 31)),
        ),
    ):
        yield label, _insert(data, idat, chunk)
    yield (
        "acTL + fcTL of 2**32-1 x 2**32-1",
        _insert(
            data,
            idat,
            png_chunk(b"acTL", struct.pack(">II", 1, 0)) + png_chunk(b"fcTL", _fctl(0xFFFFFFFF, 1)),
        ),
    )
    if b"PLTE" in chunks:
        plte, plte_length = chunks[b"PLTE"]
        for length in (0, 1, plte_length + 3, 0xFFFFFFFF):
            yield f"PLTE length {length}", _put(data, plte, ">I", length)
        yield "PLTE removed", data[:plte] + data[plte + 12 + plte_length :]


def _exif_orientation(value: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = value
    return exif.tobytes()[6:]  # without the "Exif\0\0" prefix, as a PNG eXIf chunk holds it


def _fctl(width: int, height: int) -> bytes:
    return struct.pack(">IIIIIHHBB", 0, width, height, 0, 0, 1, 1, 0, 0)


# WebP ----


def webp_chunks(data: bytes) -> dict[bytes, tuple[int, int]]:
    """Offset and size of the first chunk of each type (the offset of its fourcc)."""
    chunks, at = {}, 12
    while at + 8 <= len(data):
        kind, size = struct.unpack_from("<4sI", data, at)
        chunks.setdefault(kind, (at, size))
        at += 8 + size + (size & 1)
    return chunks


def webp_forgeries(data: bytes, limit: int) -> Forgeries:
    for size in (0, 4, len(data) - 9, len(data) - 7, 0x7FFFFFFF, 0xFFFFFFFF):
        yield f"RIFF size {size}", _put(data, 4, "<I", size)
    yield "WEBQ instead of WEBP", _put(data, 8, "4s", b"WEBQ")
    chunks = webp_chunks(data)
    first_size = struct.unpack_from("<I", data, 16)[0]
    for size in (0, 1, first_size - 1, first_size + 1, 0xFFFFFFFF):
        yield f"first chunk size {size}", _put(data, 16, "<I", size)
    if b"VP8 " in chunks:
        at = chunks[b"VP8 "][0] + 8  # frame tag (3 bytes), start code (3), width, height
        width, height = (v & 0x3FFF for v in struct.unpack_from("<HH", data, at + 6))
        for w, h in forged_sizes(width, height, limit, 0x3FFF):
            yield f"VP8 frame says {_size_label(w, h, limit)}", _put(data, at + 6, "<HH", w, h)
        yield "VP8 scaling bits set", _put(data, at + 6, "<HH", width | 0xC000, height | 0xC000)
        tag = int.from_bytes(data[at : at + 3], "little")
        for label, value in (
            ("VP8 not a key frame", tag | 1),
            ("VP8 version 7", tag | 0b1110),
            ("VP8 first partition of 0 bytes", tag & 0x1F),
            ("VP8 first partition of 2**19-1 bytes", tag | 0xFFFFE0),
        ):
            yield label, data[:at] + value.to_bytes(3, "little") + data[at + 3 :]
        yield "VP8 start code wrong", _put(data, at + 3, "3B", 0x9D, 0x01, 0x2B)
    if b"VP8L" in chunks:
        at = chunks[b"VP8L"][0] + 8  # signature 0x2f, then 14 bits width-1, 14 height-1
        bits = struct.unpack_from("<I", data, at + 1)[0]
        width, height = (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
        for w, h in forged_sizes(width, height, limit, 0x4000):
            if w and h:
                packed = (bits & ~0xFFFFFFF) | (w - 1) | (h - 1) << 14
                label = f"VP8L says {_size_label(w, h, limit)}"
                yield label, _put(data, at + 1, "<I", packed)
        for version in (1, 7):
            yield f"VP8L version {version}", _put(data, at + 1, "<I", bits | version << 29)
        yield "VP8L signature 0x2e", _put(data, at, "B", 0x2E)
    if b"VP8X" in chunks:
        at = chunks[b"VP8X"][0] + 8  # flags (4 bytes), canvas width-1 (24 bits), height-1
        width = int.from_bytes(data[at + 4 : at + 7], "little") + 1
        height = int.from_bytes(data[at + 7 : at + 10], "little") + 1
        for w, h in forged_sizes(width, height, limit, 1 << 24):
            if w and h:
                canvas = (w - 1).to_bytes(3, "little") + (h - 1).to_bytes(3, "little")
                label = f"VP8X canvas says {_size_label(w, h, limit)}"
                yield label, data[: at + 4] + canvas + data[at + 10 :]
        if b"VP8 " in chunks:  # the canvas must match the frame: forge both
            frame = chunks[b"VP8 "][0] + 8 + 6
            for w, h in forged_sizes(width, height, limit, 0x3FFF):
                if w and h:
                    canvas = (w - 1).to_bytes(3, "little") + (h - 1).to_bytes(3, "little")
                    forged = _put(data[: at + 4] + canvas + data[at + 10 :], frame, "<HH", w, h)
                    yield f"VP8X canvas and VP8 frame say {_size_label(w, h, limit)}", forged
        for flags, label in ((0x02, "animation"), (0x20, "ICC profile"), (0x00, "no alpha")):
            yield f"VP8X flags say {label}", _put(data, at, "B", flags | (data[at] & 0x10))
    if b"ALPH" in chunks:
        at, size = chunks[b"ALPH"]
        for value in (0, 0xFFFFFFFF):
            yield f"ALPH size {value}", _put(data, at + 4, "<I", value)
        for header in (0x03, 0x0C, 0x30, 0xFF):
            yield f"ALPH header 0x{header:02x}", _put(data, at + 8, "B", header)


# BMP ----


def bmp_forgeries(data: bytes, limit: int) -> Forgeries:
    width, height = struct.unpack_from("<ii", data, 18)
    for w, h in forged_sizes(width, height, limit, 0x7FFFFFFF):
        yield f"header says {_size_label(w, h, limit)}", _put(data, 18, "<ii", w, h)
    for w, h in (
        (width, -height),  # top-down rows: a valid file
        (-width, height), (-1, -1),
        (-0x80000000, height), (width, -0x80000000), (-0x80000000, -0x80000000),
    ):  # fmt: skip
        yield f"header says {w}x{h}", _put(data, 18, "<ii", w, h)
    for size in (0, 0xFFFFFFFF):
        yield f"file size {size}", _put(data, 2, "<I", size)
    for offset in (0, 14, 53, len(data), 0xFFFFFFFF):
        yield f"pixel data offset {offset}", _put(data, 10, "<I", offset)
    for size in (0, 12, 16, 39, 52, 56, 64, 108, 124, 0xFFFFFFFF):
        yield f"info header size {size}", _put(data, 14, "<I", size)
    for planes in (0, 2, 0xFFFF):
        yield f"{planes} planes", _put(data, 26, "<H", planes)
    bits = struct.unpack_from("<H", data, 28)[0]
    for value in sorted({0, 1, 2, 4, 8, 16, 24, 32, 48, 64, 0xFFFF} - {bits}):
        yield f"{value} bits a pixel", _put(data, 28, "<H", value)
    for compression in (1, 2, 3, 4, 5, 6, 11, 0xFFFFFFFF):
        yield f"compression {compression}", _put(data, 30, "<I", compression)
    for size in (1, 0xFFFFFFFF):
        yield f"image size field {size}", _put(data, 34, "<I", size)
    for colours in (1, 255, 257, 0xFFFFFFFF):
        yield f"{colours} palette colours", _put(data, 46, "<I", colours)
    yield "all colours important (0xffffffff)", _put(data, 50, "<I", 0xFFFFFFFF)


# TIFF ----

_LONG, _SHORT = 4, 3


def tiff_entries(data: bytes) -> tuple[int, dict[int, int]]:
    """Offset of the first IFD and of each of its entries, by tag (little-endian files)."""
    ifd = struct.unpack_from("<I", data, 4)[0]
    count = struct.unpack_from("<H", data, ifd)[0]
    entries = {}
    for i in range(count):
        at = ifd + 2 + 12 * i
        entries.setdefault(struct.unpack_from("<H", data, at)[0], at)
    return ifd, entries


def _tiff_entry(data: bytes, at: int, tag: int, value: int, kind: int = _LONG) -> bytes:
    """The IFD entry at ``at`` set to ``tag`` = one ``value`` of type ``kind``."""
    value_bytes = struct.pack("<I" if kind == _LONG else "<HH", value, *([0] * (kind == _SHORT)))
    return data[:at] + struct.pack("<HHI", tag, kind, 1) + value_bytes + data[at + 12 :]


def tiff_forgeries(data: bytes, limit: int) -> Forgeries:
    ifd, entries = tiff_entries(data)
    width_at, height_at = entries[256], entries[257]
    width = struct.unpack_from("<H", data, width_at + 8)[0]
    height = struct.unpack_from("<H", data, height_at + 8)[0]
    for w, h in forged_sizes(width, height, limit, 0xFFFFFFFF):
        forged = _tiff_entry(_tiff_entry(data, width_at, 256, w), height_at, 257, h)
        yield f"IFD says {_size_label(w, h, limit)}", forged
    for tag, name, values in (
        (258, "bits a sample", (0, 1, 2, 4, 12, 16, 32, 64, 0xFFFF)),
        (259, "compression", (2, 3, 4, 5, 6, 7, 8, 32773, 34712, 50000, 0xFFFF)),
        (262, "photometric", (0, 1, 3, 4, 5, 6, 8, 9, 10, 32844, 0xFFFF)),
        (277, "samples a pixel", (0, 1, 2, 4, 5, 255, 0xFFFF)),
        (273, "strip offset", (0, len(data), 0xFFFFFFFF)),
        (278, "rows a strip", (0, 1, 0xFFFFFFFF)),
        (279, "strip byte count", (0, 1, 0x7FFFFFFF, 0xFFFFFFFF)),
        (284, "planar configuration", (0, 2, 3)),
    ):
        kind = _LONG if tag in (273, 278, 279) else _SHORT
        for value in values:
            yield f"{name} {value}", _tiff_entry(data, entries[tag], tag, value, kind)
    # Entries the encoder did not write, forged over the planar configuration entry.
    for tag, name, values, kind in (
        (339, "sample format", (2, 3, 0xFFFF), _SHORT),
        (322, "tile width", (0, 16, 0xFFFFFFFF), _LONG),
        (323, "tile length", (0, 0xFFFFFFFF), _LONG),
        (317, "predictor", (2, 3, 0xFFFF), _SHORT),
        (338, "extra samples", (1, 2, 0xFFFF), _SHORT),
        (274, "orientation", (0, 8, 0xFFFF), _SHORT),
        (256, "a second width", (0xFFFFFFFF,), _LONG),
        (257, "a second height", (0xFFFFFFFF,), _LONG),
    ):
        for value in values:
            yield f"{name} {value}", _tiff_entry(data, entries[284], tag, value, kind)
    yield "strip offsets count 2**32-1", _put(data, entries[273] + 4, "<I", 0xFFFFFFFF)
    yield "bits a sample count 2**32-1", _put(data, entries[258] + 4, "<I", 0xFFFFFFFF)
    yield "bits a sample at offset 2**32-16", _put(data, entries[258] + 8, "<I", 0xFFFFFFF0)
    count = struct.unpack_from("<H", data, ifd)[0]
    for value in (0, 1, 0xFFFF):
        yield f"IFD entry count {value}", _put(data, ifd, "<H", value)
    for offset in (0, 1, len(data) - 2, 0xFFFFFFFF):
        yield f"first IFD at {offset}", _put(data, 4, "<I", offset)
    next_ifd = ifd + 2 + 12 * count
    yield "next IFD is the first (a loop)", _put(data, next_ifd, "<I", ifd)
    yield "next IFD at 2**32-1", _put(data, next_ifd, "<I", 0xFFFFFFFF)
    yield "byte order MM", _put(data, 0, "2s", b"MM")
    yield "version 43 (BigTIFF)", _put(data, 2, "<H", 43)


# GIF ----


def gif_blocks(data: bytes) -> dict[str, int]:
    """Offsets of the first graphic control extension and image descriptor."""
    at, found = 13, {}
    if data[10] & 0x80:  # global colour table
        at += 3 << ((data[10] & 7) + 1)
    while at < len(data) and "image" not in found:
        if data[at] == 0x21:  # extension: label, then sub-blocks
            if data[at + 1] == 0xF9:
                found.setdefault("control", at)
            at += 2
            while data[at]:
                at += data[at] + 1
            at += 1
        elif data[at] == 0x2C:
            found["image"] = at
        else:
            break
    return found


def gif_forgeries(data: bytes, limit: int) -> Forgeries:
    width, height = struct.unpack_from("<HH", data, 6)
    for w, h in forged_sizes(width, height, limit, 0xFFFF):
        yield f"screen says {_size_label(w, h, limit)}", _put(data, 6, "<HH", w, h)
    packed = data[10]
    yield "no global colour table flag", _put(data, 10, "B", packed & 0x7F)
    yield "global colour table of 2 entries", _put(data, 10, "B", packed & 0xF8)
    blocks = gif_blocks(data)
    image = blocks["image"]
    for label, fields in (
        ("frame at 65535,65535", (0xFFFF, 0xFFFF, width, height)),
        ("frame of 65535x65535", (0, 0, 0xFFFF, 0xFFFF)),
        ("frame of 0x0", (0, 0, 0, 0)),
        ("frame of twice the screen", (0, 0, 2 * width, 2 * height)),
        ("frame just past the screen's edge", (1, 1, width, height)),
    ):
        yield label, _put(data, image + 1, "<HHHH", *fields)
    yield "frame has a local table of 256 colours", _put(data, image + 9, "B", 0x87)
    code_size_at = image + 10 + (3 << ((data[image + 9] & 7) + 1) if data[image + 9] & 0x80 else 0)
    for size in (0, 1, 9, 12, 13, 255):
        yield f"LZW code size {size}", _put(data, code_size_at, "B", size)
    for length in (0, 255):
        yield f"first data block of {length} bytes", _put(data, code_size_at + 1, "B", length)
    if "control" in blocks:
        control = blocks["control"]
        for size in (0, 255):
            yield f"graphic control block size {size}", _put(data, control + 2, "B", size)
        yield "transparent colour 255", _put(data, control + 6, "B", 255)
    start = 13 + (3 << ((packed & 7) + 1) if packed & 0x80 else 0)  # the first block
    yield f"{FLOOD // 3} empty comments", _insert(data, start, b"\x21\xfe\x00" * (FLOOD // 3))
    comment = b"\x21\xfe" + (b"\xff" + bytes(255)) * (FLOOD // 256) + b"\x00"
    yield f"a comment of {FLOOD // 256} blocks", _insert(data, start, comment)
    yield "no trailer", data[:-1]
    second = _put(data[image:-1], 1, "<HHHH", 0, 0, 0xFFFF, 0xFFFF)
    yield "a second frame of 65535x65535", data[:-1] + second + b";"


FORGERIES: dict[str, Callable[[bytes, int], Forgeries]] = {
    "jpeg": jpeg_forgeries,
    "png": png_forgeries,
    "webp": webp_forgeries,
    "bmp": bmp_forgeries,
    "tiff": tiff_forgeries,
    "gif": gif_forgeries,
}


# --- the cases ---------------------------------------------------------------------------


def fuzz_cases(fmt: str, limit: int) -> list[Case]:
    """Every case of one format: the random damage (seeded per format, base and mutation,
    so one list does not shift when another changes) and the forgeries."""
    cases = []
    for base, data in base_files()[fmt].items():
        for mutation, count in RANDOM_CASES.items():
            rng = random.Random(f"{SEED}/{fmt}/{base}/{mutation}")
            for _ in range(count):
                what, damaged = RANDOM_MUTATIONS[mutation](rng, data)
                cases.append(Case(fmt, base, mutation, what, damaged))
        for what, forged in FORGERIES[fmt](data, limit):
            cases.append(Case(fmt, base, "forge", what, forged))
    return cases
