#!/usr/bin/env bash
# Runs a BuildGrid execution service on 127.0.0.1, in the foreground, for
# `strata worker` to serve and REAPI clients (Bazel, `strata build`) to send
# actions to: a private PostgreSQL cluster (Debian's server programs, its own
# folder and port, listening on 127.0.0.1 only) holds the scheduler's jobs;
# BuildGrid (the venv of scripts/buildgrid-up.sh) serves Execution,
# Operations, the Remote Workers API (Bots), CAS, ByteStream, ActionCache
# and Capabilities for one instance, with an in-memory CAS. Ctrl-C (or
# SIGTERM) stops both. The tests start it too (tests/common/execution.rs),
# each on its own folder and port.
#
# usage: scripts/buildgrid-serve.sh [--dir DIR] [--port PORT] [--instance NAME]
#                                   [--keepalive SECONDS] [--cas-size SIZE]
#
#   --dir        the cluster, the config and the logs (default
#                ~/.cache/strata-buildgrid; the cluster is reused; as root,
#                when the postgres user cannot enter DIR, the cluster
#                itself lives in that user's home)
#   --port       BuildGrid's port (default 50051); PostgreSQL takes a free one
#   --instance   the REAPI instance name (default `main`)
#   --keepalive  seconds a worker may stay silent before its session is
#                closed and its leases requeued (default 60)
#   --cas-size   the in-memory CAS's bound (default 2G)
#
# Prints `buildgrid: serving grpc://127.0.0.1:PORT/INSTANCE` once PostgreSQL
# is ready and BuildGrid accepts connections on PORT.
set -euo pipefail
cd "$(dirname "$0")/.."

dir=${XDG_CACHE_HOME:-$HOME/.cache}/strata-buildgrid
port=50051
instance=main
keepalive=60
cas_size=2G
while (($#)); do
  case $1 in
    --dir) dir=$2; shift 2 ;;
    --port) port=$2; shift 2 ;;
    --instance) instance=$2; shift 2 ;;
    --keepalive) keepalive=$2; shift 2 ;;
    --cas-size) cas_size=$2; shift 2 ;;
    *) echo "buildgrid-serve: unknown argument $1 (see the usage in $0)" >&2; exit 2 ;;
  esac
done

bgd=${STRATA_BUILDGRID_BIN:-$(scripts/buildgrid-up.sh)}
python=$(dirname "$bgd")/python
pgbin=$(compgen -G '/usr/lib/postgresql/*/bin' | sort -V | tail -n 1)
[ -x "$pgbin/postgres" ] || { echo "buildgrid-serve: no PostgreSQL server (run scripts/buildgrid-up.sh)" >&2; exit 1; }

mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
data=$dir/postgres

# PostgreSQL refuses to run as root: as root, the cluster belongs to the
# `postgres` user Debian's package made, and so does every command on it.
as_db_user=()
if ((EUID == 0)); then
  as_db_user=(runuser -u postgres --)
  # The user must reach the cluster's folder (not list this one).
  chmod 711 "$dir"
  if ! runuser -u postgres -- test -x "$dir"; then
    # A parent it cannot enter (root's home is 0700): the cluster goes to
    # the postgres user's own home instead, one per folder given.
    home=$(getent passwd postgres | cut -d: -f6)
    data=$home/strata-buildgrid-$(printf '%s' "$dir" | sha256sum | cut -c1-12)
  fi
  mkdir -p "$data"
  chown postgres: "$data"
fi

if [ ! -f "$data/PG_VERSION" ]; then
  "${as_db_user[@]}" "$pgbin/initdb" -D "$data" -U bgd -A trust --no-sync -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 \
    || { cat "$dir/initdb.log" >&2; exit 1; }
fi

pg_port=$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
children=()
stop() {
  trap - EXIT INT TERM
  ((${#children[@]})) && kill -TERM "${children[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
}
trap stop EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# The socket lives in the cluster's folder: nothing of the system's cluster
# (/var/run/postgresql) is used or needed.
"${as_db_user[@]}" "$pgbin/postgres" -D "$data" -h 127.0.0.1 -p "$pg_port" \
  -c unix_socket_directories="$data" -c fsync=off -c synchronous_commit=off \
  -c full_page_writes=off >"$dir/postgres.log" 2>&1 &
children+=($!)
for _ in $(seq 1 300); do
  "$pgbin/pg_isready" -q -h 127.0.0.1 -p "$pg_port" && break
  kill -0 "${children[0]}" 2>/dev/null || { cat "$dir/postgres.log" >&2; exit 1; }
  sleep 0.1
done
"$pgbin/pg_isready" -q -h 127.0.0.1 -p "$pg_port" || { echo "buildgrid-serve: PostgreSQL did not start" >&2; cat "$dir/postgres.log" >&2; exit 1; }

# psycopg2 explicitly: BuildGrid's notifier (LISTEN/NOTIFY) needs its
# connections, and SQLAlchemy 2.1 defaults to psycopg 3.
database=postgresql+psycopg2://bgd@127.0.0.1:$pg_port/bgd
"$pgbin/psql" -q -h 127.0.0.1 -p "$pg_port" -U bgd -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'bgd'" | grep -q 1 \
  || "$pgbin/createdb" -h 127.0.0.1 -p "$pg_port" -U bgd bgd
"$bgd" migrate apply "$database" >"$dir/migrate.log" 2>&1 || { cat "$dir/migrate.log" >&2; exit 1; }

cat >"$dir/buildgrid.yml" <<EOF
# Written by scripts/buildgrid-serve.sh.
description: Strata's BuildGrid (execution on strata worker)
server:
  - !channel
    address: "127.0.0.1:$port"
    insecure-mode: true
authorization:
  method: none
monitoring:
  enabled: false
connections:
  - !sql-connection &sql
    connection-string: $database
    pool-size: 10
    max-overflow: 10
storages:
  - !lru-storage &cas
    size: $cas_size
caches:
  - !lru-action-cache &ac
    storage: *cas
    max-cached-refs: 100000
    allow-updates: true
    cache-failed-actions: false
schedulers:
  - !sql-scheduler &scheduler
    sql: *sql
    storage: *cas
    action-cache: *ac
    # Jobs go to workers whose platform has every property they ask for;
    # container-image (docker://NAME@sha256:...) takes any value, once, and
    # is the worker's to read: jobs in an image ask for container-runtime,
    # which only workers with a Docker Engine advertise.
    property-set: !dynamic-property-set
      match-property-keys: [OSFamily, ISA, container-runtime]
      wildcard-property-keys: [container-image]
      unique-property-keys: [container-image, container-runtime]
    bot-session-keepalive-timeout: $keepalive
    session-expiry-timer-interval: 1
    poll-interval: 0.2
    # An idle assigner waits interval + random() * jitter-factor seconds
    # between rounds (jitter 1.0 by default: half a second per action).
    assigners:
      - !priority-age-assigner
        count: 1
        interval: 0.05
        jitter-factor: 0.05
instances:
  - name: "$instance"
    services:
      - !execution
        scheduler: *scheduler
      - !cas
        storage: *cas
      - !bytestream
        storage: *cas
      - !action-cache
        cache: *ac
thread-pool-size: 32
# No SO_REUSEPORT: a second server must not share a port with this one.
grpc-server-options:
  grpc.so_reuseport: 0
EOF

"$bgd" server start "$dir/buildgrid.yml" >"$dir/buildgrid.log" 2>&1 &
children+=($!)
# Said only once BuildGrid accepts connections: a `strata worker` started on
# the word would otherwise find the port closed and exit.
for _ in $(seq 1 600); do
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  kill -0 "${children[-1]}" 2>/dev/null || { cat "$dir/buildgrid.log" >&2; exit 1; }
  sleep 0.2
done
(exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || {
  echo "buildgrid-serve: BuildGrid did not listen on port $port within 120 s; logs in $dir" >&2
  exit 1
}
echo "buildgrid: serving grpc://127.0.0.1:$port/$instance (logs in $dir)"
# Whichever stops first takes the other with it.
wait -n
status=$?
echo "buildgrid-serve: a server stopped (exit $status); logs in $dir" >&2
exit 1
