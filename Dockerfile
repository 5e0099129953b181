# servicelab itself as a container. Build from the repository root:
#   docker build -t servicelab .
# Run it with the engine's socket, so that it can start services next to itself:
#   docker run -d -p 8080:8080 -v /var/run/docker.sock:/var/run/docker.sock \
#       -v servicelab-data:/data servicelab
# See docs/docker.md.
ARG BASE_IMAGE=ubuntu:24.04
FROM ${BASE_IMAGE}

ARG DEBIAN_FRONTEND=noninteractive
# git and python3-venv: the local-process runtime checks out and installs code services.
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
        python3 python3-venv git tini ca-certificates \
 && rm -rf /var/lib/apt/lists/*

ENV _VENV_PATH=/opt/servicelab
RUN python3 -m venv "$_VENV_PATH"
ENV PATH=/opt/servicelab/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

# Dependencies first, in a layer of their own: changing the code does not reinstall them.
COPY pyproject.toml README.md /src/
RUN mkdir -p /src/servicelab /src/lab_client \
 && touch /src/servicelab/__init__.py /src/lab_client/__init__.py \
 && pip install --no-cache-dir /src \
 && pip uninstall -y servicelab \
 && rm -rf /src/build /src/*.egg-info
COPY servicelab /src/servicelab
COPY lab_client /src/lab_client
RUN pip install --no-cache-dir --no-deps /src && rm -rf /src

# Settings (see servicelab/config.py; each can be overridden with --env). The data
# directory is not one: it is /data, the volume, given to `serve` below.
ENV SERVICELAB_LAB_IN_CONTAINER=true \
    SERVICELAB_LOG_LEVEL=info

VOLUME ["/data"]
EXPOSE 8080

HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python3", "-c", "import urllib.request as r; r.build_opener(r.ProxyHandler({})).open('http://127.0.0.1:8080/healthz', timeout=4)"]

ENTRYPOINT ["tini", "--"]
CMD ["servicelab", "serve", "--host", "0.0.0.0", "--port", "8080", "--data-dir", "/data"]
