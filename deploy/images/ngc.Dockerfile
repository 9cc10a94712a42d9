# NVIDIA's Triton image plus what this project's Python-backend models need.
# 25.02 is the last release whose image still has the TensorFlow backend
# (deprecated in 25.03, removed afterwards); keep in step with configgen.NGC_IMAGE.
ARG TRITON_IMAGE=nvcr.io/nvidia/tritonserver:25.02-py3
FROM ${TRITON_IMAGE}

# The image's Python backend runs Python 3.12. onnxruntime-gpu 1.20 is built for
# CUDA 12, which this image ships.
RUN pip install --no-cache-dir \
        "numpy<2" \
        opencv-python-headless==4.11.0.86 \
        pillow==11.1.0 \
        onnxruntime-gpu==1.20.1

# Pre/post-processing, fusion, drawing and the ONNX Runtime runner.
COPY ensemble /opt/detectors/ensemble
ENV PYTHONPATH=/opt/detectors
