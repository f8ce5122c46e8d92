#!/usr/bin/env bash
# A throw-away local PostgreSQL server for trying multi-worker sweeps (the same steps as
# tests/test_sweep_postgres.py). Debian's postgresql package is installed with apt-get when absent.
#
#   scripts/sweep_postgres.sh start DIR   # prints the storage URL to pass to `microexp sweep --storage`
#   scripts/sweep_postgres.sh stop DIR
#
# The server listens on 127.0.0.1 only, on a free port, with trust authentication (no password):
# fine for one machine; for several machines use a real, password-protected server.
set -euo pipefail

action=${1:-}
dir=${2:-}
if [[ -z "$action" || -z "$dir" ]]; then
  echo "usage: $0 start|stop DIR" >&2
  exit 2
fi

bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
as_user=()
if [[ $(id -u) -eq 0 ]]; then
  as_user=(runuser -u postgres --)  # PostgreSQL refuses to run as root
fi

if [[ "$action" == stop ]]; then
  "${as_user[@]}" "$bin/pg_ctl" -D "$dir/data" -m fast -w stop
  exit 0
fi
[[ "$action" == start ]] || { echo "$0: unknown action $action (start or stop)" >&2; exit 2; }

if [[ -z "$bin" ]]; then
  if [[ $(id -u) -ne 0 ]]; then
    echo "$0: PostgreSQL server not installed; as root: apt-get install -y postgresql" >&2
    exit 1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql
  bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
fi
if ! .venv/bin/python -c "import psycopg2" 2>/dev/null; then
  echo "$0: the printed postgresql+psycopg2:// URL needs the psycopg2 driver: .venv/bin/pip install psycopg2-binary (a bare postgresql:// URL needs psycopg 3 instead)" >&2
fi

mkdir -p "$dir"
chmod 755 "$dir"
[[ ${#as_user[@]} -gt 0 ]] && chown postgres "$dir"
port=$(python3 -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
"${as_user[@]}" "$bin/initdb" -D "$dir/data" -U microexp --auth=trust -E UTF8 >/dev/null
"${as_user[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w \
  -o "-p $port -c listen_addresses=127.0.0.1 -k $dir" start >/dev/null
"$bin/createdb" -h 127.0.0.1 -p "$port" -U microexp sweep
echo "postgresql+psycopg2://microexp@127.0.0.1:$port/sweep"
