"""The page's result folders (``ui.results.ResultFolders``): one owner for the photo and
clip tabs' download folders, bounded, and never pruning a folder still being written."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from client import Detection, ImageResult
from ensemble import contract
from ui import photos
from ui.results import CLIP, PHOTO, ResultFolders

pytestmark = pytest.mark.unit

VIEWS = [("x", ImageResult([Detection(1, 2, 3, 4, 0.5, 41, contract.COCO80_LABELS[41])], b"j"))]


def clip_result(folders: ResultFolders, session: str = "") -> Path:
    """A finished clip run's folder, with its file in it."""
    with folders.writing(CLIP, session) as folder:
        (folder / "clip.webm").write_bytes(b"frames")
    return folder


def test_photo_folders_stay_bounded_and_emptied_ones_go(tmp_path):
    folders = ResultFolders(tmp_path, {PHOTO: 3})
    written = [photos.write_downloads(folders, f"p{i}.png", VIEWS, "detect_x") for i in range(5)]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        files[0].parent.name for files in written[-3:]
    )
    for path in written[-1]:  # what the cache sweep does to an old result's files
        path.unlink()
    photos.write_downloads(folders, "p5.png", VIEWS, "detect_x")
    assert written[-1][0].parent not in set(tmp_path.iterdir())
    assert len(list(tmp_path.iterdir())) == 3


def test_a_session_keeps_its_latest_clip_and_each_kind_is_bounded_on_its_own(tmp_path):
    folders = ResultFolders(tmp_path, {CLIP: 3, PHOTO: 3})
    (photo,) = {p.parent for p in photos.write_downloads(folders, "p.png", VIEWS, "detect_x")}
    first = clip_result(folders, "session-a")
    second = clip_result(folders, "session-a")  # the session's next result replaces its last
    assert not first.exists() and second.is_dir()
    others = [clip_result(folders, f"session-{i}") for i in range(5)]
    assert folders.folders(CLIP) == others[-3:]
    assert folders.folders(PHOTO) == [photo]  # the clips' limit counts clips only
    folders.end_session("session-4")  # its page was closed
    assert not others[-1].exists() and len(folders.folders(CLIP)) == 2
    folders.end_session("never-seen")  # nothing to do, no error
    with pytest.raises(RuntimeError, match="the run failed"), folders.writing(CLIP) as failed:
        raise RuntimeError("the run failed")
    assert not failed.exists()  # a failed run leaves no partial result


def test_an_unknown_kind_of_result_is_refused(tmp_path):
    folders = ResultFolders(tmp_path)
    with (
        pytest.raises(ValueError, match="unknown kind of result 'movie'"),
        folders.writing("movie"),
    ):
        pass


ROUNDS = 100


def test_photo_requests_never_remove_a_new_clip_runs_folder(tmp_path):
    """Two photo tabs' requests (each writes its downloads, which prunes) race two clip
    runs (each makes its folder, which stays empty until its first frames are back)
    ``ROUNDS`` times: every clip run waits, its folder still empty, until a photo
    request has pruned, then writes. Every write must find its folder."""
    folders = ResultFolders(tmp_path / "downloads", {PHOTO: 3, CLIP: 3})
    written = threading.Condition()
    photos_written = 0
    clips_done = threading.Event()
    errors: list[BaseException] = []

    def photo_requests(name: str) -> None:
        nonlocal photos_written
        try:
            while not clips_done.is_set():
                photos.write_downloads(folders, f"{name}.png", VIEWS, "detect_x")
                with written:
                    photos_written += 1
                    written.notify_all()
        except Exception as e:
            errors.append(e)

    def clip_runs(session: str) -> None:
        try:
            for _ in range(ROUNDS):
                with folders.writing(CLIP, session) as folder:
                    with written:  # the server answers the first frames meanwhile
                        since = photos_written
                        assert written.wait_for(lambda s=since: photos_written > s, timeout=10)
                    (folder / "clip.webm").write_bytes(b"frames")
        except Exception as e:
            errors.append(e)

    threads = [threading.Thread(target=photo_requests, args=(f"p{i}",)) for i in range(2)]
    clip_threads = [threading.Thread(target=clip_runs, args=(s,)) for s in ("a", "b")]
    for thread in threads + clip_threads:
        thread.start()
    for thread in clip_threads:
        thread.join()
    clips_done.set()
    for thread in threads:
        thread.join()
    assert errors == [], [repr(e) for e in errors]
    # Each session's latest clip is there, whole; the photos stayed within their limit.
    kept = folders.folders(CLIP)
    assert len(kept) == 2 and all((f / "clip.webm").read_bytes() == b"frames" for f in kept)
    assert len(folders.folders(PHOTO)) <= 3
