#!/usr/bin/env bash
# `make test`: install and start everything the suite needs, check style and types, run it.
# Idempotent: a second run reuses the database server, the Docker engine and built images.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=.venv/bin

step() { printf '\n==> %s\n' "$*"; }

step "Command-line tools"
scripts/setup-tools.sh

step "nginx (the proxy's nginx plane)"
scripts/setup-nginx.sh

if [ -x scripts/setup-sandbox.sh ] && [ "$(id -u)" = 0 ]; then
  step "Sandbox for local services"
  scripts/setup-sandbox.sh
  export SERVICELAB_TEST_SANDBOX=1
fi

step "PostgreSQL"
SERVICELAB_TEST_POSTGRES_URL=$(scripts/setup-postgres.sh)
export SERVICELAB_TEST_POSTGRES_URL

if [ -x scripts/setup-docker.sh ]; then
  step "Docker engine and images"
  scripts/setup-docker.sh
  export SERVICELAB_TEST_DOCKER=1
fi

if [ -x scripts/setup-podman.sh ]; then
  step "Podman's Docker-compatible API"
  scripts/setup-podman.sh
  export SERVICELAB_TEST_PODMAN=1
fi

if [ -x scripts/setup-browser.sh ]; then
  step "Chromium"
  scripts/setup-browser.sh
  export SERVICELAB_TEST_BROWSER=1
fi

step "ruff and mypy"
$bin/ruff check .
$bin/ruff format --check servicelab lab_client tests bench
$bin/mypy servicelab lab_client

step "pytest"
export SERVICELAB_NO_SKIPS=1
exec $bin/pytest -p no:cacheprovider "$@"
