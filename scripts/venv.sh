# Sourced by run.sh, test.sh and bench.sh: makes .venv exist and match requirements.
# It uses Python 3.12, the functions' deploy runtime, when this machine has it
# (on the PATH or installed by pyenv), else python3 if it is 3.11 or newer;
# PYTHON=/path/to/python overrides. .venv is made afresh when its Python
# version is not the chosen one, and reinstalled when the development lock
# (requirements-dev.txt, see scripts/lock.sh) changed: every distribution at its
# locked version, each file checked against its locked hashes.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
RUNTIME_VERSION=3.12

python_version() {
  "$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null || true
}

choose_python() {
  local candidate
  # A pyenv shim answers only when its version is selected, so the installed
  # versions are also tried by path.
  for candidate in "python$RUNTIME_VERSION" "${PYENV_ROOT:-$HOME/.pyenv}/versions/$RUNTIME_VERSION".*/bin/python3; do
    if [ "$(python_version "$candidate")" = "$RUNTIME_VERSION" ]; then
      echo "$candidate"
      return
    fi
  done
  echo python3
}

PYTHON="${PYTHON:-$(choose_python)}"
wanted_version="$(python_version "$PYTHON")"
if [ -z "$wanted_version" ]; then
  echo "error: $PYTHON not found; install Python $RUNTIME_VERSION (or 3.11 or newer)" >&2
  exit 1
fi
case "$wanted_version" in
  3.1[1-9]) ;;
  *) echo "error: $PYTHON is Python $wanted_version; install Python $RUNTIME_VERSION (or 3.11 or newer)" >&2; exit 1 ;;
esac
if [ "$wanted_version" != "$RUNTIME_VERSION" ]; then
  echo "note: Python $RUNTIME_VERSION, the functions' runtime, not found; using $PYTHON ($wanted_version)" >&2
fi
if [ -x "$VENV/bin/python" ] && [ "$(python_version "$VENV/bin/python")" != "$wanted_version" ]; then
  echo "recreating .venv: it has Python $(python_version "$VENV/bin/python"), not $wanted_version" >&2
  rm -rf "$VENV"
fi
if [ ! -x "$VENV/bin/python" ]; then
  echo "creating virtual environment in .venv with Python $wanted_version" >&2
  "$PYTHON" -m venv "$VENV"
fi
stamp="$VENV/.requirements.sha256"
wanted="$(sha256sum < "$ROOT/requirements-dev.txt" | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
  echo "installing Python dependencies into .venv" >&2
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --require-hashes -r "$ROOT/requirements-dev.txt"
  echo "$wanted" > "$stamp"
fi
export PATH="$VENV/bin:$PATH"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
cd "$ROOT"
