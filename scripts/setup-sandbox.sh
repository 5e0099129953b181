#!/usr/bin/env bash
# What the local runtime's sandbox needs: bubblewrap (namespaces and the service's own view
# of the file system), setpriv (util-linux: its own uid), iptables (the rule that keeps
# services off each other's ports). Installed with apt only when missing; idempotent.
set -euo pipefail
missing=()
command -v bwrap >/dev/null || missing+=(bubblewrap)
command -v setpriv >/dev/null || missing+=(util-linux)
command -v iptables >/dev/null || missing+=(iptables)
if [ ${#missing[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y --no-install-recommends "${missing[@]}" \
    || { apt-get update && apt-get install -y --no-install-recommends "${missing[@]}"; }
fi
echo "sandbox: $(bwrap --version), setpriv and $(iptables --version) present"
