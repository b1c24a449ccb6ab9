#!/usr/bin/env bash
# Installs what the Bazel HTTP cache tests run: Debian's nginx (PUT comes from
# its built-in WebDAV module) and the WebDAV extension module. Tests start
# their own nginx (tests/common/remote.rs: own config, port and folder, as a
# child process); the system service is never started: a policy-rc.d that
# refuses service starts is in place during the install (Debian's container
# images already have one). Prints the nginx binary's path.
set -euo pipefail

module=/usr/lib/nginx/modules/ngx_http_dav_ext_module.so
have_nginx() { command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]; }
if ! have_nginx || [ ! -f "$module" ]; then
  echo "installing: nginx libnginx-mod-http-dav-ext" >&2
  policy=/usr/sbin/policy-rc.d
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\n# strata scripts/nginx-up.sh: no service starts during its install\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    trap 'rm -f "$policy"' EXIT
  fi
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive NEEDRESTART_SUSPEND=1 apt-get install -y -qq nginx libnginx-mod-http-dav-ext >&2
fi

bin=$(command -v nginx 2>/dev/null || echo /usr/sbin/nginx)
[ -x "$bin" ] || { echo "nginx-up: no nginx binary after install" >&2; exit 1; }
[ -f "$module" ] || { echo "nginx-up: $module missing after install" >&2; exit 1; }
echo "$bin"
