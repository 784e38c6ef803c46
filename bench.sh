#!/usr/bin/env bash
# Runs one benchmark from a fresh clone; it starts the emulators and servers it needs.
#   ./bench.sh hotpath [--seconds 4]     one track instance as deployed against bare functions (needs wrk)
#   ./bench.sh soak [--clicks 100000]    counting accuracy and Firestore cost as deployed (needs wrk)
#   ./bench.sh cache_memory              a track instance's memory with 100,000 campaigns cached
#   ./bench.sh admin [--campaigns 10000] document reads and latency of the admin's reads, its memory listing all
#   ./bench.sh logs                      what log correlation costs a click
set -euo pipefail
source "$(dirname "$0")/scripts/venv.sh"
case "${1:-}" in
  hotpath|soak|cache_memory|admin|logs) name="$1"; shift ;;
  *) echo "usage: ./bench.sh hotpath|soak|cache_memory|admin|logs [options]" >&2; exit 2 ;;
esac
if { [ "$name" = hotpath ] || [ "$name" = soak ]; } && ! command -v wrk >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing wrk, the load generator" >&2
    apt-get install -y -qq wrk >/dev/null
  else
    echo "error: the $name benchmark drives load with wrk: sudo apt-get install wrk" >&2
    exit 2
  fi
fi
exec python -m "bench.$name" "$@"
