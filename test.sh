#!/usr/bin/env bash
# Runs every test against fresh Firestore and Pub/Sub emulators on free ports.
# Extra arguments go to pytest, e.g. ./test.sh -k admin
source "$(dirname "$0")/scripts/venv.sh"
source "$ROOT/scripts/chromium.sh"
exec python -m local.emulators -- python -m pytest "$@"
