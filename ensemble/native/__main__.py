"""``python -m ensemble.native [--force] [--strict]``: build or reuse the native backends.

One line per backend (built, reused, failed with its log), or one line in all when no
sources could be had. Exits 0 either way, so that setup goes on with the Python
runners; ``--strict`` exits 1 unless every backend is built.
"""

from __future__ import annotations

import argparse

from ensemble import native


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ensemble.native",
        description="Build Triton's pytorch, onnxruntime and tensorflow backends for the "
        f"PyPI server (cached in {native.cache_dir()}/<key>/). Sources: "
        f"${native.SOURCES_ENV} (a folder of the pinned tarballs), else GitHub.",
    )
    parser.add_argument("--force", action="store_true", help="rebuild even when cached")
    parser.add_argument(
        "--strict", action="store_true", help="exit 1 unless every backend is built"
    )
    args = parser.parse_args(argv)
    results = native.build(force=args.force, log=lambda line: print(line, flush=True))
    if args.strict and not all(r.ok for r in results.values()):
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
