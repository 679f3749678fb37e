# syntax=docker/dockerfile:1.7
# Production image for the stt-service gRPC server (see docs/DEPLOYMENT.md).
#
#   docker build -t stt-service:dev .
#   docker run --rm --read-only --tmpfs /tmp -p 50051:50051 -p 9090:9090 stt-service:dev
#
# Stage 1 (build) has compilers: it generates the protobuf code, builds the
# project wheel (bundled default model included as package data) and turns
# every dependency into a wheel. Stage 2 (runtime) only installs those wheels:
# no compilers, no build tools, no torch, no pip left behind.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
# Tool versions for the build stage only. The generated code must not need a
# newer grpcio than the one the project pins at runtime: keep them in step.
ARG GRPCIO_TOOLS_VERSION=1.85.1
ARG BUILD_VERSION=1.3.0
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
# A C toolchain for dependencies published only as sdists (e.g. webrtcvad).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
RUN pip install --no-cache-dir "grpcio-tools==${GRPCIO_TOOLS_VERSION}" "build==${BUILD_VERSION}"
WORKDIR /src
# .dockerignore is an allow-list: only the files the wheel needs get here.
COPY . .
RUN python scripts/gen_proto.py \
    && python -m build --wheel --outdir /dist . \
    && pip wheel --no-cache-dir --wheel-dir /wheels /dist/*.whl

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="stt-service" \
      org.opencontainers.image.description="Streaming speech-to-text gRPC service (CPU, ONNX Runtime)"
# Nothing may be written outside /tmp at run time (read-only root filesystem):
# no .pyc files, HOME and TMPDIR on the /tmp emptyDir.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOME=/tmp \
    TMPDIR=/tmp \
    STT_PORT=50051 \
    STT_METRICS_PORT=9090
RUN groupadd --system --gid 10001 stt \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin stt
# Install from the build stage's wheels only (no index, no compilers), check
# the image holds no torch and does hold the bundled model, then drop pip.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels /wheels/stt_service-*.whl \
    && python -c "import importlib.util as u, sys; sys.exit('torch must not be in the runtime image' if u.find_spec('torch') else 0)" \
    && python -c "import pathlib, service; d = pathlib.Path(service.__file__).parent / 'models' / 'default'; assert any(d.glob('*.onnx')), d" \
    && pip uninstall -y pip setuptools wheel
USER 10001:10001
WORKDIR /tmp
# 50051: gRPC (Speech, grpc.health.v1, reflection); 9090: Prometheus /metrics.
EXPOSE 50051 9090
ENTRYPOINT ["stt-server"]
