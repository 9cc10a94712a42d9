"""The web demo over many clip uploads (``bench.clip_uploads``): its temporary files stay
flat. The page runs as users get it (``python -m ui``, its own process) on the test
server; its memory is printed, not asserted (the benchmark's figures)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.clip_uploads import Reading, format_report, run
from ensemble import contract

pytestmark = [pytest.mark.server, pytest.mark.slow]
# Ten uploads pay every lazy set-up (bench.clip_uploads measures growth from the tenth),
# ten more show the count flat; a file kept per upload shows from the second one on.
UPLOADS = 20


def test_twenty_clip_uploads_leave_no_more_temporary_files_than_ten(triton_url, tmp_path):
    result = run(triton_url, Path(tmp_path), UPLOADS, contract.DETECT_ALL, clip_frames=3)
    print(format_report(result))
    assert result["answered"] == UPLOADS
    readings = [Reading(**r) for r in result["readings"]]
    assert len(readings) == UPLOADS
    # After each upload: what the page had before (its example photos) and the
    # session's one result, the annotated clip and its JSON; the uploaded clip itself
    # is gone, and nothing else accumulates.
    assert [r.files for r in readings] == [result["files_before"] + 2] * UPLOADS
    assert result["growth"]["files"] == 0
    assert result["files_after_page_stopped"] == 0  # the page removes its folder at exit
