#!/usr/bin/env bash
# What the benchmarks need beside the test set-up: wrk (a load generator that is not
# Python), nginx (an upstream fast enough not to be the bottleneck), and JupyterHub's
# configurable-http-proxy from npm to compare with. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v curl >/dev/null || missing+=(curl)
command -v npm >/dev/null || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y --no-install-recommends "${missing[@]}" \
    || { apt-get update && apt-get install -y --no-install-recommends "${missing[@]}"; }
fi
scripts/setup-nginx.sh >/dev/null
if [ ! -x bench/proxy/node_modules/.bin/configurable-http-proxy ]; then
  (cd bench/proxy && npm install --no-audit --no-fund --silent)
fi
echo "bench tools ready: $(wrk --version 2>&1 | head -n1 | cut -d' ' -f1-2), nginx, configurable-http-proxy"
