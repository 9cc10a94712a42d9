"""Fuzzing the image decoder: damaged and forged image files (tests/fuzz_cases.py)
never get past ``ensemble.imaging.decode_image`` as anything but a clear error.

Thousands of cases: each either decodes to a ``uint8`` RGB array within the pixel
limit, which the annotation step can encode as JPEG, or raises
:class:`~ensemble.imaging.ImageError`; any other exception, a case that takes a second,
or one that grows the process far beyond what the pixel limit allows, fails. The same
cases against the server: test_fuzz_images_server.
"""

from __future__ import annotations

import re
import time
import warnings
import zlib
from collections import Counter

import numpy as np
import pytest

from ensemble.imaging import ImageError, decode_image, encode_jpeg
from tests.fuzz_cases import BASE_SIZE, FORMATS, MUTATIONS, Case, base_files, fuzz_cases

pytestmark = pytest.mark.unit

# The unit cases decode with this pixel limit instead of the contract's 40 Mpx: a forged
# header just under the limit makes the decoders allocate and fill that many pixels,
# which at 40 Mpx takes up to a second a case. The limit works the same at any value.
FUZZ_MAX_PIXELS = 2**20

# --- through decode_image ------------------------------------------------------------------

# A case may raise the process's peak memory by this much a pixel the limit allows, plus
# a fixed slack (bytes). Decoding to RGBA and compositing take about 8 bytes a pixel;
# float compositing took 50, and a PNG chunk's forged length made OpenCV take 2 GiB.
BYTES_PER_PIXEL = 16
MEMORY_SLACK = 16 * 2**20
# No case may take this long (seconds); zero-filling that forged length took three.
CASE_SECONDS = 1.0


def _status_bytes(field: str) -> int:
    """A memory figure of this process from ``/proc/self/status``, in bytes."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024  # the file says kB
    raise AssertionError(f"no {field} in /proc/self/status")


def _reset_peak_memory() -> int:
    """Set Linux's record of this process's peak resident memory (VmHWM) to what it
    uses now, and return that (bytes): the next peak is then one case's."""
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")
    return _status_bytes("VmRSS")


def check_case(case: Case, max_pixels: int) -> tuple[str, str | None]:
    """Decode one case: ``("decoded" | "refused" | "crashed", what broke the contract
    or None)``."""
    before = _reset_peak_memory()
    started = time.perf_counter()
    problem = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow warns about each corrupt file it reads
            image = decode_image(case.data, max_pixels)
    except ImageError as error:
        outcome = "refused"
        if not str(error) or "\n" in str(error):
            problem = f"unclear message {str(error)!r}"
    except Exception as error:  # the contract: ImageError and nothing else
        return "crashed", f"{type(error).__name__}: {error}"
    else:
        outcome = "decoded"
        height, width = image.shape[:2]
        if not (
            image.dtype == np.uint8
            and image.shape == (height, width, 3)
            and 0 < height * width <= max_pixels
            and image.flags.c_contiguous
        ):
            problem = f"decoded to {image.dtype} {image.shape}"
        else:
            try:
                encode_jpeg(image)  # the server annotates what it decodes, as JPEG
            except Exception as error:
                problem = f"decodes to {image.shape} but cannot be annotated: {error}"
    seconds = time.perf_counter() - started
    grown = _status_bytes("VmHWM") - before
    if seconds > CASE_SECONDS:
        problem = f"took {seconds:.1f} s"
    if grown > BYTES_PER_PIXEL * max_pixels + MEMORY_SLACK:
        problem = f"raised the peak memory by {grown / 2**20:.0f} MiB"
    return outcome, problem


@pytest.mark.parametrize("fmt", FORMATS)
def test_damaged_and_forged_files_decode_within_the_limit_or_raise_image_error(fmt):
    for name, data in base_files()[fmt].items():  # undamaged, they decode as made
        turned = "exif" in name  # orientation 6: a quarter turn
        height, width = BASE_SIZE if turned else BASE_SIZE[::-1]
        assert decode_image(data, FUZZ_MAX_PIXELS).shape == (height, width, 3), name
    cases = fuzz_cases(fmt, FUZZ_MAX_PIXELS)
    outcomes: Counter[tuple[str, str]] = Counter()
    problems = []
    for case in cases:
        outcome, problem = check_case(case, FUZZ_MAX_PIXELS)
        outcomes[case.mutation, outcome] += 1
        if problem:
            problems.append(f"{case.name}: {problem}")
    print(f"{fmt}: {len(cases)} cases", dict(sorted(outcomes.items())))  # shown by -s
    assert not problems, f"{len(problems)} of {len(cases)} cases:\n" + "\n".join(problems[:30])
    # The damage reaches the decoders: many cases still decode, many do not.
    decoded = sum(n for (_, outcome), n in outcomes.items() if outcome == "decoded")
    assert 0.05 < decoded / len(cases) < 0.95, outcomes


# How decode_image words a refusal for size.
SIZE_REFUSAL = re.compile(r"megapixels|a side may be at most")


@pytest.mark.parametrize("fmt", FORMATS)
def test_forged_sizes_over_the_limit_reach_the_size_check(fmt):
    # Guards the forgeries: a forged size that never reached the header reader would
    # make the test above prove nothing about sizes.
    refused_for_size = Counter()
    for case in fuzz_cases(fmt, FUZZ_MAX_PIXELS):
        if case.mutation == "forge" and "(over the limit)" in case.what:
            with pytest.raises(ImageError) as refused, warnings.catch_warnings():
                warnings.simplefilter("ignore")
                decode_image(case.data, FUZZ_MAX_PIXELS)
            refused_for_size[case.base] += bool(SIZE_REFUSAL.search(str(refused.value)))
    assert set(refused_for_size) == set(base_files()[fmt])
    assert all(refused_for_size.values()), refused_for_size


def test_the_cases_are_the_same_on_every_run():
    first = [(c.name, zlib.crc32(c.data)) for fmt in FORMATS for c in fuzz_cases(fmt, 10**6)]
    base_files.cache_clear()
    again = [(c.name, zlib.crc32(c.data)) for fmt in FORMATS for c in fuzz_cases(fmt, 10**6)]
    assert first == again
    kinds = Counter(name.split(": ")[0].split("/")[2] for name, _ in first)
    assert set(kinds) == set(MUTATIONS) and min(kinds.values()) > 500, kinds
