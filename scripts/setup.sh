#!/usr/bin/env bash
# Set up ffebm-cosim on a Debian-like machine: ngspice (system packages), a virtual environment in
# .venv with the package, torch 2.13.0 (CPU) and the test tools. Safe to run again: it only does
# what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

have_ngspice() { ldconfig -p 2>/dev/null | grep -q 'libngspice\.so'; }

if ! have_ngspice || ! command -v ngspice >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing ngspice (apt-get install ngspice libngspice0 libngspice0-dev)" >&2
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ngspice libngspice0 libngspice0-dev >/dev/null
  else
    echo "setup: ngspice is missing and cannot be installed from here (need root and apt-get)." >&2
    echo "       Install it with: sudo apt-get install ngspice libngspice0 libngspice0-dev" >&2
    echo "       (other systems: a shared libngspice, then export NGSPICE_LIBRARY_PATH=/path/to/libngspice.so)" >&2
    exit 1
  fi
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.ffebm-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  .venv/bin/python -m pip install -q torch==2.13.0
  .venv/bin/python -m pip install -q -e '.[test]'
  touch "$stamp"
fi
echo "setup: ready (.venv/bin/cosim)" >&2
