#!/usr/bin/env bash
# Regenerates the locks from the .in files, for the functions' runtime (Python 3.12 on Cloud
# Functions' Ubuntu 22.04, x86_64): first requirements-dev.txt, the one set of versions the tests
# run against, then each function's requirements.txt, its own closure at those same versions.
# Every distribution is pinned with its hashes. A version already locked stays unless a .in needs
# another; arguments go to the development lock's resolution, e.g. --upgrade-package protobuf.
source "$(dirname "$0")/venv.sh"

lock() {
  uv pip compile --quiet --generate-hashes --python-version "$RUNTIME_VERSION" \
    --python-platform x86_64-manylinux_2_35 --custom-compile-command scripts/lock.sh "$@"
}

lock requirements-dev.in --output-file requirements-dev.txt "$@"
for requirements in functions/*/requirements.in; do
  lock "$requirements" --constraint requirements-dev.txt --output-file "${requirements%.in}.txt"
done
