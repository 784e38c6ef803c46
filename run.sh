#!/usr/bin/env bash
# Runs the whole tracker locally: emulators, the three functions, one port.
# PORT (default 8080), AUTH_USER, AUTH_PASSWORD (default admin/admin), FALLBACK_URL.
source "$(dirname "$0")/scripts/venv.sh"
exec python -m local.stack "$@"
