#!/usr/bin/env bash
# A throwaway PostgreSQL server for tests of the PostgreSQL decisions sink.
#
#   tools/postgres.sh start [DIR]   install PostgreSQL if missing (Debian package, needs
#                                   root), start a new cluster in DIR (default: a new
#                                   temporary folder) on a free port, print its DSN
#   tools/postgres.sh stop DIR      stop that cluster (its files stay; remove DIR after)
#
# Only the DSN goes to stdout (postgresql://postgres@127.0.0.1:PORT/postgres, trust
# authentication on 127.0.0.1 only); progress and errors go to stderr. initdb refuses to run
# as root, so under root the cluster runs as the `postgres` user that the package creates.
set -euo pipefail

say() { echo "postgres.sh: $*" >&2; }

bindir() {
  local dir
  dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  [[ -n "$dir" && -x "$dir/initdb" ]] && echo "$dir"
}

install_if_missing() {
  if bindir >/dev/null; then return; fi
  if [[ $EUID -ne 0 ]]; then
    say "PostgreSQL is not installed and installing it needs root: apt-get install postgresql"
    exit 1
  fi
  say "installing PostgreSQL (Debian package postgresql)"
  # Only the binaries are used; a system cluster the package may create is left alone.
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends postgresql >&2
  bindir >/dev/null || { say "no initdb under /usr/lib/postgresql/*/bin after install"; exit 1; }
}

# Run a command as the cluster's owner: `postgres` under root, else the caller.
as_owner() {
  if [[ $EUID -eq 0 ]]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start() {
  install_if_missing
  local bin dir port
  bin=$(bindir)
  dir=${1:-$(mktemp -d "${TMPDIR:-/tmp}/docstreams-pg.XXXXXX")}
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  if [[ $EUID -eq 0 ]]; then
    chown postgres: "$dir"
    chmod 700 "$dir"
  fi
  as_owner "$bin/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 \
    >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; say "initdb failed"; exit 1; }
  for _ in 1 2 3 4 5; do
    port=$(free_port)
    # fsync off: a throwaway test cluster trades durability for speed.
    if as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start \
        -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off \
            -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" >&2; then
      echo "$port" > "$dir/port"
      say "PostgreSQL $("$bin/postgres" --version | awk '{print $3}') running in $dir on port $port"
      echo "postgresql://postgres@127.0.0.1:$port/postgres"
      return
    fi
    say "start on port $port failed; trying another"
  done
  tail -n 20 "$dir/server.log" >&2 || true
  exit 1
}

stop() {
  local dir=${1:?usage: tools/postgres.sh stop DIR}
  local bin
  bin=$(bindir) || { say "PostgreSQL is not installed"; exit 1; }
  if [[ -f "$dir/data/postmaster.pid" ]]; then
    as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w -t 60 stop >&2
  fi
}

case "${1:-}" in
  start) shift; start "$@" ;;
  stop) shift; stop "$@" ;;
  *) echo "usage: tools/postgres.sh start [DIR] | stop DIR" >&2; exit 2 ;;
esac
