"""Tracking accuracy on synthetic clips whose true tracks are known.

``python -m bench.tracking [--url HOST:PORT] [--ensembles detect_pytorch ...] [--quick]``
makes one clip per speed (:data:`SPEEDS`: slow, medium and fast, in pixels per frame)
and runs each through each detection ensemble the server serves (``--ensembles`` picks
some) and a tracker, then scores the tracks against the truth with py-motmetrics, as
the MOT Challenge does: MOTA, IDF1, ID switches, and ID switches per crossing. It
prints a table (speed x ensemble) and writes every figure to ``--out`` (default
results/tracking/) as tracking-<date>-<time>.json. Triton is started here on the
models file (``--models``) unless ``--url`` names a running one.

The clips (:func:`make_clip`): four objects cut from the bundled photos (scikit-image's
astronaut and cameraman, people; the motorcycle; the cat Chelsea), each a crop around
the box the detectors find on its photo, pasted on the grass photo scaled to
:data:`SIZE`, in two lanes. In each lane two objects move towards each other, pass
(one in front, hiding most of the other) and go on to the end of the lane, then back,
so that each lane has a crossing per leg: two people (one label), and the motorcycle
and the cat (two labels). Every frame gets a little Gaussian grain from a seeded
generator, and is sent as a JPEG of quality 90: the same bytes on every run.

The truth of a frame is each object's box (the detectors' box on its photo, scaled and
moved), listed when at least :data:`MIN_VISIBLE` of it is in sight; an object hidden
more than that is neither expected nor held against a tracker that follows it (a track
on it is dropped before scoring, as the MOT Challenge drops those on its ignored
boxes). A track's box matches a true box at IoU :data:`MATCH_IOU` (0.5) or more. A
crossing is a run of frames in which two objects' boxes overlap and that reaches IoU
:data:`CROSSING_IOU`; switches per crossing are a clip's ID switches, wherever they
happened, over its crossings. The goal (issue 21) is on the slow clip: IDF1 at least
:data:`GOAL_IDF1` and at most :data:`GOAL_SWITCHES_PER_CROSSING` switch per crossing.

What turns frames into tracked rows is a parameter (:data:`METHODS`, ``--method``):
``client`` asks the detection ensemble for each frame through the client library
(``DetectorClient.detect``, batches in frame order) and runs ``ensemble.tracking.
Tracker`` here; a method that asks a tracking ensemble of the server takes the same
arguments and returns the same rows.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from bench import command_parser, logger, machine, measured, served, shown, table, verdict
from ensemble.tracking import Tracker, TrackerSettings

SIZE = (640, 480)  # width, height in pixels: VGA, a webcam's size
SPEEDS = {"slow": 3, "medium": 6, "fast": 12}  # pixels per frame of every moving object
LEGS = 2  # each object goes to the end of its lane and back: a crossing per leg
QUICK_LEGS = 1
BACKGROUND = "grass"  # scikit-image's grass.png, scaled to SIZE
JPEG_QUALITY = 90  # what the client library sends a clip's frames as
GRAIN_SIGMA = 3.0  # grey levels (of 255): the seeded noise on every frame
SEED = 21
CROP_MARGIN = 0.06  # of the object's box on each side: the crop shows it in some context
MIN_VISIBLE = 0.5  # of a true box in sight, for the object to be expected in a frame
MATCH_IOU = 0.5  # a track's box and a true box match at this IoU or more (MOT's)
CROSSING_IOU = 0.3  # the overlap two objects reach for their meeting to count as crossing
GOAL_IDF1 = 0.9  # on the slow clip (issue 21)
GOAL_SWITCHES_PER_CROSSING = 1.0  # at most, on the slow clip
GOAL_SPEED = "slow"

log = logger("tracking")


# --- the clips -----------------------------------------------------------------------


@dataclass(frozen=True)
class Sprite:
    """An object cut from a bundled photo: ``box``, the detectors' box on the photo
    (SSD MobileNet v2's, xyxy pixels of the photo), shown ``height`` pixels high."""

    name: str
    photo: str  # scikit-image's name of the photo
    box: tuple[int, int, int, int]
    height: int

    @property
    def width(self) -> int:
        """Its box's width in the clip (pixels), the photo's aspect kept."""
        x1, y1, x2, y2 = self.box
        return round((x2 - x1) * self.height / (y2 - y1))


@dataclass(frozen=True)
class Route:
    """Where an object goes: its box's top-left corner from ``(x_from, y)`` to
    ``(x_to, y)`` and back (pixels), over and over. Objects of higher ``depth`` are
    drawn over those of lower."""

    sprite: Sprite
    y: int
    x_from: int
    x_to: int
    depth: int

    def x(self, travelled: int) -> int:
        """The box's left edge after ``travelled`` pixels of motion."""
        span = abs(self.x_to - self.x_from)
        leg, into = divmod(travelled, span)
        ahead = into if leg % 2 == 0 else span - into
        return self.x_from + (ahead if self.x_to > self.x_from else -ahead)

    def box(self, travelled: int) -> tuple[int, int, int, int]:
        """Its true box (xyxy pixels) after ``travelled`` pixels of motion."""
        x = self.x(travelled)
        return (x, self.y, x + self.sprite.width, self.y + self.sprite.height)


ASTRONAUT = Sprite("astronaut", "astronaut", (11, 10, 370, 510), 170)
CAMERAMAN = Sprite("cameraman", "camera", (0, 61, 302, 508), 170)
MOTORCYCLE = Sprite("motorcycle", "motorcycle_left", (103, 65, 680, 445), 132)
CAT = Sprite("cat", "chelsea", (9, 0, 408, 297), 120)
EDGE = 20  # pixels between a lane's end and the frame's edge


def lane(sprite: Sprite, y: int, rightwards: bool, depth: int) -> Route:
    """A route along the whole width of the frame, :data:`EDGE` from its sides."""
    left, right = EDGE, SIZE[0] - EDGE - sprite.width
    return Route(sprite, y, *((left, right) if rightwards else (right, left)), depth)


# Two lanes; in each, two objects meet head on, the one of higher depth in front, the
# other 20-25 px lower, so that a strip of it stays in sight.
ROUTES = (
    lane(ASTRONAUT, 30, rightwards=True, depth=1),
    lane(CAMERAMAN, 50, rightwards=False, depth=0),
    lane(MOTORCYCLE, 300, rightwards=False, depth=1),
    lane(CAT, 325, rightwards=True, depth=0),
)

Box = tuple[float, float, float, float]  # xyxy, pixels


@dataclass(frozen=True)
class Crossing:
    """Objects ``a`` and ``b`` (indices into :data:`ROUTES`) overlap from frame
    ``first`` to ``last`` (included, from 0), at most at IoU ``peak_iou``."""

    a: int
    b: int
    first: int
    last: int
    peak_iou: float


@dataclass
class Clip:
    """A clip and its truth: each frame as a JPEG; per frame, ``{object: box}`` of the
    objects expected (``truth``) and of those too hidden to be (``hidden``), objects
    being indices into :data:`ROUTES`."""

    speed: str
    pixels_per_frame: int
    frames: list[bytes] = field(repr=False)
    truth: list[dict[int, Box]] = field(repr=False)
    hidden: list[dict[int, Box]] = field(repr=False)
    crossings: list[Crossing]


def photo(name: str) -> np.ndarray:
    """scikit-image's bundled photo ``name``, RGB ``uint8``."""
    from pathlib import Path

    import skimage.data

    from ensemble.imaging import decode_image

    return decode_image((Path(skimage.data.__file__).parent / f"{name}.png").read_bytes())


def sprite_pixels(sprite: Sprite) -> tuple[np.ndarray, tuple[int, int]]:
    """The sprite's crop (RGB, scaled to its height), :data:`CROP_MARGIN` of its photo
    around its box, and where the box's top-left corner is in it (x, y pixels)."""
    import cv2

    pixels = photo(sprite.photo)
    x1, y1, x2, y2 = sprite.box
    mx, my = round((x2 - x1) * CROP_MARGIN), round((y2 - y1) * CROP_MARGIN)
    left, top = max(0, x1 - mx), max(0, y1 - my)
    right, bottom = min(pixels.shape[1], x2 + mx), min(pixels.shape[0], y2 + my)
    scale = sprite.height / (y2 - y1)
    size = (round((right - left) * scale), round((bottom - top) * scale))
    crop = cv2.resize(pixels[top:bottom, left:right], size, interpolation=cv2.INTER_AREA)
    return crop, (round((x1 - left) * scale), round((y1 - top) * scale))


def paste(canvas: np.ndarray, owner: np.ndarray, crop: np.ndarray, left: int, top: int,
          index: int) -> None:  # fmt: skip
    """``crop`` drawn on ``canvas`` with its top-left corner at ``(left, top)``, the
    part inside the frame, and ``owner`` (which object each pixel shows) set to
    ``index`` there."""
    height, width = canvas.shape[:2]
    x1, y1 = max(left, 0), max(top, 0)
    x2, y2 = min(left + crop.shape[1], width), min(top + crop.shape[0], height)
    canvas[y1:y2, x1:x2] = crop[y1 - top : y2 - top, x1 - left : x2 - left]
    owner[y1:y2, x1:x2] = index


def box_iou(a: Box, b: Box) -> float:
    """IoU of two xyxy boxes."""
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(width, 0) * max(height, 0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def find_crossings(boxes: Sequence[Mapping[int, Box]]) -> list[Crossing]:
    """The crossings in ``boxes`` (per frame, every object's box): runs of frames in
    which two objects' boxes overlap, reaching IoU :data:`CROSSING_IOU`."""
    found = []
    objects = sorted({i for frame in boxes for i in frame})
    for n, a in enumerate(objects):
        for b in objects[n + 1 :]:
            run: list[float] = []  # the overlaps of the run in progress
            for k, frame in enumerate([*boxes, {}]):  # an empty frame ends the last run
                overlap = box_iou(frame[a], frame[b]) if a in frame and b in frame else 0.0
                if overlap > 0:
                    run.append(overlap)
                    continue
                if run and max(run) >= CROSSING_IOU:
                    found.append(Crossing(a, b, k - len(run), k - 1, round(max(run), 3)))
                run = []
    return sorted(found, key=lambda c: (c.first, c.a))


def clip_length(pixels_per_frame: int, legs: int = LEGS) -> int:
    """Frames of a clip at ``pixels_per_frame``: the longest lane ``legs`` times."""
    span = max(abs(r.x_to - r.x_from) for r in ROUTES)
    return legs * span // pixels_per_frame + 1


def make_clip(speed: str, legs: int = LEGS) -> Clip:
    """The clip at ``speed`` (a key of :data:`SPEEDS`), ``legs`` lanes long, and its
    truth (module docstring). The same bytes on every run."""
    import cv2

    from ensemble.imaging import encode_jpeg

    step = SPEEDS[speed]
    width, height = SIZE
    background = cv2.resize(photo(BACKGROUND), SIZE, interpolation=cv2.INTER_LINEAR)
    sprites = [sprite_pixels(route.sprite) for route in ROUTES]
    back_to_front = sorted(range(len(ROUTES)), key=lambda i: ROUTES[i].depth)
    frames, truth, hidden, every_box = [], [], [], []
    for k in range(clip_length(step, legs)):
        canvas = background.copy()
        owner = np.full((height, width), -1, np.int16)
        boxes = {i: ROUTES[i].box(k * step) for i in range(len(ROUTES))}
        for i in back_to_front:
            crop, (dx, dy) = sprites[i]
            paste(canvas, owner, crop, boxes[i][0] - dx, boxes[i][1] - dy, i)
        # Grain, the same on R, G and B (a camera's noise is mostly luminance).
        rng = np.random.default_rng([SEED, step, k])
        grain = rng.normal(0.0, GRAIN_SIGMA, (height, width, 1)).astype(np.float32)
        canvas = np.clip(np.rint(canvas + grain), 0, 255).astype(np.uint8)
        frames.append(encode_jpeg(canvas, JPEG_QUALITY))
        seen = {i: (owner[y1:y2, x1:x2] == i).mean() for i, (x1, y1, x2, y2) in boxes.items()}
        truth.append({i: boxes[i] for i in boxes if seen[i] >= MIN_VISIBLE})
        hidden.append({i: boxes[i] for i in boxes if seen[i] < MIN_VISIBLE})
        every_box.append(boxes)
    return Clip(speed, step, frames, truth, hidden, find_crossings(every_box))


# --- from frames to tracked rows -----------------------------------------------------

# What turns a clip into tracked rows: (gRPC URL, detection ensemble, the clip's frames
# as JPEG files) -> per frame, float (N, 7) rows: ensemble.contract.DETECTION_FIELDS,
# then the track id (-1: the row belongs to no track).
Method = Callable[[str, str, Sequence[bytes]], list[np.ndarray]]
# The annotated image the server draws for each frame, longest side in pixels: small,
# as the measurement does not look at it.
ANNOTATED_SIDE = 64


def detect_rows(url: str, ensemble: str, frames: Sequence[bytes],
                score_threshold: float) -> Iterator[np.ndarray]:  # fmt: skip
    """Each frame's detections by ``ensemble`` through the client library, in frame
    order: float32 (N, 6) rows, DETECTION_FIELDS (pixels of the frame)."""
    from client import DetectorClient
    from ensemble.contract import MAX_BATCH_SIZE

    with DetectorClient(url) as client:
        for start in range(0, len(frames), MAX_BATCH_SIZE):
            results = client.detect(
                frames[start : start + MAX_BATCH_SIZE], model=ensemble,
                score_threshold=score_threshold, annotated_max_side=ANNOTATED_SIDE,
            )  # fmt: skip
            for result in results:
                found = [(d.x1, d.y1, d.x2, d.y2, d.score, d.class_id) for d in result.detections]
                yield np.array(found, np.float32).reshape(-1, 6)


def track_rows(detections: Iterator[np.ndarray] | Sequence[np.ndarray],
               settings: TrackerSettings) -> list[np.ndarray]:  # fmt: skip
    """Each frame's detections with their track ids from one ``Tracker(settings)``,
    fed in order: (N, 7) rows."""
    tracker = Tracker(settings)
    return [np.column_stack([rows, tracker.update(rows)]) for rows in detections]


def tracked_by_client(url: str, ensemble: str, frames: Sequence[bytes]) -> list[np.ndarray]:
    """:data:`Method` ``client``: the detection ensemble through the client library, the
    tracker here with its default settings; the server is asked for every detection
    down to the tracker's ``low_score``, the detections its second pass takes."""
    settings = TrackerSettings()
    return track_rows(detect_rows(url, ensemble, frames, settings.low_score), settings)


def tracked_by_ensemble(url: str, ensemble: str, frames: Sequence[bytes]) -> list[np.ndarray]:
    """:data:`Method` ``ensemble``: the tracking ensemble of ``ensemble`` inside Triton
    (``track_<name>``, its tracker with its default settings), through
    ``DetectorClient.track_frames``, asked for every detection down to the tracker's
    ``low_score`` as the ``client`` method is."""
    from client import DetectorClient
    from client.payload import DetectOptions
    from ensemble.contract import tracking_name

    options = DetectOptions(
        score_threshold=TrackerSettings().low_score, annotated_max_side=ANNOTATED_SIDE
    )
    with DetectorClient(url) as client:
        tracked = client.track_frames(frames, tracking_name(ensemble), options)
        return [
            np.array([(d.x1, d.y1, d.x2, d.y2, d.score, d.class_id, d.track_id)
                      for d in frame.result.detections], np.float32).reshape(-1, 7)
            for frame in tracked
        ]  # fmt: skip


METHODS: dict[str, Method] = {"client": tracked_by_client, "ensemble": tracked_by_ensemble}


# --- scores --------------------------------------------------------------------------


def _xywh(boxes: Sequence[Box] | np.ndarray) -> np.ndarray:
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    return np.column_stack([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]])


def on_hidden(rows: np.ndarray, truth: Mapping[int, Box], hidden: Mapping[int, Box]) -> np.ndarray:
    """Mask of the ``rows`` (xyxy first) that stand for a hidden object: matched to it,
    one to one with every true box, expected or hidden, at IoU :data:`MATCH_IOU`."""
    from scipy.optimize import linear_sum_assignment

    dropped = np.zeros(len(rows), bool)
    if not hidden or not len(rows):
        return dropped
    boxes = [*truth.values(), *hidden.values()]
    overlap = np.array([[box_iou(b, tuple(r[:4])) for r in rows] for b in boxes])
    for b, r in zip(*linear_sum_assignment(-overlap), strict=True):
        dropped[r] |= b >= len(truth) and overlap[b, r] >= MATCH_IOU
    return dropped


def score(clip: Clip, tracked: Sequence[np.ndarray]) -> dict:
    """The MOT Challenge's figures (py-motmetrics) of ``tracked`` (per frame, (N, 7)
    rows as a :data:`Method` returns them) against ``clip``'s truth; only rows with a
    track id count, those on hidden objects dropped first."""
    import motmetrics as mm

    if len(tracked) != len(clip.frames):
        raise ValueError(f"{len(tracked)} frames of tracks for a clip of {len(clip.frames)}")
    accumulator = mm.MOTAccumulator(auto_id=True)
    tracks: set[int] = set()
    for truth, hidden, rows in zip(clip.truth, clip.hidden, tracked, strict=True):
        rows = rows[rows[:, 6] > 0]
        rows = rows[~on_hidden(rows, truth, hidden)]
        ids = rows[:, 6].astype(int).tolist()
        tracks.update(ids)
        distances = mm.distances.iou_matrix(
            _xywh(list(truth.values())), _xywh(rows[:, :4]), max_iou=1 - MATCH_IOU
        )
        accumulator.update(list(truth), ids, distances)
    names = ("mota", "idf1", "num_switches", "num_false_positives", "num_misses",
             "num_objects", "mostly_tracked", "precision", "recall")  # fmt: skip
    summary = mm.metrics.create().compute(accumulator, metrics=list(names), name="clip")
    figures = {name: summary[name].iloc[0].item() for name in names}
    events = accumulator.mot_events
    switches = events[events["Type"] == "SWITCH"]
    crossings = len(clip.crossings)
    return {
        "mota": round(figures["mota"], 4),
        "idf1": round(figures["idf1"], 4),
        "precision": round(figures["precision"], 4),
        "recall": round(figures["recall"], 4),
        "id_switches": int(figures["num_switches"]),
        "crossings": crossings,
        "switches_per_crossing": figures["num_switches"] / crossings if crossings else None,
        "false_positives": int(figures["num_false_positives"]),
        "misses": int(figures["num_misses"]),
        "expected": int(figures["num_objects"]),
        "mostly_tracked": int(figures["mostly_tracked"]),
        "objects": len(ROUTES),
        "tracks": len(tracks),
        # (frame, object, the track it went to), for finding where it happened.
        "switch_events": [
            [int(frame), int(obj), int(track)]
            for (frame, _), obj, track in zip(
                switches.index, switches["OId"], switches["HId"], strict=True
            )
        ],  # fmt: skip
    }


def meets_goal(row: Mapping) -> bool | None:
    """Whether a row of the goal's speed meets it (IDF1 and switches per crossing);
    None for the other speeds."""
    if row["speed"] != GOAL_SPEED:
        return None
    per_crossing = row["switches_per_crossing"]
    return row["idf1"] >= GOAL_IDF1 and (
        per_crossing is None or per_crossing <= GOAL_SWITCHES_PER_CROSSING
    )


# --- the measurement -----------------------------------------------------------------


def measure(url: str, ensembles: Sequence[str], speeds: Sequence[str] = tuple(SPEEDS),
            legs: int = LEGS, method: str = "client") -> dict:  # fmt: skip
    """Every clip of ``speeds`` through every ensemble of ``ensembles`` with ``method``
    (a key of :data:`METHODS`), scored: the figures :func:`format_report` shows."""
    track = METHODS[method]
    clips, results = [], []
    for speed in speeds:
        clip = make_clip(speed, legs)
        clips.append({"speed": speed, "pixels_per_frame": clip.pixels_per_frame,
                      "frames": len(clip.frames),
                      "crossings": [asdict(c) for c in clip.crossings]})  # fmt: skip
        for ensemble in ensembles:
            started = time.perf_counter()
            found = score(clip, track(url, ensemble, clip.frames))
            row = {"speed": speed, "pixels_per_frame": clip.pixels_per_frame,
                   "ensemble": ensemble, **found,
                   "seconds": round(time.perf_counter() - started, 1)}  # fmt: skip
            row["meets_goal"] = meets_goal(row)
            results.append(row)
            log(f"{speed} ({clip.pixels_per_frame} px/frame), {ensemble}: MOTA "
                f"{row['mota']:.3f}, IDF1 {row['idf1']:.3f}, {row['id_switches']} ID "
                f"switches, {row['crossings']} crossings ({row['seconds']:.0f} s)")  # fmt: skip
    meta = {
        "machine": machine(), "method": method, "size": list(SIZE), "legs": legs,
        "speeds": {s: SPEEDS[s] for s in speeds}, "objects": [r.sprite.name for r in ROUTES],
        "tracker_settings": asdict(TrackerSettings()) if method == "client" else None,
        "min_visible": MIN_VISIBLE, "match_iou": MATCH_IOU, "crossing_iou": CROSSING_IOU,
        "goal": {"speed": GOAL_SPEED, "idf1": GOAL_IDF1,
                 "switches_per_crossing": GOAL_SWITCHES_PER_CROSSING},
    }  # fmt: skip
    return {"meta": meta, "clips": clips, "results": results}


def format_report(result: Mapping) -> str:
    """The figures as a Markdown table, speed x ensemble, and the goal's verdicts."""
    meta = result["meta"]
    goal = meta["goal"]
    head = ("speed (px/frame)", "ensemble", "MOTA", "IDF1", "ID switches", "crossings",
            "switches / crossing", "tracks / objects", "false pos.", "misses",
            f"goal ({goal['speed']})")  # fmt: skip
    rows = [
        (f"{r['speed']} ({r['pixels_per_frame']})", r["ensemble"], f"{r['mota']:.3f}",
         f"{r['idf1']:.3f}", r["id_switches"], r["crossings"],
         shown(r["switches_per_crossing"], ".2f"), f"{r['tracks']} / {r['objects']}",
         r["false_positives"], r["misses"], verdict(r["meets_goal"]))
        for r in result["results"]
    ]  # fmt: skip
    frames = ", ".join(f"{c['speed']} {c['frames']}" for c in result["clips"])
    return "\n".join([
        f"Tracking accuracy ({meta['method']}), {meta['size'][0]}x{meta['size'][1]} "
        f"clips of {len(meta['objects'])} objects, {meta['legs']} leg(s): frames {frames}",
        "",
        *table(head, rows),
        "",
        f"Goal on the {goal['speed']} clip: IDF1 >= {goal['idf1']} and at most "
        f"{goal['switches_per_crossing']:g} ID switch per crossing. Machine: {meta['machine']}.",
    ])  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = command_parser("python -m bench.tracking", __doc__, out="tracking")
    ap.add_argument(
        "--ensembles", nargs="+", help="detection ensembles (default: every one the server serves)"
    )
    ap.add_argument(
        "--speeds",
        nargs="+",
        choices=list(SPEEDS),
        default=list(SPEEDS),
        help="clips to run (default: all)",
    )
    ap.add_argument(
        "--method",
        choices=list(METHODS),
        default="client",
        help="what turns frames into tracks (default: client)",
    )
    ap.add_argument("--quick", action="store_true",
                    help=f"{QUICK_LEGS} leg per clip instead of {LEGS}")  # fmt: skip
    args = ap.parse_args(argv)
    options = {"workdir": args.out / "server", "load": tuple(args.ensembles or ())}

    def run() -> dict:
        with served.triton(args.url, args.models, log, **options) as (url, _):
            ensembles = args.ensembles or served.ready_ensembles(url)
            return measure(url, ensembles, args.speeds, QUICK_LEGS if args.quick else LEGS,
                           args.method)  # fmt: skip

    from client import DetectorError

    errors = (RuntimeError, ValueError, DetectorError)
    return 1 if measured(run, errors, format_report, args.out, "tracking", log) is None else 0


if __name__ == "__main__":
    sys.exit(main())
