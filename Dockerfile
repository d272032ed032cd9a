# syntax=docker/dockerfile:1
# Two images from one file:
#   docker build --target operator -t ortkube-operator:0.1.0 .
#   docker build --target runtime  -t ortkube-runtime:0.1.0 .
# Each installs the package into a virtualenv in a build stage and copies only that venv into a
# clean final stage: no compiler, no pip cache, no source tree. Both run as uid 1000 (the uid the
# operator's runtime pods and the chart's operator pod ask for). No HEALTHCHECK: Kubernetes
# probes the operator's /healthz and the runtime's /v2/health/{live,ready}.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
# onnxruntime-gpu 1.31 links CUDA 13 (libcudart.so.13, libcublas.so.13) and cuDNN 9.
ARG CUDA_IMAGE=nvidia/cuda:13.0.1-cudnn-runtime-ubuntu24.04
# TensorRT from NVIDIA's Python wheels. 10.x: onnxruntime's TensorRT EP links libnvinfer.so.10
# and libnvonnxparser.so.10 (TensorRT 11 renames them).
ARG TENSORRT_LIBS_VERSION=10.16.1.11
ARG VERSION=0.1.0
ARG REVISION=unknown
# The repository URL for the OCI source label: --build-arg SOURCE=https://...
ARG SOURCE=""

# ---------------------------------------------------------------------------------------------
# operator: kopf + the Kubernetes client on a slim Python.
FROM ${PYTHON_IMAGE} AS operator-build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator/ortkube operator/ortkube
COPY runtime/ortkube runtime/ortkube
RUN /opt/venv/bin/pip install --no-cache-dir ".[operator]" \
    && /opt/venv/bin/ortkube operator --help > /dev/null

FROM ${PYTHON_IMAGE} AS operator
ARG VERSION
ARG REVISION
ARG SOURCE
LABEL org.opencontainers.image.title="ortkube-operator" \
      org.opencontainers.image.description="The ortkube operator: serves OrtModels (ONNX Runtime over the KServe v2 protocol)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN useradd --uid 1000 --user-group --no-create-home --home-dir /tmp --shell /usr/sbin/nologin ortkube
COPY --from=operator-build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
USER 1000:1000
ENTRYPOINT ["ortkube"]
CMD ["operator"]

# ---------------------------------------------------------------------------------------------
# runtime: onnxruntime-gpu (CUDA and TensorRT EPs) on NVIDIA's CUDA + cuDNN runtime image.
FROM ${CUDA_IMAGE} AS runtime-build
ARG TENSORRT_LIBS_VERSION
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml README.md ./
# The runtime alone: it never imports the operator (the wheel builds without operator/).
COPY runtime/ortkube runtime/ortkube
RUN /opt/venv/bin/pip install --no-cache-dir ".[gpu]" "tensorrt-cu13-libs==${TENSORRT_LIBS_VERSION}" \
    && ln -s "$(/opt/venv/bin/python -c 'import tensorrt_libs, os; print(os.path.dirname(tensorrt_libs.__file__))')" /opt/venv/tensorrt_libs \
    && /opt/venv/bin/ortkube serve --help > /dev/null

FROM ${CUDA_IMAGE} AS runtime
ARG VERSION
ARG REVISION
ARG SOURCE
LABEL org.opencontainers.image.title="ortkube-runtime" \
      org.opencontainers.image.description="ortkube serve: one ONNX model over the KServe v2 protocol on ONNX Runtime (TensorRT, CUDA, CPU)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV DEBIAN_FRONTEND=noninteractive
# The interpreter the venv was made with (same base image, same apt repository), nothing else.
# Ubuntu's images ship a user `ubuntu` with uid 1000: replaced by ours.
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 \
    && rm -rf /var/lib/apt/lists/* \
    && (userdel --remove ubuntu 2> /dev/null || true) \
    && useradd --uid 1000 --user-group --no-create-home --home-dir /tmp --shell /usr/sbin/nologin ortkube \
    && mkdir -p /var/cache/ortkube/models /var/cache/ortkube/engines \
    && chown -R 1000:1000 /var/cache/ortkube
COPY --from=runtime-build /opt/venv /opt/venv
# libnvinfer.so.10 and libnvonnxparser.so.10 from the tensorrt-cu13-libs wheel; CUDA and cuDNN
# come from the base image.
ENV PATH=/opt/venv/bin:$PATH \
    LD_LIBRARY_PATH=/opt/venv/tensorrt_libs:${LD_LIBRARY_PATH} \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
USER 1000:1000
EXPOSE 8080 8081
ENTRYPOINT ["ortkube"]
CMD ["serve", "--help"]
