"""Server-side logic of the detection service: contract, spec and config generation,
image and box processing, per-family pre/post-processing, framework runners, Triton
adapters, the model build and the server launcher.

Importing this package imports nothing heavy; each framework is imported only by
the runner that needs it.
"""
