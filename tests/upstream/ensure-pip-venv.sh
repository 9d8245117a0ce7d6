#!/usr/bin/env bash
# ensure-pip-venv.sh VENV REQUIREMENT MODULE
#
# Make VENV a Python venv in which MODULE imports and the distribution of
# REQUIREMENT (NAME==VERSION) is installed at that version, unless it
# already is: the pinned upstream code a differential test runs (Nova for
# tests/tests/upstream_nova.rs, Cinder for upstream_cinder.rs). Each gets
# its own venv: they pin conflicting versions of the oslo libraries (and
# both differ from Glance 33's, tests/glance-server/ensure-venv.sh).
# tests/src/upstream.rs calls it; `make test-fleet` for ansible-core. A fresh venv downloads ~150 wheels (no
# compiling): about a minute.
#
# Environment: UPSTREAM_PYTHON (default python3.11).
set -euo pipefail
venv=${1:?usage: ensure-pip-venv.sh VENV NAME==VERSION MODULE}
req=${2:?usage: ensure-pip-venv.sh VENV NAME==VERSION MODULE}
module=${3:?usage: ensure-pip-venv.sh VENV NAME==VERSION MODULE}
py=${UPSTREAM_PYTHON:-python3.11}
name=${req%%==*}
version=${req#*==}
log() { echo "ensure-pip-venv: $*" >&2; }
installed() {
  "$venv/bin/python" -c "import $module" 2>/dev/null &&
  [ "$("$venv/bin/python" -c "import importlib.metadata as m; print(m.version('$name'))" 2>/dev/null)" = "$version" ]
}
if ! installed; then
  log "creating venv $venv with $req"
  t0=$(date +%s)
  "$py" -m venv --clear "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "$req" >&2
  log "pip install took $(( $(date +%s) - t0 )) s"
fi
