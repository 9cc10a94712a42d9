"""The public contract of the detection service.

Everything a client, the UI, the benchmarks or the tests need to talk to the
ensembles lives here: ensemble names, tensor names, dtypes, shapes, defaults and
the COCO-80 label list. Server code imports the same names, so a tensor name is
spelled exactly once in the code base.

Coordinates: every box crossing the public interface is ``(x1, y1, x2, y2)`` in
pixels of the *original* image (x to the right, y down, origin at the top-left
corner of the top-left pixel).
"""

from __future__ import annotations

# --- ensembles -------------------------------------------------------------------

# Which detectors a server has is the server's to say (its models file): a client
# learns them from the repository index and the ensembles' configs. Only the naming
# rules are fixed here.

# A detector's name: its key in the models file, in ensemble and in tensor names.
DETECTOR_NAME_PATTERN = r"[a-z][a-z0-9_]*"
ENSEMBLE_PREFIX = "detect_"
DETECT_ALL = "detect_all"  # every detector marked for fusion, in parallel, then fused


# Tracking ensembles (opt-in): the same detections, each with the id of the object it
# follows over a sequence of frames (Triton's sequence batcher: a correlation id, START
# and END flags). One per detector, and one of the fused result.
TRACK_PREFIX = "track_"
TRACK_ALL = "track_all"
# At most this many sequences are tracked at once per tracking ensemble; a START
# beyond is refused (end one, or let one idle out). A sequence without a frame for
# TRACK_IDLE_S seconds is forgotten. A sequence's frames may reach the tracker out of
# order (the steps before it run several frames at once): it holds up to TRACK_WINDOW
# frames waiting for an earlier one, and answers them in order.
MAX_TRACKED_SEQUENCES = 64
TRACK_IDLE_S = 60
TRACK_WINDOW = 64


def tracking_name(ensemble: str) -> str:
    """``"detect_pytorch"`` -> ``"track_pytorch"``; ``"detect_all"`` -> ``"track_all"``."""
    return TRACK_PREFIX + ensemble.removeprefix(ENSEMBLE_PREFIX)


def ensemble_name(detector: str) -> str:
    """``"pytorch"`` -> ``"detect_pytorch"``."""
    return ENSEMBLE_PREFIX + detector


def output_prefix(detector: str) -> str:
    """Prefix of a detector's own outputs in ``detect_all``: ``"pytorch"`` -> ``"PYTORCH_"``."""
    return f"{detector.upper()}_"


def detector_outputs(detector: str) -> tuple[str, str, str]:
    """Names of one detector's (detections, count, annotated image) in ``detect_all``."""
    p = output_prefix(detector)
    return (p + DETECTIONS, p + NUM_DETECTIONS, p + ANNOTATED_IMAGE)


# --- tensors -------------------------------------------------------------------

# Inputs. Requests have shape [B, 1]: one element per image.
IMAGE = "IMAGE"  # TYPE_STRING (BYTES): the bytes of one encoded image file
SCORE_THRESHOLD = "SCORE_THRESHOLD"  # TYPE_FP32, optional: keep detections scoring >= this
IOU_THRESHOLD = "IOU_THRESHOLD"  # TYPE_FP32, optional: NMS / fusion IoU threshold
# TYPE_INT32, optional: the longest side, in pixels, of the annotated image the client
# wants back. The boxes are drawn on a copy of the photo scaled down to fit (never up),
# and a JPEG photo larger than needed is decoded at 1/2, 1/4 or 1/8 of its size, which
# makes large photos much cheaper. Absent or 0: the annotated image has the photo's own
# size. DETECTIONS stay in pixels of the original photo either way.
ANNOTATED_MAX_SIDE = "ANNOTATED_MAX_SIDE"

# TYPE_INT64, tracking ensembles only: the frame's number in its sequence, from the
# START frame's on, one more each frame (the order the tracker applies them in).
FRAME_INDEX = "FRAME_INDEX"

DEFAULT_SCORE_THRESHOLD = 0.3
DEFAULT_IOU_THRESHOLD = 0.5

# TYPE_BOOL, optional, detect_all only: whether the fusion gives each object one box.
# True (the default): overlapping boxes of different labels (IoU above IOU_THRESHOLD)
# become one box with the best-supported label, the others' support kept in
# ALTERNATIVE_LABELS. False: boxes are fused per label only, so detectors that disagree
# on an object's label leave a box of each label on it.
MERGE_LABELS = "MERGE_LABELS"
DEFAULT_MERGE_LABELS = True

# Outputs, per image.
DETECTIONS = "DETECTIONS"  # TYPE_FP32 [MAX_DETECTIONS, 6], rows DETECTION_FIELDS
NUM_DETECTIONS = "NUM_DETECTIONS"  # TYPE_INT32 [1]: how many leading rows are real
ANNOTATED_IMAGE = "ANNOTATED_IMAGE"  # TYPE_STRING [1]: JPEG of the original image with boxes
# TYPE_FP32 [MAX_DETECTIONS, MAX_ALTERNATIVE_LABELS, 2], detect_all only: per row of
# DETECTIONS, the other labels the detectors gave its object, as (class_id, support),
# most supported first, padded with (-1, 0). Support is on the scale of the scores: the
# row's score is its own label's support (ensemble.boxes.label_support).
ALTERNATIVE_LABELS = "ALTERNATIVE_LABELS"
MAX_ALTERNATIVE_LABELS = 4

MAX_DETECTIONS = 100
DETECTION_FIELDS = ("x1", "y1", "x2", "y2", "score", "class_id")

# Largest image accepted, in pixels (width * height). Larger files are rejected
# before decoding so a forged header cannot make the server allocate gigabytes.
MAX_IMAGE_PIXELS = 40_000_000

# The longest side of an image accepted, in pixels: the annotated image is a JPEG, and
# a JPEG holds no more (libjpeg's JPEG_MAX_DIMENSION). A 65535x64 strip is under the
# pixel limit but would fail at the end of the pipeline instead of at decode.
MAX_IMAGE_SIDE = 65500

# Largest batch a client may send in one request (the ensembles' max_batch_size).
MAX_BATCH_SIZE = 8

# Largest request body the server's front reads, in bytes, for gRPC and HTTP alike: a
# larger one is refused as soon as its size is known (gRPC RESOURCE_EXHAUSTED, HTTP
# 413), before the rest is read. A batch of MAX_BATCH_SIZE photos of 24 megapixels
# as JPEG (about 8 MB each) fits. The client refuses a larger request before sending.
MAX_REQUEST_BYTES = 64 * 2**20

# The server's answer when it is too busy to take a request: gRPC UNAVAILABLE, HTTP
# 503, with one of these messages. The first comes from the server's front when its
# limit of requests in flight is reached; the others from Triton when the first
# step's queue is full or a request waited in it longer than its queue policy allows.
# Clients retry these with backoff; they mean "busy", not "broken".
BUSY_MESSAGES = (
    "Server busy: too many requests in flight",
    "Exceeds maximum queue size",
    "Request timeout expired",
)

# A model the server is bringing back after one of its Python-backend workers died
# (ensemble.supervisor), with every ensemble that runs it: the front answers its
# requests gRPC UNAVAILABLE / HTTP 503 with the first message and a hint of when to try
# again (RECOVERY_RETRY_S: gRPC's grpc-retry-pushback-ms, HTTP's Retry-After). The
# second is Triton's own answer to a request that reached the dead worker in the moment
# before the supervisor saw it die. Clients send both again, for a while: inference is
# idempotent. A request carries its model's name in MODEL_HEADER for the front to look
# at (gRPC's body is opaque to it; over HTTP the path says it).
RECOVERING_MESSAGE = "is being reloaded after a worker crash"
WORKER_DIED_MESSAGE = "Stub process"
RECOVERY_RETRY_S = 1
MODEL_HEADER = "triton-model-name"


def is_loopback_host(host: str) -> bool:
    """Whether ``host`` (an address to listen on or connect to, without its port) is
    reachable only from this machine: the rule for what "beyond localhost" means to the
    server (restricted APIs), the demo (its login) and the client (a key without TLS).
    Names other than ``localhost`` are not resolved: they count as not."""
    import ipaddress

    host = host.strip().removeprefix("[").removesuffix("]")
    if host.lower() == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    # ::ffff:127.0.0.1 is IPv4's loopback seen from an IPv6 socket.
    mapped = getattr(address, "ipv4_mapped", None)
    return address.is_loopback or bool(mapped and mapped.is_loopback)


# The header that carries the key of a server's restricted APIs (model repository and
# control, statistics, logging, trace, shared memory) over HTTP. Triton's gRPC endpoint
# checks the same name prefixed with "triton-grpc-protocol-" (seen on Triton 2.51: a
# gRPC request with only the plain name is refused).
API_KEY_HEADER = "triton-api-key"
GRPC_API_KEY_HEADER = "triton-grpc-protocol-" + API_KEY_HEADER

# Config parameters every ensemble carries, so that clients learn what a server
# serves from the server itself:
# - the label list (JSON array of strings): class_id indexes it;
LABELS_PARAMETER = "labels"
# - what people call the ensemble's network (a detect_<name> ensemble) or ensemble;
TITLE_PARAMETER = "title"
# - the detectors whose results it returns, in output order: a JSON array of
#   {"name", "title", "runtime", "runtime_title", "labels"} (one entry for
#   detect_<name>, every fused one for detect_all, whose outputs carry each one's
#   output_prefix). A detector's own
#   outputs in detect_all index its own "labels", as in detect_<name>; the fused
#   DETECTIONS index detect_all's labels, the union of theirs.
DETECTORS_PARAMETER = "detectors"


# TYPE_INT32 [MAX_DETECTIONS], tracking ensembles only: the id of the object each row
# of DETECTIONS follows, the same over the sequence's frames; -1: none (yet).
TRACK_IDS = "TRACK_IDS"

# Triton data types of the public tensors.
DTYPES = {
    FRAME_INDEX: "INT64",
    TRACK_IDS: "INT32",
    IMAGE: "BYTES",
    SCORE_THRESHOLD: "FP32",
    IOU_THRESHOLD: "FP32",
    ANNOTATED_MAX_SIDE: "INT32",
    DETECTIONS: "FP32",
    NUM_DETECTIONS: "INT32",
    ANNOTATED_IMAGE: "BYTES",
    MERGE_LABELS: "BOOL",
    ALTERNATIVE_LABELS: "FP32",
}

# Shapes of one image's tensors (without the batch dimension).
SHAPES = {
    FRAME_INDEX: (1,),
    TRACK_IDS: (MAX_DETECTIONS,),
    IMAGE: (1,),
    SCORE_THRESHOLD: (1,),
    IOU_THRESHOLD: (1,),
    ANNOTATED_MAX_SIDE: (1,),
    DETECTIONS: (MAX_DETECTIONS, len(DETECTION_FIELDS)),
    NUM_DETECTIONS: (1,),
    ANNOTATED_IMAGE: (1,),
    MERGE_LABELS: (1,),
    ALTERNATIVE_LABELS: (MAX_DETECTIONS, MAX_ALTERNATIVE_LABELS, 2),
}

# --- labels --------------------------------------------------------------------

# COCO-80 in the standard order: class_id 0 = person ... 79 = toothbrush. The labels
# of a detector whose models file entry names no labels file.
COCO80_LABELS: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat",
    "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack",
    "umbrella", "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball",
    "kite", "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket",
    "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair",
    "couch", "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse",
    "remote", "keyboard", "cell phone", "microwave", "oven", "toaster", "sink",
    "refrigerator", "book", "clock", "vase", "scissors", "teddy bear", "hair drier",
    "toothbrush",
)  # fmt: skip

# The official COCO category ids (1..90, with gaps) of the 80 classes above, in the
# same order. SSD (TF Object Detection API) predicts these ids; the COCO results JSON
# written by the client uses them too.
COCO91_IDS: tuple[int, ...] = (
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25,
    27, 28, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51,
    52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 67, 70, 72, 73, 74, 75, 76, 77,
    78, 79, 80, 81, 82, 84, 85, 86, 87, 88, 89, 90,
)  # fmt: skip

assert len(COCO80_LABELS) == 80 and len(COCO91_IDS) == 80
