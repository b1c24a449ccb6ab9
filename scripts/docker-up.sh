#!/usr/bin/env bash
# Makes a Docker Engine reachable on /var/run/docker.sock for the container
# tests: installs docker.io and docker-registry when missing and starts
# dockerd when no engine answers. Tests start their own registries (each on
# its own 127.0.0.1 port and folder); this only provides the binaries.
set -euo pipefail

missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
command -v docker-registry >/dev/null 2>&1 || missing+=(docker-registry)
command -v htpasswd >/dev/null 2>&1 || missing+=(apache2-utils)
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if docker info >/dev/null 2>&1; then
  exit 0
fi
log=${TMPDIR:-/tmp}/strata-dockerd.log
echo "starting dockerd (log: $log)"
# Loopback registries are insecure by default; nothing else is configured.
nohup dockerd --host unix:///var/run/docker.sock >"$log" 2>&1 &
for _ in $(seq 1 60); do
  if docker info >/dev/null 2>&1; then
    exit 0
  fi
  sleep 0.5
done
echo "dockerd did not start; its log:" >&2
tail -n 30 "$log" >&2
exit 1
