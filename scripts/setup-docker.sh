#!/usr/bin/env bash
# Make a Docker engine answer and build the images servicelab's tests use.
#
# Idempotent and cached: on a machine where everything is in place it only checks and
# returns within seconds. Meant for a fresh Debian machine, run as root (e.g. by
# `make test` or CI), where no image can be pulled from a registry: the base image is
# made with debootstrap and `docker import`, the others are built on top of it.
#
# Images (each rebuilt only when its inputs change; the inputs' hash is an image label):
#   servicelab/base:bookworm            debootstrap minbase, imported
#   servicelab/python:bookworm          base + python3, venv, pip, tini, curl, git
#   servicelab/runtime:test             images/runtime/Dockerfile (code services),
#                                       also tagged :latest, the lab's default
#   servicelab/example-fastapi:test     examples/fastapi-service/
#
# Environment knobs:
#   SERVICELAB_CACHE_DIR     where the debootstrap tree is made (default /var/cache/servicelab)
#   SERVICELAB_DOCKERD_LOG   dockerd's log file (default /var/log/servicelab-dockerd.log)
#   SERVICELAB_DEBIAN_MIRROR mirror for debootstrap (default http://deb.debian.org/debian)
#   SERVICELAB_SKIP_IMAGES=1 only make the engine answer
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE_DIR=${SERVICELAB_CACHE_DIR:-/var/cache/servicelab}
DOCKERD_LOG=${SERVICELAB_DOCKERD_LOG:-/var/log/servicelab-dockerd.log}
MIRROR=${SERVICELAB_DEBIAN_MIRROR:-http://deb.debian.org/debian}
ENGINE_DEADLINE=${SERVICELAB_ENGINE_DEADLINE:-90}
HASH_LABEL=org.servicelab.context-hash

BASE_IMAGE=servicelab/base:bookworm
PYTHON_IMAGE=servicelab/python:bookworm
RUNTIME_IMAGE=servicelab/runtime:test
EXAMPLE_IMAGE=servicelab/example-fastapi:test

# The legacy builder: it needs no buildx plugin and works with Debian's docker.io.
export DOCKER_BUILDKIT=0
export DEBIAN_FRONTEND=noninteractive

log() { echo "setup-docker: $*"; }
die() {
    echo "setup-docker: error: $*" >&2
    exit 1
}

[ "$(id -u)" -eq 0 ] || docker info >/dev/null 2>&1 ||
    die "run as root (it installs packages and starts dockerd), or start a Docker engine first"

# Several test sessions may run this at once; one does the work, the others wait and
# then find everything cached.
mkdir -p "$CACHE_DIR" 2>/dev/null || true
if [ -w "$CACHE_DIR" ] && command -v flock >/dev/null; then
    exec 9>"$CACHE_DIR/setup-docker.flock"
    flock 9
fi

apt_install() {
    # Try without `apt-get update` first: it is slow, and usually the lists are there.
    if ! apt-get install -y --no-install-recommends "$@" >/tmp/servicelab-apt.log 2>&1; then
        log "apt-get install $* failed without fresh package lists; running apt-get update"
        apt-get update >/tmp/servicelab-apt.log 2>&1 ||
            die "apt-get update failed (see /tmp/servicelab-apt.log)"
        apt-get install -y --no-install-recommends "$@" >/tmp/servicelab-apt.log 2>&1 ||
            die "apt-get install $* failed (see /tmp/servicelab-apt.log)"
    fi
}

# --- 1. the engine ---------------------------------------------------------------------

start_engine() {
    if ! command -v dockerd >/dev/null; then
        log "no dockerd here; installing Debian's docker.io"
        apt_install docker.io
    fi
    mkdir -p "$(dirname "$DOCKERD_LOG")"
    log "starting dockerd in the background (log: $DOCKERD_LOG)"
    # setsid + nohup: dockerd outlives this script and the shell that ran it. It must not
    # inherit the lock (fd 9), or the next run would wait for dockerd to exit.
    setsid nohup dockerd >>"$DOCKERD_LOG" 2>&1 </dev/null 9>&- &
    local pid=$! deadline=$((SECONDS + ENGINE_DEADLINE))
    until docker info >/dev/null 2>&1; do
        if ! kill -0 "$pid" 2>/dev/null && ! pgrep -x dockerd >/dev/null; then
            tail -n 20 "$DOCKERD_LOG" >&2 || true
            die "dockerd exited; its log above says why"
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            tail -n 20 "$DOCKERD_LOG" >&2 || true
            die "dockerd did not answer within ${ENGINE_DEADLINE}s"
        fi
        sleep 0.5
    done
}

if docker info >/dev/null 2>&1; then
    log "engine answers: $(docker version --format 'server {{.Server.Version}}' 2>/dev/null)"
else
    start_engine
    log "engine is up: $(docker version --format 'server {{.Server.Version}}' 2>/dev/null)"
fi

[ "${SERVICELAB_SKIP_IMAGES:-0}" = 1 ] && exit 0

# --- 2. images -------------------------------------------------------------------------

image_exists() { docker image inspect "$1" >/dev/null 2>&1; }

image_hash() {
    docker image inspect --format "{{index .Config.Labels \"$HASH_LABEL\"}}" "$1" 2>/dev/null ||
        true
}

# The hash of some files (paths relative to ROOT, directories walked) plus extra strings,
# so that an image is rebuilt when anything it is made of changes.
inputs_hash() {
    local extra=$1
    shift
    {
        echo "$extra"
        (cd "$ROOT" && find "$@" -type f ! -name '*.pyc' ! -path '*/__pycache__/*' -print0 |
            LC_ALL=C sort -z | xargs -0 sha256sum)
    } | sha256sum | cut -c1-32
}

# build TAG HASH [docker build args...]: build unless TAG carries HASH already.
build_image() {
    local tag=$1 hash=$2
    shift 2
    if [ "$(image_hash "$tag")" = "$hash" ]; then
        log "$tag is up to date"
        return
    fi
    log "building $tag"
    local out old_id
    out=$(mktemp)
    old_id=$(docker image inspect --format '{{.Id}}' "$tag" 2>/dev/null || true)
    if ! docker build --label "$HASH_LABEL=$hash" -t "$tag" "$@" >"$out" 2>&1; then
        tail -n 30 "$out" >&2
        die "building $tag failed (full log: $out)"
    fi
    rm -f "$out"
    # The image this one replaces would stay as a nameless few hundred MB; drop it unless
    # something still uses it (then docker refuses, which is fine).
    if [ -n "$old_id" ] && [ "$old_id" != "$(docker image inspect --format '{{.Id}}' "$tag")" ]; then
        docker image rm "$old_id" >/dev/null 2>&1 || true
    fi
    log "built $tag"
}

# 2a. servicelab/base:bookworm, from debootstrap (no registry can be reached).
if image_exists "$BASE_IMAGE"; then
    log "$BASE_IMAGE exists"
else
    command -v debootstrap >/dev/null || {
        log "installing debootstrap"
        apt_install debootstrap
    }
    rootfs="$CACHE_DIR/rootfs-bookworm"
    rm -rf "$rootfs"
    log "debootstrap --variant=minbase bookworm (takes ~30 s)"
    debootstrap --variant=minbase bookworm "$rootfs" "$MIRROR" >"$CACHE_DIR/debootstrap.log" 2>&1 ||
        die "debootstrap failed (see $CACHE_DIR/debootstrap.log)"
    # A smaller image: no package cache, no downloaded lists.
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" -c . | docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'CMD ["/bin/bash"]' \
        - "$BASE_IMAGE" >/dev/null || die "docker import of the debootstrap tree failed"
    rm -rf "$rootfs"
    log "imported $BASE_IMAGE"
fi

# 2b. servicelab/python:bookworm: what most test images need, installed once.
# The host's own CA certificates (/usr/local/share/ca-certificates, e.g. a TLS-inspecting
# egress proxy's) go in too, or pip could not reach PyPI from a build on such a machine.
# They live only in this local image, never in the Dockerfiles that servicelab ships.
PYTHON_DOCKERFILE="FROM $BASE_IMAGE
COPY certs/ /usr/local/share/ca-certificates/
RUN apt-get update \\
 && apt-get install -y --no-install-recommends python3 python3-venv python3-pip tini \\
    curl ca-certificates git \\
 && rm -rf /var/lib/apt/lists/*
ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt \\
    REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt \\
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
CMD [\"python3\"]"
python_ctx=$(mktemp -d)
trap 'rm -rf "$python_ctx"' EXIT
mkdir "$python_ctx/certs"
cp /usr/local/share/ca-certificates/*.crt "$python_ctx/certs/" 2>/dev/null || true
echo "$PYTHON_DOCKERFILE" >"$python_ctx/Dockerfile"
base_id=$(docker image inspect --format '{{.Id}}' "$BASE_IMAGE")
python_hash=$(cd "$python_ctx" && { echo "$base_id"; find . -type f -print0 | LC_ALL=C sort -z |
    xargs -0 sha256sum; } | sha256sum | cut -c1-32)
build_image "$PYTHON_IMAGE" "$python_hash" "$python_ctx"

python_id=$(docker image inspect --format '{{.Id}}' "$PYTHON_IMAGE")

# 2c. the runtime image. Its build context is the repository root (see .dockerignore),
# because it needs servicelab/execute/.
if [ -f "$ROOT/servicelab/execute/__init__.py" ]; then
    build_image "$RUNTIME_IMAGE" \
        "$(inputs_hash "$python_id" images/runtime servicelab/execute .dockerignore)" \
        -f "$ROOT/images/runtime/Dockerfile" --build-arg "BASE_IMAGE=$PYTHON_IMAGE" "$ROOT"
    # servicelab's default runtime image (SERVICELAB_RUNTIME_IMAGE) is :latest; give it
    # this build unless someone else's image holds that tag (it has no hash label then).
    latest=servicelab/runtime:latest
    if ! image_exists "$latest" ||
        { [ -n "$(image_hash "$latest")" ] &&
            [ "$(image_hash "$latest")" != "$(image_hash "$RUNTIME_IMAGE")" ]; }; then
        docker tag "$RUNTIME_IMAGE" "$latest"
        log "tagged $RUNTIME_IMAGE as $latest"
    fi
else
    # Written by another part of the project; until it exists there is no runtime image.
    log "warning: servicelab/execute/ is missing; skipped $RUNTIME_IMAGE"
fi

# 2d. the FastAPI example.
build_image "$EXAMPLE_IMAGE" "$(inputs_hash "$python_id" examples/fastapi-service)" \
    --build-arg "BASE_IMAGE=$PYTHON_IMAGE" "$ROOT/examples/fastapi-service"

log "done"
