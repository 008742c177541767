# Portcullis gateway and agent, one image: `portcullis serve --config …` or `portcullis agent --config …`.
#
#   docker build -t registry.example.com/platform/portcullis:0.1.0 .
#
# The runtime dependencies come pinned, with hashes, from requirements/runtime.lock (pip-compile of pyproject.toml
# without extras) and the wheel's build backend from requirements/build.lock; `make lock` regenerates both.
# The base is pinned by tag here; pin it by digest for reproducible builds (the same for both stages):
#   docker build --build-arg PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:<digest> …
# The image runs as the numeric user 10001, needs no capability, and writes nothing outside /tmp: run it with a
# read-only root filesystem and an emptyDir (or tmpfs) on /tmp. No HEALTHCHECK: Kubernetes probes /healthz and
# /readyz (deploy/helm/portcullis).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- build: the runtime virtualenv and a wheel of the package -------------------------------------------------
FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_ROOT_USER_ACTION=ignore
COPY requirements/runtime.lock requirements/build.lock requirements/
RUN python -m venv /opt/build \
 && /opt/build/bin/pip install --require-hashes -r requirements/build.lock \
 && python -m venv /opt/portcullis \
 && /opt/portcullis/bin/pip install --require-hashes --no-deps -r requirements/runtime.lock
COPY pyproject.toml README.md ./
COPY portcullis ./portcullis
# pip compiles the bytecode at install time, so nothing is written at run time; pip itself is not needed there
RUN /opt/build/bin/python -m pip wheel --no-deps --no-build-isolation --wheel-dir /tmp/wheel . \
 && /opt/portcullis/bin/pip install --no-deps /tmp/wheel/portcullis-*.whl \
 && /opt/portcullis/bin/pip uninstall --yes pip \
 && /opt/portcullis/bin/portcullis --version

# --- runtime: the virtualenv only, as an unprivileged user ----------------------------------------------------
FROM ${PYTHON_IMAGE}
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="portcullis" \
      org.opencontainers.image.description="Identity-aware, MCP-native access gateway (and its agent)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://example.invalid/portcullis"
ENV PATH=/opt/portcullis/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
COPY --from=build /opt/portcullis /opt/portcullis
WORKDIR /tmp
# numeric, so the kubelet's runAsNonRoot can check it without an /etc/passwd entry
USER 10001:10001
EXPOSE 8080
STOPSIGNAL SIGTERM
ENTRYPOINT ["portcullis"]
CMD ["serve", "--config", "/etc/portcullis/config/portcullis.yaml"]
