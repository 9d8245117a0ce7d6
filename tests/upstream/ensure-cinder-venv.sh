#!/usr/bin/env bash
# ensure-cinder-venv.sh VENV
#
# Make VENV a Python venv holding the pinned Cinder (the upstream code the
# Cinder image-acceptance differential runs: cinder.image.image_utils and
# Cinder's own fork of the format inspector), unless it already has it.
# Kept apart from the Glance and Nova venvs: each pins its own oslo
# libraries. tests/tests/upstream_cinder.rs calls it.
#
# Environment: CINDER_PYTHON (default python3.11), CINDER_VERSION (default
# 29.0.0). A fresh install downloads ~150 wheels (no compiling): ~60 s.
set -euo pipefail
venv=${1:?usage: ensure-cinder-venv.sh VENV}
py=${CINDER_PYTHON:-python3.11}
version=${CINDER_VERSION:-29.0.0}
log() { echo "ensure-cinder-venv: $*" >&2; }
if ! "$venv/bin/python" -c 'import cinder.image.image_utils' 2>/dev/null \
   || [ "$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("cinder"))' 2>/dev/null)" != "$version" ]; then
  log "creating venv $venv with cinder==$version"
  t0=$(date +%s)
  "$py" -m venv --clear "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "cinder==$version" >&2
  log "pip install took $(( $(date +%s) - t0 )) s"
fi
