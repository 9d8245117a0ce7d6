#!/usr/bin/env bash
# ensure-venv.sh VENV
#
# Make VENV a Python venv holding the pinned Glance 33 (and with it
# oslo.utils 10.x, the upstream code the differential tests run) and uWSGI,
# unless it already has them, and the `xattr` package Glance's xattr cache
# driver imports (a test requirement of Glance's, not of the server). start-glance.sh calls it; the upstream
# differential tests call it alone (they need Glance's code, not a server).
#
# Environment: GLANCE_PYTHON (default python3.11), GLANCE_VERSION (default
# 33.0.0). A fresh install downloads ~100 wheels (~255 MB) and compiles
# uWSGI from its sdist (gcc and the Python headers): ~100 s with an empty
# pip cache, ~60 s with a warm one.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
venv=${1:?usage: ensure-venv.sh VENV}
py=${GLANCE_PYTHON:-python3.11}
version=${GLANCE_VERSION:-33.0.0}
log() { echo "ensure-venv: $*" >&2; }
if [ ! -x "$venv/bin/glance-manage" ] || [ ! -x "$venv/bin/uwsgi" ]; then
  log "creating venv $venv with glance==$version and uwsgi"
  t0=$(date +%s)
  "$py" -m venv "$venv"
  constraints=()
  if [ "$version" = 33.0.0 ] && [ -f "$here/requirements-glance33-py311.txt" ]; then
    constraints=(-c "$here/requirements-glance33-py311.txt")
  fi
  "$venv/bin/pip" install --quiet --disable-pip-version-check \
      "${constraints[@]}" "glance==$version" uwsgi >&2
  log "pip install took $(( $(date +%s) - t0 )) s"
fi
if ! "$venv/bin/python" -c 'import xattr' 2>/dev/null; then
  log "adding xattr to $venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check \
      -c "$here/requirements-glance33-py311.txt" xattr==1.3.1 >&2
fi
