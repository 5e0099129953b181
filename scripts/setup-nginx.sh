#!/usr/bin/env bash
# nginx with its Lua module, for the proxy's nginx data plane (SERVICELAB_PROXY=nginx)
# and the benchmarks. Installed with apt only when missing. Idempotent.
set -euo pipefail
missing=()
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
[ -f /usr/lib/nginx/modules/ngx_http_lua_module.so ] || missing+=(libnginx-mod-http-lua)
# The plane's decision cache (a dependency of the module's lua-resty-core; named anyway).
[ -f /usr/share/lua/5.1/resty/lrucache.lua ] || missing+=(lua-resty-lrucache)
if [ ${#missing[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y --no-install-recommends "${missing[@]}" \
    || { apt-get update && apt-get install -y --no-install-recommends "${missing[@]}"; }
fi
echo "nginx: $(/usr/sbin/nginx -v 2>&1 | cut -d/ -f2) with the Lua module"
