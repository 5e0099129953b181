#!/usr/bin/env bash
# Install Debian's Chromium for the browser tests (tests/test_web_ui.py, marker `browser`).
#
# Idempotent: returns at once when /usr/bin/chromium is there. Never runs
# `playwright install` (that downloads a browser build from outside the package
# registries); Playwright for Python drives Debian's build through `executable_path`.
set -euo pipefail

if [ -x /usr/bin/chromium ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "setup-browser: run as root to install chromium (apt-get)" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
# The package lists may be missing on a fresh machine, or too old to find chromium.
if ! apt-get install -y --no-install-recommends chromium; then
    apt-get update
    apt-get install -y --no-install-recommends chromium
fi
/usr/bin/chromium --version
