"""Server-side logic of the detection service: the public contract, the detector
registry read from a models file, the spec and config generation, image and box
processing, the families' pre/post-processing, runtime runners, Triton adapters, the
bundled models' build and the server launcher.

Importing this package imports nothing heavy; each framework is imported only by
the runner that needs it.
"""
