"""The folders the page writes its results' files in, for every tab, and their wire values.

A result that offers files for download (a photo's annotated JPEGs and COCO JSON, a
clip's annotated WebM, per-frame JSON and MOT rows) gets a folder of its own, ``<kind>-<hex>``,
under one root inside Gradio's cache folder. Gradio serves a file already in its cache
as it is and counts it among the app's files, so the Blocks' ``delete_cache`` sweep
deletes it after ``UPLOAD_MAX_AGE_S`` like an upload (the folder stays, empty), and
``python -m ui`` removes the whole cache at exit.

``ResultFolders`` is the one owner of that root: one lock over creating, listing and
pruning every tab's folders. A folder is handed out by ``writing()`` and no pruning
touches it until its files are written (a new clip's folder stays empty until its first
frames are back from the server, which is when a photo's pruning would otherwise take it
for one the sweep emptied). Beyond its kind's limit the oldest finished folders go;
folders the sweep emptied go on the next new folder; a session keeps its latest result
of a kind (its previous one goes), and ``end_session`` deletes a closed page's.
"""

from __future__ import annotations

import contextlib
import shutil
import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from client.video import CLIP_SUFFIX

PHOTO = "photo"  # a photo's annotated JPEGs and COCO JSON
CLIP = "clip"  # a clip's annotated WebM, per-frame JSON and (tracked) MOT rows
# Results whose files are kept at most, per kind (one folder each).
MAX_FOLDERS = {PHOTO: 200, CLIP: 20}

MIME_TYPES = {
    ".jpg": "image/jpeg",
    ".json": "application/json",
    ".txt": "text/plain",  # a tracked clip's MOT rows
    CLIP_SUFFIX: "video/webm",
}


class ResultFolders:
    """Every tab's result folders under ``root``: created, listed and pruned under one
    lock, bounded per kind by ``max_folders`` (kind -> count, default ``MAX_FOLDERS``)."""

    def __init__(self, root: Path, max_folders: Mapping[str, int] | None = None):
        self.root = Path(root)
        self.max_folders = {**MAX_FOLDERS, **(max_folders or {})}
        self._lock = threading.Lock()
        self._writing: set[Path] = set()  # handed out, files not yet written: never pruned
        self._by_session: dict[tuple[str, str], Path] = {}  # (session, kind) -> its latest

    @contextlib.contextmanager
    def writing(self, kind: str, session: str = "") -> Iterator[Path]:
        """A new empty folder for one result of ``kind`` (``PHOTO`` or ``CLIP``), for the
        ``with`` block to write its files in. It is kept when the block ends, as
        ``session``'s latest result of that kind when a session is given (its previous
        one is deleted now), and deleted when the block raises."""
        if kind not in self.max_folders:
            raise ValueError(f"unknown kind of result {kind!r}: {', '.join(self.max_folders)}")
        with self._lock:
            if session and (old := self._by_session.pop((session, kind), None)):
                self._remove(old)
            self._prune(kind)
            folder = self.root / f"{kind}-{uuid.uuid4().hex}"
            folder.mkdir(parents=True)
            self._writing.add(folder)
            if session:
                self._by_session[(session, kind)] = folder
        try:
            yield folder
        except BaseException:
            with self._lock:
                self._writing.discard(folder)
                self._forget(folder)
                shutil.rmtree(folder, ignore_errors=True)
            raise
        with self._lock:
            self._writing.discard(folder)

    def end_session(self, session: str) -> None:
        """Delete ``session``'s result folders (its page was closed)."""
        with self._lock:
            for key in [key for key in self._by_session if key[0] == session]:
                self._remove(self._by_session.pop(key))

    def folders(self, kind: str) -> list[Path]:
        """The folders of ``kind`` now under ``root``, oldest first."""
        with self._lock:
            return self._listed(kind)

    def _listed(self, kind: str) -> list[Path]:
        if not self.root.is_dir():
            return []
        found = [p for p in self.root.glob(f"{kind}-*") if p.is_dir()]
        return sorted(found, key=_mtime)

    def _prune(self, kind: str) -> None:
        """With the lock held: every kind's finished folders that the cache sweep has
        emptied go, then the oldest finished ones of ``kind`` beyond its limit, leaving
        room for one more."""
        for other in self.max_folders:
            for folder in self._listed(other):
                if _is_empty(folder):
                    self._remove(folder)
        listed = self._listed(kind)
        excess = len(listed) - (self.max_folders[kind] - 1)  # room for the one about to be made
        finished = [p for p in listed if p not in self._writing]
        for folder in finished[: max(excess, 0)]:
            self._remove(folder)

    def _remove(self, folder: Path) -> None:
        """With the lock held: delete a finished folder and forget it."""
        if folder in self._writing:  # still being written: it is pruned once finished
            return
        shutil.rmtree(folder, ignore_errors=True)
        self._forget(folder)

    def _forget(self, folder: Path) -> None:
        for key, kept in list(self._by_session.items()):
            if kept == folder:
                del self._by_session[key]


def _is_empty(folder: Path) -> bool:
    try:
        return not any(folder.iterdir())
    except OSError:  # deleted meanwhile: nothing to prune
        return False


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:  # deleted meanwhile (the cache sweep)
        return 0.0


def file_data(path: Path) -> dict:
    """The wire value of one file in Gradio's cache (a ``gr.File`` item or a ``gr.Video``)."""
    return {
        "path": str(path),
        "orig_name": path.name,
        "size": path.stat().st_size,
        "mime_type": MIME_TYPES.get(path.suffix, "application/octet-stream"),
        "meta": {"_type": "gradio.FileData"},
    }


def file_value(paths: Sequence[Path]) -> list[dict]:
    """A multiple-file ``gr.File``'s wire value for ``paths``."""
    return [file_data(p) for p in paths]
