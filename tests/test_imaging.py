"""Decoding, resizing, JPEG encoding and drawing, on images built in the test."""

from __future__ import annotations

import io
import struct
import time
import tracemalloc
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps

from ensemble import contract, imaging
from ensemble.imaging import ImageError, decode_image

pytestmark = pytest.mark.unit

# Four distinct colours, so a swapped channel order or a flipped axis shows.
PATTERN = np.array(
    [
        [[255, 0, 0], [0, 255, 0], [0, 0, 255]],
        [[255, 255, 0], [0, 255, 255], [40, 80, 120]],
    ],
    dtype=np.uint8,
)


def encode_with_pillow(array: np.ndarray, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, fmt, **params)
    return buffer.getvalue()


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def forged_png(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width x height`` RGB pixels, with a tiny IDAT."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + png_chunk(b"IEND", b"")
    )


# --- decode -------------------------------------------------------------------


@pytest.mark.parametrize(
    "fmt, params",
    [("PNG", {}), ("BMP", {}), ("WEBP", {"lossless": True}), ("TIFF", {}), ("PPM", {})],
)
def test_lossless_formats_decode_to_the_exact_rgb_pixels(fmt, params):
    decoded = decode_image(encode_with_pillow(PATTERN, fmt, **params))
    assert decoded.dtype == np.uint8
    np.testing.assert_array_equal(decoded, PATTERN)


def test_jpeg_decodes_to_rgb_in_the_right_channel_order():
    image = np.zeros((32, 48, 3), np.uint8)
    image[:, :16] = (220, 30, 30)
    image[:, 16:32] = (30, 220, 30)
    image[:, 32:] = (30, 30, 220)
    decoded = decode_image(encode_with_pillow(image, "JPEG", quality=95))
    assert decoded.shape == (32, 48, 3)
    for block in range(3):
        mean = decoded[:, block * 16 + 4 : block * 16 + 12].reshape(-1, 3).mean(axis=0)
        assert np.argmax(mean) == block
        np.testing.assert_allclose(mean, image[0, block * 16], atol=8)


def test_cmyk_jpeg_decodes_to_rgb():
    buffer = io.BytesIO()
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(buffer, "JPEG", quality=95)  # red
    np.testing.assert_allclose(decode_image(buffer.getvalue())[4, 4], [255, 0, 0], atol=6)


def test_gif_which_opencv_cannot_read_decodes_through_pillow():
    decoded = decode_image(encode_with_pillow(PATTERN, "GIF"))
    np.testing.assert_array_equal(decoded, PATTERN)


def test_grayscale_png_gives_three_equal_channels():
    gray = np.array([[0, 100], [200, 255]], np.uint8)
    decoded = decode_image(encode_with_pillow(gray, "PNG"))
    assert decoded.shape == (2, 2, 3)
    for channel in range(3):
        np.testing.assert_array_equal(decoded[..., channel], gray)


def test_rgba_png_drops_alpha_by_compositing_on_white():
    rgba = np.array(
        [[[200, 10, 10, 255], [0, 0, 0, 0], [0, 0, 255, 128]]],
        dtype=np.uint8,
    )
    decoded = decode_image(encode_with_pillow(rgba, "PNG"))
    assert decoded.shape == (1, 3, 3)
    np.testing.assert_array_equal(decoded[0, 0], [200, 10, 10])  # opaque: unchanged
    np.testing.assert_array_equal(decoded[0, 1], [255, 255, 255])  # transparent black: white
    # half-covered blue over white: 255 * (1 - 128/255) = 127 in red and green
    np.testing.assert_allclose(decoded[0, 2], [127, 127, 255], atol=1)


def test_opaque_rgba_png_keeps_its_colours():
    rgba = np.concatenate([PATTERN, np.full((2, 3, 1), 255, np.uint8)], axis=2)
    np.testing.assert_array_equal(decode_image(encode_with_pillow(rgba, "PNG")), PATTERN)


def test_gray_with_alpha_png_is_composited_on_white():
    gray_alpha = np.array([[[50, 255], [50, 0]]], dtype=np.uint8)
    decoded = decode_image(encode_with_pillow(gray_alpha, "PNG"))
    np.testing.assert_array_equal(decoded[0], [[50, 50, 50], [255, 255, 255]])


def test_alpha_is_composited_exactly_for_every_colour_and_alpha():
    colour, alpha = np.meshgrid(np.arange(256), np.arange(256), indexing="ij")
    rgba = np.stack([colour, 255 - colour, colour // 2, alpha], axis=2).astype(np.uint8)
    decoded = decode_image(encode_with_pillow(rgba, "PNG"))
    coverage = (alpha / 255)[..., None]
    over_white = 255 * (1 - coverage) + rgba[..., :3] * coverage
    np.testing.assert_array_equal(decoded, np.rint(over_white).astype(np.uint8))


def test_compositing_a_large_rgba_image_takes_little_more_memory_than_the_result():
    # Found by tests/test_fuzz_images.py: float math over the whole image took 56 bytes
    # a pixel (2 GB and 10-25 s for a forged 40 Mpx header); now about 10.
    height, width = 1000, 2000
    y, x = np.mgrid[0:height, 0:width]
    rgba = np.stack([x % 256, y % 256, (x + y) % 256, (7 * x + y) % 256], axis=2)
    data = encode_with_pillow(rgba.astype(np.uint8), "PNG", compress_level=1)
    tracemalloc.start()  # numpy's and OpenCV's arrays are allocated where it sees them
    try:
        decode_image(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # The decoded RGBA (4 bytes a pixel), the result (3) and the bands' scratch.
    assert peak / (height * width) < 16


def test_palette_png_with_transparent_index_is_composited_on_white():
    palette_image = Image.new("P", (2, 1))
    palette_image.putpalette([0, 0, 0, 10, 200, 30] + [0] * (256 * 3 - 6))
    palette_image.putpixel((0, 0), 0)
    palette_image.putpixel((1, 0), 1)
    buffer = io.BytesIO()
    palette_image.save(buffer, "PNG", transparency=0)
    decoded = decode_image(buffer.getvalue())
    np.testing.assert_array_equal(decoded[0], [[255, 255, 255], [10, 200, 30]])


def test_16_bit_png_is_scaled_to_8_bit():
    # 257 * v is the 16-bit value that means the same as 8-bit v.
    wide = np.array([[[0, 65535, 257 * 100], [257 * 7, 257 * 250, 65535]]], np.uint16)
    ok, png = cv2.imencode(".png", wide[..., ::-1])  # OpenCV writes BGR
    assert ok
    decoded = decode_image(png.tobytes())
    assert decoded.dtype == np.uint8
    np.testing.assert_array_equal(decoded[0], [[0, 255, 100], [7, 250, 255]])


def test_16_bit_grayscale_png_is_scaled_to_8_bit():
    gray = np.array([[0, 257 * 60, 65535]], np.uint16)
    ok, png = cv2.imencode(".png", gray)
    assert ok
    np.testing.assert_array_equal(decode_image(png.tobytes())[0, :, 0], [0, 60, 255])


def test_one_pixel_image_decodes():
    pixel = np.array([[[9, 99, 199]]], np.uint8)
    np.testing.assert_array_equal(decode_image(encode_with_pillow(pixel, "PNG")), pixel)


def oriented_jpeg(pixels: np.ndarray, orientation: int, quality: int) -> tuple[bytes, np.ndarray]:
    """``pixels`` as a JPEG with an EXIF orientation tag, and the upright image Pillow
    shows for it (``exif_transpose``)."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=quality, exif=exif)
    data = buffer.getvalue()
    upright = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")
    return data, np.asarray(upright)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_like_pillow_exif_transpose(orientation):
    # Large flat blocks so JPEG loss stays small; 16x32 so a rotation changes the shape.
    blocks = np.kron(PATTERN[:, :2], np.ones((8, 16, 1), np.uint8))
    data, expected = oriented_jpeg(blocks, orientation, quality=98)
    decoded = decode_image(data)
    assert decoded.shape == expected.shape
    assert np.abs(decoded.astype(int) - expected.astype(int)).mean() < 3


def test_empty_bytes_are_rejected():
    with pytest.raises(ImageError, match="empty"):
        decode_image(b"")


@pytest.mark.parametrize("data", [b"<html>not found</html>", b"hello", b"\x00" * 100])
def test_bytes_that_are_not_an_image_raise_a_useful_message(data):
    with pytest.raises(ImageError, match="not an image") as caught:
        decode_image(data)
    assert "PNG" in str(caught.value) and f"{len(data)} bytes" in str(caught.value)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_file_is_rejected(fmt):
    noise = np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)
    data = encode_with_pillow(noise, fmt)
    with pytest.raises(ImageError, match="truncated"):
        decode_image(data[: len(data) // 2])


def test_forged_30000x30000_png_header_is_rejected_before_decoding(monkeypatch):
    def must_not_decode(*args, **kwargs):
        raise AssertionError("decoded an image whose header is over the limit")

    monkeypatch.setattr(imaging.cv2, "imdecode", must_not_decode)
    start = time.perf_counter()
    with pytest.raises(ImageError, match="too large") as caught:
        decode_image(forged_png(30000, 30000))
    assert time.perf_counter() - start < 1.0
    assert "900.0 megapixels" in str(caught.value)


def test_header_just_over_the_pixel_limit_is_rejected_with_its_size(monkeypatch):
    monkeypatch.setattr(imaging.cv2, "imdecode", lambda *a, **k: pytest.fail("decoded"))
    # 8000x6000 = 48 Mpx: over our 40 Mpx limit, under Pillow's own bomb check.
    assert contract.MAX_IMAGE_PIXELS < 8000 * 6000
    with pytest.raises(ImageError, match="8000x6000 pixels"):
        decode_image(forged_png(8000, 6000))


def test_max_pixels_bounds_are_inclusive():
    data = encode_with_pillow(np.zeros((100, 100, 3), np.uint8), "PNG")
    assert decode_image(data, max_pixels=10_000).shape == (100, 100, 3)
    with pytest.raises(ImageError, match="100x100"):
        decode_image(data, max_pixels=9_999)


def test_zero_width_header_is_rejected():
    with pytest.raises(ImageError):
        decode_image(forged_png(0, 5))


def test_a_side_longer_than_a_jpeg_holds_is_rejected_though_under_the_pixel_limit():
    # Found by tests/test_fuzz_images.py: a 65501x1 TIFF decoded, then the server failed
    # to encode the annotated JPEG (INTERNAL) instead of refusing the image up front.
    longest = imaging.MAX_IMAGE_SIDE
    for shape in ((1, longest + 1, 3), (longest + 1, 1, 3)):
        with pytest.raises(ImageError, match=f"at most {longest} pixels"):
            decode_image(encode_with_pillow(np.zeros(shape, np.uint8), "TIFF"))
    image = decode_image(encode_with_pillow(np.zeros((1, longest, 3), np.uint8), "TIFF"))
    assert imaging.encode_jpeg(image)  # the longest side accepted can be annotated


@pytest.mark.parametrize("where", ["IDAT", "after the pixels"])
def test_png_chunk_claiming_more_bytes_than_the_file_holds_is_rejected_unread(monkeypatch, where):
    # Found by tests/test_fuzz_images.py: OpenCV's PNG reader (IDAT) and libpng (a text
    # chunk after the pixels) allocated and zero-filled the declared 2 GiB, for seconds.
    # Pillow's header reader catches such chunks before the pixels by itself.
    data = encode_with_pillow(np.zeros((8, 8, 3), np.uint8), "PNG")
    idat, iend = data.index(b"IDAT") - 4, data.index(b"IEND") - 4
    if where == "IDAT":
        kind, forged = "IDAT", data[:idat] + struct.pack(">I", 2**31 - 1) + data[idat + 4 :]
    else:
        cut_short = struct.pack(">I4s", 2**31 - 1, b"zTXt") + b"comment\0\0"
        kind, forged = "zTXt", data[:iend] + cut_short + data[iend:]
    monkeypatch.setattr(imaging.cv2, "imdecode", lambda *a, **k: pytest.fail("decoded"))
    with pytest.raises(ImageError, match=f"chunk '{kind}' .* claims 2147483647 bytes"):
        decode_image(forged)


def _flood(fmt: str, count: int) -> bytes:
    """A small image with ``count`` empty pieces before its pixels: PNG chunks, JPEG
    comment segments or fill bytes, GIF comment extensions."""
    data = encode_with_pillow(np.zeros((8, 8, 3), np.uint8), fmt.split()[0])
    if fmt == "PNG":
        idat = data.index(b"IDAT") - 4
        return data[:idat] + png_chunk(b"tEXt", b"a\0b") * count + data[idat:]
    if fmt == "JPEG":
        return data[:2] + b"\xff\xfe\x00\x02" * count + data[2:]
    if fmt == "JPEG fill":
        return data[:2] + b"\xff" * count + data[2:]
    first_block = 13 + 3 * 2 ** ((data[10] & 7) + 1)  # after the global colour table
    return data[:first_block] + b"\x21\xfe\x00" * count + data[first_block:]


@pytest.mark.parametrize(
    "fmt, piece_bytes, message",
    [
        ("PNG", 15, "more than 65536 PNG chunks"),
        ("JPEG", 4, "more than 4096 segments and fill bytes"),
        ("JPEG fill", 1, "more than 4096 segments and fill bytes"),
        ("GIF", 3, "more than 4096 extension blocks"),
    ],
)
def test_a_flood_of_empty_header_pieces_is_rejected_in_a_blink(fmt, piece_bytes, message):
    # Found by tests/test_fuzz_images.py: Pillow walks these in Python before the pixels,
    # GIF comments in quadratic time; 8 MiB of them took it 3 s to minutes.
    assert decode_image(_flood(fmt, 1000)).shape == (8, 8, 3)  # real files have a few
    flood = _flood(fmt, 8 * 2**20 // piece_bytes)
    start = time.perf_counter()
    with pytest.raises(ImageError, match=message):
        decode_image(flood)
    assert time.perf_counter() - start < 1.0


# --- resize and encode ----------------------------------------------------------


def test_resize_stretches_without_keeping_aspect_ratio():
    image = np.zeros((100, 300, 3), np.uint8)
    resized = imaging.resize(image, 416, 416)
    assert resized.shape == (416, 416, 3) and resized.dtype == np.uint8


def test_resize_interpolates_bilinearly_at_pixel_centres():
    row = np.array([[[0], [255]]], np.uint8).repeat(3, axis=2)  # 1x2 image
    resized = imaging.resize(row, 4, 1)
    # Target centres map to source x = -0.25, 0.25, 0.75, 1.25 (edges clamp):
    # 0, 0.25 * 255, 0.75 * 255, 255. Nearest neighbour would give 0, 0, 255, 255.
    np.testing.assert_allclose(resized[0, :, 0], [0, 63.75, 191.25, 255], atol=1)


def test_jpeg_round_trip_keeps_the_mean_colour():
    y, x = np.mgrid[0:120, 0:160]
    image = np.stack([x * 255 // 159, y * 255 // 119, np.full_like(x, 90)], axis=2)
    image = image.astype(np.uint8)
    jpeg = imaging.encode_jpeg(image, quality=90)
    assert jpeg[:2] == b"\xff\xd8"
    decoded = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"))  # independent decoder
    assert decoded.shape == image.shape
    np.testing.assert_allclose(
        decoded.reshape(-1, 3).mean(axis=0), image.reshape(-1, 3).mean(axis=0), atol=2
    )


def test_jpeg_quality_changes_the_size():
    noise = np.random.default_rng(1).integers(0, 255, (64, 64, 3), np.uint8)
    assert len(imaging.encode_jpeg(noise, quality=30)) < len(imaging.encode_jpeg(noise, 95))


# --- draw ----------------------------------------------------------------------

LABELS = contract.COCO80_LABELS
GRAY = 128


def changed(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    return np.any(before != after, axis=2)


def test_draw_changes_pixels_on_the_box_edges_and_not_far_from_them():
    image = np.full((400, 400, 3), GRAY, np.uint8)
    box = np.array([[100, 150, 300, 350, 0.92, 0]])
    mask = changed(image, imaging.draw_detections(image, box, LABELS))
    # edges, at their middles (away from the label)
    assert mask[250, 100] and mask[250, 299] and mask[349, 200] and mask[150, 200]
    # inside the box, and well outside it
    assert not mask[250, 200].any() and not mask[200:330, 120:280].any()
    assert not mask[:, :90].any() and not mask[:, 310:].any() and not mask[360:].any()
    # the label sits just above the box, not far above
    assert mask[130:150, 100:160].any() and not mask[:100].any()


def test_draw_leaves_the_input_untouched_and_an_empty_list_changes_nothing():
    image = np.full((50, 60, 3), GRAY, np.uint8)
    drawn = imaging.draw_detections(image, np.array([[5, 5, 40, 40, 0.5, 2]]), LABELS)
    assert (image == GRAY).all() and changed(image, drawn).any()
    unchanged = imaging.draw_detections(image, np.zeros((0, 6), np.float32), LABELS)
    np.testing.assert_array_equal(unchanged, image)


def test_draw_uses_the_class_colour():
    image = np.full((200, 200, 3), GRAY, np.uint8)
    drawn = imaging.draw_detections(image, np.array([[50, 50, 150, 150, 0.9, 15]]), LABELS)
    assert tuple(drawn[100, 50]) == imaging.class_color(15)


def test_class_colours_are_stable_and_distinct():
    colours = [imaging.class_color(c) for c in range(80)]
    assert colours == [imaging.class_color(c) for c in range(80)]
    assert len(set(colours)) == 80
    # neighbouring ids, which often co-occur, differ clearly
    for a, b in zip(colours, colours[1:], strict=False):
        assert max(abs(x - y) for x, y in zip(a, b, strict=True)) > 40


def test_label_of_a_box_at_the_top_edge_goes_inside_the_box():
    image = np.full((300, 300, 3), GRAY, np.uint8)
    drawn = imaging.draw_detections(image, np.array([[0, 0, 200, 200, 0.9, 0]]), LABELS)
    mask = changed(image, drawn)
    assert mask[6:12, 20:40].all()  # the filled tag just below the top edge


def test_label_of_a_box_at_the_right_edge_is_shifted_left_to_stay_inside():
    image = np.full((300, 300, 3), GRAY, np.uint8)
    box = np.array([[280, 100, 300, 200, 0.9, 0]])  # "person 0.90" is wider than 20 px
    mask = changed(image, imaging.draw_detections(image, box, LABELS))
    tag_rows = mask[85:97]
    assert tag_rows[:, 255:280].all(axis=1).any()  # the tag reaches left of the box
    assert tag_rows[:, 299].any()  # and ends at the image edge


def test_line_width_and_text_grow_with_the_image():
    def drawn_mask(size: int) -> np.ndarray:
        image = np.full((size, size, 3), GRAY, np.uint8)
        box = np.array([[size * 0.25, size * 0.25, size * 0.75, size * 0.75, 0.9, 0]])
        return changed(image, imaging.draw_detections(image, box, LABELS))

    small, large = drawn_mask(64), drawn_mask(4000)
    small_line = small[40, :24].sum()  # a row crossing the left edge below the label
    large_line = large[2500, :1500].sum()
    assert 1 <= small_line <= 2 and large_line >= 8
    # the label is readable on the small image: it spans several pixel rows
    assert small[:16, 16:].any(axis=1).sum() >= 5


# --- decoding only as large as needed ------------------------------------------------


@pytest.mark.parametrize(
    ("width", "height", "min_side", "factor"),
    [
        (6000, 4000, 0, 1),  # 0: full size asked for
        (6000, 4000, 1024, 4),  # 1500 >= 1024, 750 is not
        (6000, 4000, 750, 8),
        (6000, 4000, 751, 4),  # ceil(6000 / 8) = 750 < 751
        (4000, 6000, 1500, 4),  # the longest side counts, portrait too
        (1000, 800, 1024, 1),  # already smaller than asked: full size
    ],
)
def test_reduction_keeps_the_longest_side_at_least_min_side(width, height, min_side, factor):
    assert imaging.reduction(width, height, min_side) == factor


def test_reduction_rounds_the_reduced_side_up():
    assert imaging.reduction(2049, 100, 1025) == 2  # ceil(2049 / 2) = 1025


def gradient_photo(height: int, width: int) -> np.ndarray:
    """A smooth RGB picture (so JPEG and area averaging agree closely)."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 255 // width, y * 255 // height, (x + y) * 127 // (width + height)],
                    axis=2).astype(np.uint8)  # fmt: skip


def test_a_large_jpeg_decodes_reduced_and_reports_its_full_size():
    photo = gradient_photo(1200, 2000)
    data = encode_with_pillow(photo, "JPEG", quality=95)
    pixels, original = imaging.decode_scaled(data, 500)
    assert original == (1200, 2000)
    assert pixels.shape == (300, 500, 3)  # 1/4: 500 >= 500, 1/8 would be 250
    expected = cv2.resize(photo, (500, 300), interpolation=cv2.INTER_AREA)
    assert np.abs(pixels.astype(int) - expected.astype(int)).mean() < 3
    full, original = imaging.decode_scaled(data, 0)
    assert full.shape == (1200, 2000, 3) and original == (1200, 2000)


def test_a_large_png_is_shrunk_after_decoding_to_the_same_size_a_jpeg_would_have():
    photo = gradient_photo(1001, 2001)
    pixels, original = imaging.decode_scaled(encode_with_pillow(photo, "PNG"), 250)
    assert original == (1001, 2001)
    assert pixels.shape == (126, 251, 3)  # 1/8: ceil(1001 / 8), ceil(2001 / 8) >= 250
    expected = cv2.resize(photo, (251, 126), interpolation=cv2.INTER_AREA)
    assert np.abs(pixels.astype(int) - expected.astype(int)).max() <= 1


@pytest.mark.parametrize("orientation", [1, 6, 8])
def test_a_reduced_decode_applies_the_exif_orientation_and_reports_the_upright_size(
    orientation,
):
    blocks = np.kron(PATTERN[:, :2], np.ones((400, 800, 1), np.uint8))  # 800 x 1600
    data, upright = oriented_jpeg(blocks, orientation, quality=95)
    pixels, original = imaging.decode_scaled(data, 400)  # 1/4
    assert original == upright.shape[:2]
    assert pixels.shape[:2] == (upright.shape[0] // 4, upright.shape[1] // 4)
    expected = cv2.resize(upright, pixels.shape[1::-1], interpolation=cv2.INTER_AREA)
    assert np.abs(pixels.astype(int) - expected.astype(int)).mean() < 4


def test_a_reduced_decode_still_refuses_what_a_full_one_refuses():
    with pytest.raises(ImageError, match="megapixels"):
        imaging.decode_scaled(forged_png(10_000, 10_000), 1024)
    with pytest.raises(ImageError, match="not an image"):
        imaging.decode_scaled(b"junk" * 100, 1024)


@pytest.mark.parametrize(
    ("shape", "max_side", "expected"),
    [
        ((4000, 6000), 1280, (853, 1280)),  # 4000 * 1280 / 6000 = 853.3
        ((6000, 4000), 1280, (1280, 853)),
        ((300, 200), 1280, (300, 200)),  # never enlarged
        ((4000, 6000), 0, (4000, 6000)),  # 0: as it is
    ],
)
def test_fit_within_scales_down_to_the_longest_side_keeping_the_aspect(shape, max_side, expected):
    image = np.zeros((*shape, 3), np.uint8)
    assert imaging.fit_within(image, max_side).shape[:2] == expected


def test_fit_within_gives_a_reduced_decode_the_size_the_photo_itself_would_get():
    # a 4446 x 3000 photo decoded at 1/4 is 1112 x 750 (sides rounded up)
    reduced = np.zeros((750, 1112, 3), np.uint8)
    assert imaging.fit_within(reduced, 1000).shape[:2] == (674, 1000)  # its own aspect
    assert imaging.fit_within(reduced, 1000, (3000, 4446)).shape[:2] == (675, 1000)
