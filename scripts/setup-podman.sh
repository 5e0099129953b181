#!/usr/bin/env bash
# Make Podman's Docker-compatible API answer on unix:///run/podman/podman.sock, with the
# images servicelab's tests use loaded into it. Idempotent; run as root on Debian.
#
# servicelab talks to Podman through the same Docker SDK (DOCKER_HOST=unix:///run/podman/
# podman.sock). Two things differ from Docker that tests must know: Podman runs no health
# checks by itself (no systemd timers here; run `podman healthcheck run NAME`), and images
# come from Docker's store (`docker save | podman load`), since no registry can be reached.
#
# Needs scripts/setup-docker.sh to have built the images first (it is run when needed).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SOCKET_PATH=${SERVICELAB_PODMAN_SOCKET:-/run/podman/podman.sock}
SERVICE_LOG=${SERVICELAB_PODMAN_LOG:-/var/log/servicelab-podman.log}
CONF=/etc/containers/containers.conf
DEADLINE=${SERVICELAB_ENGINE_DEADLINE:-60}
IMAGES=(servicelab/python:bookworm servicelab/runtime:test servicelab/example-fastapi:test)
export DEBIAN_FRONTEND=noninteractive

log() { echo "setup-podman: $*"; }
die() {
    echo "setup-podman: error: $*" >&2
    exit 1
}

[ "$(id -u)" -eq 0 ] || die "run as root: it installs packages and starts a system service"

mkdir -p /var/cache/servicelab
exec 9>/var/cache/servicelab/setup-podman.flock
flock 9

# --- 1. the package ----------------------------------------------------------------------

if ! command -v podman >/dev/null; then
    log "installing Debian's podman"
    # netavark + aardvark-dns: container networking for a root Podman without recommends.
    packages=(podman netavark aardvark-dns runc catatonit)
    if ! apt-get install -y --no-install-recommends "${packages[@]}" >/tmp/servicelab-apt.log 2>&1; then
        apt-get update >/tmp/servicelab-apt.log 2>&1 || die "apt-get update failed (see /tmp/servicelab-apt.log)"
        apt-get install -y --no-install-recommends "${packages[@]}" >/tmp/servicelab-apt.log 2>&1 ||
            die "apt-get install podman failed (see /tmp/servicelab-apt.log)"
    fi
fi

# --- 2. containers.conf ------------------------------------------------------------------
# runc: crun fails on this kind of host (cgroup v1 without systemd). The ulimits: Podman
# would otherwise hand containers the host's limits, far lower than Docker's defaults.
# Only these keys are set; whatever else the file says stays as it is.
mkdir -p "$(dirname "$CONF")"
python3 - "$CONF" <<'PY'
import os
import re
import sys
import tempfile

path = sys.argv[1]
wanted = {
    "engine": {"runtime": '"runc"'},
    "containers": {"default_ulimits": '["nofile=20000:20000","nproc=32768:32768"]'},
}
try:
    lines = open(path).read().splitlines()
except FileNotFoundError:
    lines = []

section = None
seen: set[tuple[str, str]] = set()
out = []
for line in lines:
    header = re.match(r"^\s*\[([^\]]+)\]\s*$", line)
    if header:
        # Keys of the section we leave that it did not have go at its end.
        for key, value in wanted.get(section or "", {}).items():
            if (section, key) not in seen:
                out.append(f"{key} = {value}")
                seen.add((section, key))
        section = header.group(1).strip()
    else:
        key = re.match(r"^\s*([A-Za-z_]+)\s*=", line)
        if key and section in wanted and key.group(1) in wanted[section]:
            name = key.group(1)
            out.append(f"{name} = {wanted[section][name]}")
            seen.add((section, name))
            continue
    out.append(line)
for key, value in wanted.get(section or "", {}).items():
    if (section, key) not in seen:
        out.append(f"{key} = {value}")
        seen.add((section, key))
for name, keys in wanted.items():
    missing = [(k, v) for k, v in keys.items() if (name, k) not in seen]
    if missing:
        out += ["", f"[{name}]"] + [f"{k} = {v}" for k, v in missing]

text = "\n".join(out).strip("\n") + "\n"
if lines and text == "\n".join(lines).strip("\n") + "\n":
    sys.exit(0)  # already as wanted: leave the file (and its mtime) alone
fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".containers.conf.")
with os.fdopen(fd, "w") as handle:
    handle.write(text)
    handle.flush()
    os.fsync(handle.fileno())
os.chmod(tmp, 0o644)
os.replace(tmp, path)
print(f"setup-podman: wrote {path}")
PY

# --- 3. the API service ------------------------------------------------------------------

answers() {
    curl -sf --max-time 5 --unix-socket "$SOCKET_PATH" http://d/_ping >/dev/null 2>&1
}

if answers; then
    log "the Podman API answers on $SOCKET_PATH"
else
    mkdir -p "$(dirname "$SOCKET_PATH")" "$(dirname "$SERVICE_LOG")"
    rm -f "$SOCKET_PATH"
    log "starting podman system service (log: $SERVICE_LOG)"
    # Not holding fd 9 (the lock), or the next run would wait for the service to exit.
    setsid nohup podman system service --time=0 "unix://$SOCKET_PATH" \
        >>"$SERVICE_LOG" 2>&1 </dev/null 9>&- &
    pid=$!
    end=$((SECONDS + DEADLINE))
    until answers; do
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 20 "$SERVICE_LOG" >&2 || true
            die "podman system service exited; its log above says why"
        fi
        [ "$SECONDS" -lt "$end" ] || die "the Podman API did not answer within ${DEADLINE}s"
        sleep 0.5
    done
    log "the Podman API answers on $SOCKET_PATH ($(podman version --format '{{.Server.Version}}' 2>/dev/null || podman --version))"
fi

# --- 4. images -----------------------------------------------------------------------------

missing=0
for image in "${IMAGES[@]}"; do
    docker image inspect "$image" >/dev/null 2>&1 || missing=1
done
if [ "$missing" = 1 ]; then
    log "some images are missing from Docker; running setup-docker.sh"
    bash "$ROOT/scripts/setup-docker.sh"
fi

for image in "${IMAGES[@]}"; do
    # `docker save | podman load` keeps the image ID (its config digest): equal IDs mean
    # Podman has this very image already.
    want=$(docker image inspect --format '{{.Id}}' "$image")
    have=$(podman image inspect --format '{{.Id}}' "$image" 2>/dev/null || true)
    if [ "sha256:${have#sha256:}" = "$want" ]; then
        log "$image is loaded"
        continue
    fi
    log "loading $image into Podman"
    out=$(mktemp)
    if ! docker save "$image" | podman load >"$out" 2>&1; then
        tail -n 20 "$out" >&2
        die "loading $image into Podman failed"
    fi
    rm -f "$out"
done

log "done (DOCKER_HOST=unix://$SOCKET_PATH)"
