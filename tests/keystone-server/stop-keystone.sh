#!/usr/bin/env bash
# stop-keystone.sh STATE_DIR -- stop the Keystone that start-keystone.sh started
# there. Sends SIGTERM to the uWSGI master (die-on-term makes it stop its
# workers and exit), waits up to 20 s, then SIGKILL. Touches no other process.
set -euo pipefail
if [ $# -ne 1 ]; then echo "usage: $0 STATE_DIR" >&2; exit 2; fi
state=$1
for f in "$state/run/launcher.pid" "$state/run/uwsgi.pid"; do
  [ -s "$f" ] || continue
  pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid"
    for _ in $(seq 1 100); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.2
    done
    if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" || true; fi
  fi
  rm -f "$f"
done
echo "stop-keystone: stopped" >&2
