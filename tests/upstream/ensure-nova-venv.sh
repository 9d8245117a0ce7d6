#!/usr/bin/env bash
# ensure-nova-venv.sh VENV
#
# Make VENV a Python venv holding the pinned Nova (the upstream code the
# Nova image-cache differential runs: nova.virt.libvirt.imagecache),
# unless it already has it. Kept apart from the Glance 33 venv
# (tests/glance-server/ensure-venv.sh): the two pin conflicting versions
# of the oslo libraries. tests/src/lib.rs (upstream_nova_python) calls it.
#
# Environment: NOVA_PYTHON (default python3.11), NOVA_VERSION (default
# 34.0.0). A fresh install downloads ~150 wheels (no compiling): ~55 s.
set -euo pipefail
venv=${1:?usage: ensure-nova-venv.sh VENV}
py=${NOVA_PYTHON:-python3.11}
version=${NOVA_VERSION:-34.0.0}
log() { echo "ensure-nova-venv: $*" >&2; }
if ! "$venv/bin/python" -c 'import nova.virt.libvirt.imagecache' 2>/dev/null \
   || [ "$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("nova"))' 2>/dev/null)" != "$version" ]; then
  log "creating venv $venv with nova==$version"
  t0=$(date +%s)
  "$py" -m venv --clear "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "nova==$version" >&2
  log "pip install took $(( $(date +%s) - t0 )) s"
fi
