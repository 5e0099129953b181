#!/usr/bin/env bash
# Command-line tools the suite uses beside Python: git, and Mercurial and Subversion for
# the executor's hg+ and svn+ sources. Installed with apt only when missing.
set -euo pipefail
missing=()
command -v git >/dev/null || missing+=(git)
command -v hg >/dev/null || missing+=(mercurial)
command -v svn >/dev/null || missing+=(subversion)
command -v svnadmin >/dev/null || missing+=(subversion)
if [ ${#missing[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y --no-install-recommends "${missing[@]}" \
    || { apt-get update && apt-get install -y --no-install-recommends "${missing[@]}"; }
fi
echo "tools: git $(git --version | cut -d' ' -f3), hg and svn present"
