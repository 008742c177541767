# Portcullis gateway and agent, one image: `portcullis serve --config …` or `portcullis agent --config …`.
# Build: docker build -t portcullis:0.1.0 .   (the runtime dependencies come pinned, with hashes, from
# requirements/runtime.lock; `make lock` regenerates it)

# --- build: a wheel of the package -------------------------------------------------------------------------
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
COPY requirements/runtime.lock requirements/build.lock requirements/
RUN python -m venv /opt/build \
 && /opt/build/bin/pip install --require-hashes -r requirements/build.lock \
 && python -m venv /opt/portcullis \
 && /opt/portcullis/bin/pip install --require-hashes --no-deps -r requirements/runtime.lock
COPY pyproject.toml README.md ./
COPY portcullis ./portcullis
RUN /opt/build/bin/python -m pip wheel --no-deps --no-build-isolation --wheel-dir /tmp/wheel . \
 && /opt/portcullis/bin/pip install --no-deps /tmp/wheel/portcullis-*.whl

# --- runtime: the virtualenv only, as an unprivileged user, nothing written outside /tmp --------------------
FROM python:3.11-slim-bookworm
LABEL org.opencontainers.image.title="portcullis" \
      org.opencontainers.image.description="Identity-aware, MCP-native access gateway (and its agent)" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://example.invalid/portcullis"
ENV PATH=/opt/portcullis/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
COPY --from=build /opt/portcullis /opt/portcullis
# numeric, so runAsNonRoot can check it; no shell login, no home of its own
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["portcullis"]
CMD ["serve", "--config", "/etc/portcullis/portcullis.yaml"]
