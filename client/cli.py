"""``detect``: run the detection ensembles on image files and save what they found.

    detect astronaut.png photos/ --model detect_all --out detections/

prints one line per image ("astronaut.png: person 0.92, cup 0.41"), writes
``<out>/<stem>.jpg`` (the annotated image; with detect_all also
``<out>/<stem>.<detector>.jpg``) and ``<out>/results.json`` in COCO results format.

    detect photos/ --url gpu-host:8001 --tls-ca ca.pem --api-key-file triton.key

connects with TLS, trusting ``ca.pem``, and sends the server's API key.

    detect photos/ --url triton-a:8001,triton-b:8001

spreads the requests over two replicas and goes on with one when the other is gone.

    detect clip.mp4 --model detect_all --out DIR

runs every frame of a clip (MP4, WebM, MOV, MKV) through the ensemble, in batches of its
``max_batch_size``, and writes ``<out>/<stem>.annotated.webm`` (VP8, at the clip's frame
rate) and ``<out>/<stem>.detections.json`` (COCO results with a ``frame_index``). Clips
over ``--max-frames`` frames are refused.

    detect clip.mp4 --track --model detect_all --out DIR

follows the clip's objects through the tracking ensemble of the model (``track_all``;
``track_<name>`` for ``detect_<name>``): the annotated clip shows each object's id and
recent path, ``<out>/<stem>.mot.txt`` holds MOT Challenge rows
(``frame,id,x,y,w,h,score,label``, frames from 1), and the last line says how many
distinct objects of each label passed.

    detect --source rtsp://camera:8554/live --model detect_onnxruntime --out-video live.webm

reads a live source (a stream URL, a V4L2 camera number, or a file read at its frame
rate) and prints one JSON line per frame the server had time for, newest frame first:
the others are dropped and counted (``client.live``). A stream or camera that drops out
is reopened with backoff; Ctrl-C ends the run with a summary line.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path

import cv2
from tqdm import tqdm

from client.api import DetectorClient
from client.environment import API_KEY_ENV, TLS_CA_ENV, URL_ENV
from client.errors import (
    ClipTooLong,
    DetectorError,
    ImageNotReadable,
    InvalidImage,
    RequestTooLarge,
    ServerBusy,
    VideoNotReadable,
)
from client.live import (
    DEFAULT_GIVE_UP_S,
    End,
    LatestFrameReader,
    LiveSource,
    LiveVideo,
    frame_detector,
    live_results,
    parse_source,
    result_line,
    summary_line,
)
from client.payload import KNOWN_FORMATS, SNIFF_BYTES, DetectOptions, sniff_image_format
from client.results import ImageResult, to_coco_results
from client.tracking import TrackingSession, describe_objects, distinct_objects
from client.video import (
    CLIP_SUFFIX,
    MAX_CLIP_FRAMES,
    VIDEO_EXTENSIONS,
    annotate_clip,
    probe_clip,
)
from ensemble.contract import (
    DETECT_ALL,
    MAX_BATCH_SIZE,
    MAX_IMAGE_SIDE,
    tracking_name,
)

# Files picked up when a directory is given (a file named explicitly is always tried).
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
PROGRESS_MIN_FILES = 8  # show a progress bar above this many files
RESULTS_FILE = "results.json"
DEFAULT_OUT = "detections"

EXIT_OK = 0
EXIT_SKIPPED = 1  # some images were skipped (unreadable or refused), the rest are done
EXIT_USAGE = 2  # bad arguments or nothing to do (argparse uses 2 as well)
EXIT_UNAVAILABLE = 3  # server unreachable, model not ready, or the server failed
EXIT_BUSY = 4  # the server stayed busy (queue full) through every retry: try again later
EXIT_SOURCE_LOST = 5  # --source: it could not be opened, or stayed away --source-timeout
OPENCV_LOG_ERRORS = 2  # cv::utils::logging::LOG_LEVEL_ERROR, which cv2 does not name


def busy_message(error: ServerBusy) -> str:
    """The CLI's line for a server that stayed busy."""
    return f"server busy: {error.detail}; try again later or lower the concurrency"


def server_failure(error: DetectorError, err) -> int:
    """Say why the server could not serve the run on ``err``; the exit code for it:
    ``EXIT_BUSY`` when it stayed busy, else ``EXIT_UNAVAILABLE``."""
    if isinstance(error, ServerBusy):
        print(f"detect: {busy_message(error)}", file=err)
        return EXIT_BUSY
    print(f"detect: {error}", file=err)
    return EXIT_UNAVAILABLE


def read_api_key(path: Path) -> str:
    """The key in an API key file, surrounding blanks dropped; ``ValueError`` saying why
    when the file cannot be read or is empty."""
    try:
        key = path.read_text().strip()
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(
            f"cannot read the API key file {path}: {getattr(e, 'strerror', None) or e}"
        ) from None
    if not key:
        raise ValueError(f"the API key file {path} is empty")
    return key


def expand_inputs(paths: Iterable[str | Path]) -> list[Path]:
    """Files to send: files as given, directories searched recursively by extension.

    Order is kept (directories sorted), duplicates are dropped, and paths that do not
    exist are kept so that reading them reports them.
    """
    found: dict[Path, None] = {}
    for p in map(Path, paths):
        if p.is_dir():
            for f in sorted(p.rglob("*")):
                if f.suffix.lower() in IMAGE_EXTENSIONS and f.is_file():
                    found.setdefault(f, None)
        else:
            found.setdefault(p, None)
    return list(found)


def precheck(path: Path) -> str | None:
    """Why ``path`` is obviously not worth sending, or None.

    Only reads the first bytes: decoding is the server's job, and the server validates
    every image anyway; this just answers "not an image" for a text file without a
    round trip.
    """
    try:
        with path.open("rb") as f:
            head = f.read(SNIFF_BYTES)
    except FileNotFoundError:
        return str(ImageNotReadable(str(path), "no such file"))
    except OSError as e:
        return str(ImageNotReadable(str(path), e.strerror or str(e)))
    if not head:
        return str(ImageNotReadable(str(path), "empty"))
    if sniff_image_format(head) is None:
        return f"not an image: {path} (its first bytes are not {', '.join(KNOWN_FORMATS)})"
    return None


def output_stems(paths: Sequence[Path]) -> list[str]:
    """File stems for the outputs, suffixed ``-2``, ``-3`` where two inputs share one."""
    seen: dict[str, int] = {}
    stems = []
    for p in paths:
        n = seen[p.stem] = seen.get(p.stem, 0) + 1
        stems.append(p.stem if n == 1 else f"{p.stem}-{n}")
    return stems


def coco_image_ids(paths: Sequence[Path]) -> list[int]:
    """COCO ``image_id`` per file: the number in the name for COCO-style names
    (``000000000139.jpg`` -> 139) when all names are distinct numbers, else 1..N."""
    stems = [p.stem for p in paths]
    if all(s.isdigit() for s in stems) and len({int(s) for s in stems}) == len(stems):
        return [int(s) for s in stems]
    return list(range(1, len(paths) + 1))


def write_annotated(result: ImageResult, out: Path, stem: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.jpg").write_bytes(result.annotated_jpeg)
    for key, own in result.per_detector.items():
        (out / f"{stem}.{key}.jpg").write_bytes(own.annotated_jpeg)


def _unit_interval(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def _max_side(text: str) -> int:
    value = int(text)
    if not 1 <= value <= MAX_IMAGE_SIDE:
        raise argparse.ArgumentTypeError(f"must be 1..{MAX_IMAGE_SIDE} pixels, got {value}")
    return value


def _batch_size(text: str) -> int:
    value = int(text)
    if not 1 <= value <= MAX_BATCH_SIZE:
        raise argparse.ArgumentTypeError(f"must be between 1 and {MAX_BATCH_SIZE}, got {text}")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def _positive_seconds(text: str) -> float:
    value = float(text)
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text}")
    return value


def _source(text: str) -> LiveSource:
    try:
        return parse_source(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _webm_path(text: str) -> Path:
    path = Path(text)
    if path.suffix.lower() != CLIP_SUFFIX:
        raise argparse.ArgumentTypeError(f"it is written as VP8 WebM: name it *{CLIP_SUFFIX}")
    return path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="detect",
        description="Detect COCO objects in images with the Triton detection ensembles.",
        epilog=(
            f"exit status: {EXIT_OK} all done, {EXIT_SKIPPED} some images skipped, "
            f"{EXIT_USAGE} bad usage, {EXIT_UNAVAILABLE} server or model unavailable, "
            f"{EXIT_BUSY} server busy (its queues stayed full through every retry), "
            f"{EXIT_SOURCE_LOST} --source could not be opened or was lost. "
            f"environment: ${URL_ENV} (server address, or several separated by commas), "
            f"${TLS_CA_ENV} (CA file: use TLS), "
            f"${API_KEY_ENV} (the server's API key); the options win over them."
        ),
    )
    parser.add_argument(
        "images",
        nargs="*",
        metavar="IMG",
        help="image files or directories, or video clips ("
        + ", ".join(sorted(VIDEO_EXTENSIONS))
        + ")",
    )
    parser.add_argument(
        "--model",
        default=DETECT_ALL,
        help="ensemble to run: detect_all or detect_<name> (the server lists its own)",
    )
    parser.add_argument(
        "--url",
        metavar="HOST:PORT[,HOST:PORT...]",
        help="Triton gRPC address, or several replicas' separated by commas (requests go "
        "round robin, and to the next one when one is gone); one load balancer or "
        "dns:///NAME:PORT works too (default $TRITON_URL or localhost:8001)",
    )
    tls = parser.add_mutually_exclusive_group()
    tls.add_argument(
        "--tls-ca",
        type=Path,
        metavar="FILE",
        help=f"connect with TLS, trusting the CA certificate in FILE (PEM) (default ${TLS_CA_ENV})",
    )
    tls.add_argument(
        "--tls", action="store_true", help="connect with TLS, trusting the system's CAs"
    )
    parser.add_argument(
        "--api-key-file",
        type=Path,
        metavar="FILE",
        help=f"file holding the server's API key (default ${API_KEY_ENV})",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(DEFAULT_OUT),
        metavar="DIR",
        help="output folder (default %(default)s)",
    )
    parser.add_argument(
        "--score-threshold", type=_unit_interval, metavar="F", help="server default if unset"
    )
    parser.add_argument(
        "--iou-threshold", type=_unit_interval, metavar="F", help="server default if unset"
    )
    parser.add_argument(
        "--annotated-max-side",
        type=_max_side,
        metavar="PX",
        help="annotated images at most this many pixels on their longest side (default: the "
        "photo's own size); large photos are then much cheaper to serve, boxes in the "
        "results file stay in the photo's pixels",
    )
    parser.add_argument(
        "--batch-size",
        type=_batch_size,
        metavar="N",
        help=f"images per request (default {MAX_BATCH_SIZE}; for a clip the model's "
        "max_batch_size)",
    )
    parser.add_argument(
        "--per-label",
        action="store_true",
        help="detect_all: fuse per label, one box per label where the detectors disagree "
        "(default: one box per object with its best-supported label, the others kept as "
        "alternatives)",
    )
    parser.add_argument(
        "--track",
        action="store_true",
        help="follow objects over the frames (the model's tracking ensemble, track_<name>): "
        "with a clip, writes <stem>.mot.txt and counts distinct objects per label; with "
        "--source, each JSON line's detections carry their track_id",
    )
    parser.add_argument(
        "--max-frames",
        type=_positive,
        metavar="N",
        default=MAX_CLIP_FRAMES,
        help="refuse clips of more frames than this (default %(default)s)",
    )
    live = parser.add_argument_group("live source (instead of IMG)")
    live.add_argument(
        "--source",
        type=_source,
        metavar="URL",
        help="read frames from a stream (http(s)://, rtsp(s)://), a V4L2 camera number "
        "(0 = /dev/video0) or a file (read at its frame rate); print one JSON line per "
        "frame sent, dropping the frames that come while one is at the server",
    )
    live.add_argument(
        "--out-video",
        type=_webm_path,
        metavar="PATH",
        help="with --source: also write the annotated frames to PATH (VP8 WebM, at the "
        "source's frame rate, each held until the next)",
    )
    live.add_argument(
        "--source-timeout",
        type=_positive_seconds,
        metavar="S",
        default=DEFAULT_GIVE_UP_S,
        help="with --source: end when a stream or camera has given no frame for S seconds, "
        "reopening it meanwhile after waits of 0.5, 1, 2, 4, then 8 s (default %(default)s)",
    )
    return parser


def check_source_args(args: argparse.Namespace) -> str | None:
    """Why the options do not make one run (images and clips, or one live source), or
    None."""
    if args.source is None:
        if not args.images:
            return "give image files, directories or clips (IMG), or --source"
        if args.out_video is not None:
            return "--out-video goes with --source"
        return None
    if args.images:
        return "give either IMG or --source, not both"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    err = sys.stderr
    problem = check_source_args(args)
    if problem:
        parser.error(problem)
    if args.source is not None:
        return detect_live(args.source, args)

    paths = expand_inputs(args.images)
    if not paths:
        print(f"detect: no images found in {', '.join(args.images)}", file=err)
        return EXIT_USAGE
    clips = [p for p in paths if p.suffix.lower() in VIDEO_EXTENSIONS]
    if clips:
        if len(clips) != len(paths):
            print("detect: give either images or video clips, not both", file=err)
            return EXIT_USAGE
        return detect_clips(clips, args)
    to_send: list[Path] = []
    skipped = 0
    for p in paths:
        problem = precheck(p)
        if problem:
            print(problem, file=err)
            skipped += 1
        else:
            to_send.append(p)
    if not to_send:
        return EXIT_SKIPPED

    try:
        client = connect(args)
    except (ValueError, DetectorError) as e:  # a file named on the command line
        print(f"detect: {e}", file=err)
        return EXIT_USAGE

    stems = dict(zip(to_send, output_stems(to_send), strict=True))
    image_ids = dict(zip(to_send, coco_image_ids(to_send), strict=True))
    entries: list[dict] = []
    written = 0
    try:
        with (
            client,
            tqdm(total=len(to_send), unit="img", disable=len(paths) <= PROGRESS_MIN_FILES) as bar,
        ):
            outcomes = client.iter_detect(
                to_send,
                args.model,
                detect_options(args),
                batch_size=args.batch_size or MAX_BATCH_SIZE,
            )
            done = 0
            for batch in outcomes:
                for outcome in batch:
                    path = to_send[done]
                    done += 1
                    if isinstance(outcome, (InvalidImage, RequestTooLarge)):
                        bar.write(str(outcome), file=err)
                        skipped += 1
                        continue
                    if isinstance(outcome, DetectorError):
                        bar.write(f"failed: {outcome}", file=err)
                        skipped += 1
                        continue
                    write_annotated(outcome, args.out, stems[path])
                    written += 1
                    entries += to_coco_results(
                        outcome,
                        image_id=image_ids[path],
                        file_name=path.name,
                        model=args.model,
                        per_detector=True,
                    )
                    bar.write(f"{path}: {outcome.summary()}", file=sys.stdout)
                bar.update(len(batch))
    except DetectorError as e:
        return server_failure(e, err)

    if written:
        lines = ",\n".join(json.dumps(e) for e in entries)  # one detection per line
        (args.out / RESULTS_FILE).write_text(f"[\n{lines}\n]\n" if entries else "[]\n")
        print(
            f"wrote {written} annotated image(s) and {RESULTS_FILE} to {args.out}/"
            + (f"; skipped {skipped}" if skipped else ""),
            file=err,
        )
    return EXIT_SKIPPED if skipped else EXIT_OK


def detect_options(args: argparse.Namespace) -> DetectOptions:
    """What every request asks of the server, from the options."""
    return DetectOptions(
        score_threshold=args.score_threshold,
        iou_threshold=args.iou_threshold,
        annotated_max_side=args.annotated_max_side,
        merge_labels=False if args.per_label else None,
    )


def connect(args: argparse.Namespace) -> DetectorClient:
    """The client the options ask for; ``ValueError`` or ``DetectorError`` for a bad
    key or CA file."""
    api_key = read_api_key(args.api_key_file) if args.api_key_file else None
    return DetectorClient(args.url, tls=args.tls_ca or args.tls or None, api_key=api_key)


def clip_outputs(out: Path, clip: Path) -> tuple[Path, Path]:
    """Where a clip's annotated video and detections file go."""
    return out / f"{clip.stem}.annotated{CLIP_SUFFIX}", out / f"{clip.stem}.detections.json"


def detect_clips(clips: Sequence[Path], args: argparse.Namespace) -> int:
    """Each clip through the model: its annotated clip and detections file, or a line
    saying why not. A clip that is not a video, is damaged or is too long is skipped
    (``EXIT_SKIPPED``) and leaves no partial output."""
    err = sys.stderr
    skipped = 0
    try:
        client = connect(args)
    except (ValueError, DetectorError) as e:
        print(f"detect: {e}", file=err)
        return EXIT_USAGE
    with client:
        for clip in clips:
            try:
                detect_clip(client, clip, args)
            except (VideoNotReadable, ClipTooLong) as e:
                print(f"detect: {e}", file=err)
                skipped += 1
            except DetectorError as e:
                return server_failure(e, err)
    return EXIT_SKIPPED if skipped else EXIT_OK


def detect_clip(client: DetectorClient, clip: Path, args: argparse.Namespace) -> None:
    """One clip through ``args.model``; outputs written under temporary names and renamed
    once the whole clip is done, removed on any error."""
    info = probe_clip(clip, args.max_frames)
    model = tracking_name(args.model) if args.track else args.model
    video_path, json_path = clip_outputs(args.out, clip)
    args.out.mkdir(parents=True, exist_ok=True)
    partial_video = video_path.with_name(f"{clip.stem}.annotated.part{CLIP_SUFFIX}")
    try:
        with tqdm(total=info.frame_count or None, unit="frame", desc=clip.name) as bar:
            run = annotate_clip(
                client,
                info,
                model,
                partial_video,
                detect_options(args),
                max_frames=args.max_frames,
                batch_size=args.batch_size,
                on_frame=lambda _frame: bar.update(1),
                track=args.track,
            )
        document = run.document(info, model, output=video_path.name)
        head = json.dumps({k: v for k, v in document.items() if k != "results"})
        lines = ",\n".join(json.dumps(e) for e in run.results)  # one detection per line
        json_path.write_text(f'{head[:-1]}, "results": [\n{lines}\n]}}\n')
        mot_path = args.out / f"{clip.stem}.mot.txt"
        if args.track:
            mot_path.write_text("".join(row + "\n" for row in run.mot_rows))
        partial_video.replace(video_path)
    finally:
        partial_video.unlink(missing_ok=True)
    print(
        f"{clip}: {run.frames} frames, {len(run.results)} detections, "
        f"{run.frames / run.wall_s:.1f} frames/s; wrote {video_path.name} and "
        f"{json_path.name}{' and ' + mot_path.name if args.track else ''} to {args.out}/",
        file=sys.stderr,
    )
    if args.track:
        for frame in run.restarts:
            print(f"{clip}: the server forgot the sequence; ids start again at frame {frame}",
                  file=sys.stderr)  # fmt: skip
        print(f"{clip}: {describe_objects(distinct_objects(run.mot_rows))}")


def detect_live(source: LiveSource, args: argparse.Namespace) -> int:
    """The live source through ``args.model`` until it ends, is lost, or the run is
    stopped (SIGINT or SIGTERM: the frame at the server finishes first; a second
    SIGINT quits at once): a JSON line per frame sent on stdout, the annotated video
    if asked, a summary line last. ``EXIT_OK`` when stopped or at a file's end."""
    err = sys.stderr
    try:
        client = connect(args)
    except (ValueError, DetectorError) as e:
        print(f"detect: {e}", file=err)
        return EXIT_USAGE
    reader = LatestFrameReader(
        source,
        give_up_s=args.source_timeout,
        log=lambda line: print(f"detect: {line}", file=err, flush=True),
    )
    stop = threading.Event()
    latencies: list[float] = []
    failure: DetectorError | None = None
    # OpenCV's warnings on each failed open would repeat the reader's own lines.
    cv2.setLogLevel(OPENCV_LOG_ERRORS)
    with client:
        try:
            reader.start()
        except VideoNotReadable as e:
            print(f"detect: {e}", file=err)
            return EXIT_SOURCE_LOST
        started = time.monotonic()
        # The writer opens its file at the first frame: a run with none writes nothing.
        recording = LiveVideo(args.out_video, reader.fps) if args.out_video else nullcontext()
        with stop_on_signals(stop):
            try:
                with recording as video, tracked(client, args) as session:
                    detect = (
                        (lambda frame: session.track(frame).result)
                        if session is not None
                        else frame_detector(client, args.model, detect_options(args))
                    )
                    for live in live_results(reader, detect, stop):
                        latencies.append(live.latency_s)
                        print(json.dumps(result_line(live)), flush=True)
                        if video is not None:
                            video.add(live.frame.index, live.result.annotated_jpeg)
            except DetectorError as e:
                failure = e
            finally:
                reader.stop()
    end = "server failed" if failure else (reader.end or End.STOPPED).value
    counters = reader.counters()
    summary = summary_line(counters, end, time.monotonic() - started, latencies)
    print(json.dumps(summary), flush=True)
    print(
        f"detect: {source}: {end}; {counters.read} frames read, {counters.sent} sent, "
        f"{counters.dropped} dropped, {counters.reconnects} reconnect(s)"
        + (f"; wrote {args.out_video}" if args.out_video else ""),
        file=err,
    )
    if failure is not None:
        return server_failure(failure, err)
    return EXIT_SOURCE_LOST if reader.end is End.SOURCE_LOST else EXIT_OK


@contextmanager
def tracked(client: DetectorClient, args: argparse.Namespace) -> Iterator[TrackingSession | None]:
    """With ``--track``, the live source's tracking session (one sequence, ended on the
    way out: Ctrl-C ends it cleanly); None otherwise."""
    if not args.track:
        yield None
        return
    session = TrackingSession(client, tracking_name(args.model), detect_options(args))
    try:
        yield session
    finally:
        session.close()
        if session.restarts:
            print(f"detect: the server forgot the sequence {session.restarts} time(s); ids "
                  "started again each time", file=sys.stderr)  # fmt: skip


@contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """While inside: SIGINT and SIGTERM set ``stop`` instead of ending the process, and
    a SIGINT after that raises ``KeyboardInterrupt`` at once. The handlers before are
    put back on leaving. Only the main thread may set handlers: elsewhere, nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    signals = (signal.SIGINT, signal.SIGTERM)
    before = {s: signal.getsignal(s) for s in signals}

    def handle(signum: int, _frame: object) -> None:
        stop.set()
        signal.signal(signal.SIGINT, signal.default_int_handler)
        print("detect: stopping after the frame at the server", file=sys.stderr, flush=True)

    for s in signals:
        signal.signal(s, handle)
    try:
        yield
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)


if __name__ == "__main__":
    sys.exit(main())
