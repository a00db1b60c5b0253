# evs-sdrs-shim: a sidecar beside legacy EVS clients.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /opt/shim
COPY pyproject.toml README.md ./
COPY shim ./shim
COPY mappings ./mappings
RUN pip install '.[fast]' \
    && useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin shim

# Config and mappings come from a mounted volume (e.g. a Kubernetes ConfigMap) at /etc/shim.
COPY examples/shim.yaml /etc/shim/shim.yaml
COPY mappings /etc/shim/mappings

USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["shim"]
CMD ["serve", "--config", "/etc/shim/shim.yaml"]
