"""`helm test`: wait for a ready server behind $TRITON_URL (up to $TEST_READY_TIMEOUT_S
seconds), then run one detect_all request on a photo made here and print what came
back. Exit 0: the Service answered a real inference; 1: it did not."""

import os
import sys
import time

import cv2
import numpy as np

from client import DetectorClient

deadline = time.monotonic() + float(os.environ.get("TEST_READY_TIMEOUT_S", "600"))
with DetectorClient() as detector:
    while not detector.is_ready():
        if time.monotonic() > deadline:
            sys.exit(f"{detector.url}: no ready server")
        time.sleep(2)
    # A 640 x 480 photo with a filled rectangle: what it finds does not matter, that a
    # full ensemble request (decode, every detector, fusion, drawing) answers does.
    photo = np.full((480, 640, 3), 200, np.uint8)
    cv2.rectangle(photo, (200, 120), (440, 360), (40, 80, 160), -1)
    encoded, jpeg = cv2.imencode(".jpg", photo)
    if not encoded:
        sys.exit("OpenCV could not encode the test photo as JPEG")
    (result,) = detector.detect([jpeg.tobytes()], timeout=60)
    if not result.annotated_jpeg:
        sys.exit(f"{detector.url}: detect_all answered without an annotated image")
    print(f"{detector.url}: detect_all answered in {result.latency_s:.2f} s: {result.summary()}")
