# fer-service images, one multi-stage file (docs/deployment.md):
#   docker build --target gateway    -t fer-service/gateway .     # FastAPI gateway (CPU)
#   docker build --target worker     -t fer-service/worker .      # Celery worker (gateway image)
#   docker build --target torchserve -t fer-service/torchserve .  # TorchServe on CUDA
# Build stages hold pip and the build backends; runtime stages get only a finished venv.
# Model archives are not baked in: compose mounts model_store/ read-only at /models.

ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm
# torch from PyPI bundles its own CUDA 13 libraries: the base flavour (no CUDA math libs) is
# enough, and the host needs an NVIDIA driver >= 580 with the NVIDIA Container Toolkit.
ARG CUDA_IMAGE=nvidia/cuda:13.0.0-base-ubuntu24.04

# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS gateway-build
ARG TORCH_VERSION=2.13.0
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# The gateway runs no model on a GPU (TorchServe does): the CPU build of torch, installed
# first so that the project's `torch>=` requirement does not pull a CUDA build.
RUN pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu \
        "torch==${TORCH_VERSION}"
WORKDIR /src
COPY pyproject.toml README.md ./
COPY service ./service
COPY training ./training
RUN pip install --no-cache-dir . && rm -rf /src

# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS gateway
# tini as PID 1: forwards TERM to the server and reaps zombies.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 fer \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin fer
COPY --from=gateway-build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    FER_MODEL_STORE=/models
WORKDIR /app
# numeric, so that runtimes can verify it is not root (Kubernetes runAsNonRoot)
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request as r; r.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["fer-service", "serve", "--host", "0.0.0.0", "--port", "8000"]

# ---------------------------------------------------------------------------------------------
# The Celery worker runs the gateway's code against the same InferenceBackend.
# `fer-service worker` is `celery --app service.worker worker` with the project's defaults.
FROM gateway AS worker
# Through sh for $HOSTNAME: ping this container's worker, not any worker of the broker.
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
    CMD ["sh", "-c", "celery --app service.worker inspect ping --destination celery@$HOSTNAME --timeout 5"]
CMD ["fer-service", "worker", "--concurrency", "1", "--loglevel", "info"]

# ---------------------------------------------------------------------------------------------
FROM ${CUDA_IMAGE} AS torchserve-build
ARG TORCH_VERSION=2.13.0
ARG TORCHSERVE_VERSION=0.12.0
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# What a stock TorchServe needs to run fer-service archives (torch, numpy, Pillow) plus
# pyyaml, which TorchServe 0.12 imports without declaring it.
RUN pip install --no-cache-dir \
        "torch==${TORCH_VERSION}" \
        "torchserve==${TORCHSERVE_VERSION}" \
        "numpy==2.4.6" \
        "pillow==13.0.0" \
        "pyyaml==6.0.3"

# ---------------------------------------------------------------------------------------------
FROM ${CUDA_IMAGE} AS torchserve
# A JRE for the frontend, the Python the venv was built with, and tini (see ENTRYPOINT).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends openjdk-17-jre-headless python3 tini \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 model-server \
    && useradd --system --uid 10001 --gid 10001 --create-home \
        --home-dir /home/model-server --shell /usr/sbin/nologin model-server
COPY --from=torchserve-build /opt/venv /opt/venv
# TEMP becomes java.io.tmpdir (workers' sockets, unpacked archives); logs go to the home.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    TEMP=/home/model-server/tmp \
    LOG_LOCATION=/home/model-server/logs \
    METRICS_LOCATION=/home/model-server/logs
USER 10001:10001
RUN mkdir -p /home/model-server/tmp /home/model-server/logs
WORKDIR /home/model-server
EXPOSE 8080 8081 8082
# Healthy once every registered model has a READY worker (TorchServe answers /ping earlier).
HEALTHCHECK --interval=15s --timeout=10s --start-period=180s --retries=3 \
    CMD ["python3", "-c", "import json, urllib.request as r; get = lambda p: json.load(r.urlopen('http://127.0.0.1:8081' + p, timeout=4)); models = get('/models')['models']; assert models and all(any(w['status'] == 'READY' for w in get('/models/' + m['modelName'])[0]['workers']) for m in models)"]
# `tini -g` sends TERM to the whole process group: the torchserve launcher, its Java frontend
# and the Python workers, so `docker stop` stops Java too (the launcher alone would not).
ENTRYPOINT ["/usr/bin/tini", "-g", "--"]
CMD ["torchserve", "--foreground", "--ncs", "--ts-config", "/models/config.properties", "--model-store", "/models"]
