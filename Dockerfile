# evs-sdrs-shim: a sidecar beside legacy EVS clients.
#
# Base image. A tag, not a digest: no registry could be reached where this file was last changed, and
# a digest that was not read from the registry would be made up. To pin it (recommended for releases),
# resolve the tag once and pass the digest, or write it here:
#   docker buildx imagetools inspect python:3.11-slim --format '{{json .Manifest.Digest}}'
#   docker build --build-arg BASE_IMAGE=python:3.11-slim@sha256:<that digest> .
# Update it the same way when Debian or Python ship fixes (README, Container and Kubernetes).
ARG BASE_IMAGE=python:3.11-slim

# -- the wheel, built with the pinned build backend ------------------------------------------------
FROM ${BASE_IMAGE} AS build
ENV PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY requirements-build.lock ./
RUN pip install --require-hashes -r requirements-build.lock
COPY pyproject.toml README.md LICENSE ./
COPY shim ./shim
COPY mappings ./mappings
RUN pip wheel --no-deps --no-build-isolation --wheel-dir /dist .

# -- the image ---------------------------------------------------------------------------------------
FROM ${BASE_IMAGE}
ARG BASE_IMAGE
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
ARG SOURCE=unknown
LABEL org.opencontainers.image.title="evs-sdrs-shim" \
      org.opencontainers.image.description="Sidecar reverse proxy that answers deprecated EVS v2 replication-consistency-group calls through SDRS v1" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="${BASE_IMAGE}"

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /opt/shim
# Dependencies first, exactly as locked and checked against their hashes: this layer is rebuilt only
# when requirements.lock changes.
COPY requirements.lock ./
RUN pip install --require-hashes -r requirements.lock
# Then the project's wheel, without resolving dependencies again (the image holds the locked versions only).
COPY --from=build /dist /tmp/dist
RUN pip install --no-deps /tmp/dist/*.whl \
    && rm -rf /tmp/dist \
    && pip check \
    && useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin shim

# The built-in config listens on 0.0.0.0:8080 inside the container (see examples/container/shim.yaml);
# mount your own /etc/shim (e.g. a Kubernetes ConfigMap) to replace config and mappings.
COPY examples/container/shim.yaml /etc/shim/shim.yaml
COPY examples/mappings /etc/shim/mappings

# The state store (the duplicate-action guard's memory) lives on a volume: mount one that outlives
# the container (README, State).
ENV SHIM_STATE__PATH=/var/lib/evs-sdrs-shim/state.sqlite3
RUN mkdir -p /var/lib/evs-sdrs-shim && chown 10001:10001 /var/lib/evs-sdrs-shim
VOLUME ["/var/lib/evs-sdrs-shim"]

USER 10001:10001
EXPOSE 8080
# Liveness on /healthz (no curl in slim images). Assumes the default listen port 8080; the proxy
# handler is bypassed so HTTP(S)_PROXY variables cannot send the check elsewhere.
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request as u; r = u.build_opener(u.ProxyHandler({})).open('http://127.0.0.1:8080/healthz', timeout=2); sys.exit(r.status != 200)"]
# SIGTERM drains (README, Operations): give `docker stop -t` more than
# lifecycle.readiness_grace_seconds + drain_seconds (default 1 + 10).
STOPSIGNAL SIGTERM
ENTRYPOINT ["shim"]
CMD ["serve", "--config", "/etc/shim/shim.yaml"]
