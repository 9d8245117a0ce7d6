#!/usr/bin/env bash
# start-keystone.sh STATE_DIR PORT [GLANCE_URL]
#
# Start a real OpenStack Keystone identity API (v3) on 127.0.0.1:PORT for
# integration tests: SQLite database, fernet tokens, served by uWSGI.
# Bootstraps user "admin" / password "secret" with role admin on project
# "admin", all in domain "Default", region RegionOne, and the identity
# endpoints. With GLANCE_URL it also registers service type "image" (name
# "glance") with a public endpoint GLANCE_URL in RegionOne, so that token
# catalogs point at a test Glance. Everything it writes lives under
# STATE_DIR. The server runs in the background; on success the script prints
# http://127.0.0.1:PORT/v3 on stdout and exits 0. Progress goes to stderr.
# Stop it with stop-keystone.sh STATE_DIR.
#
# Environment (all optional):
#   KEYSTONE_VENV           venv holding keystone + uwsgi. Default
#                           <workspace>/target/keystone-venv; created (pip
#                           install) when it lacks the tools.
#   KEYSTONE_PYTHON         interpreter for a new venv (default python3.11;
#                           keystone 30 needs Python >= 3.11).
#   KEYSTONE_VERSION        keystone version pip installs (default 30.0.0,
#                           the 2026.2 release, same cycle as glance 33).
#   KEYSTONE_START_TIMEOUT  seconds to wait for GET /v3 (default 90).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

if [ $# -lt 2 ] || [ $# -gt 3 ]; then
  echo "usage: $0 STATE_DIR PORT [GLANCE_URL]" >&2
  exit 2
fi
port=$2
case $port in
  ''|*[!0-9]*) echo "start-keystone: PORT must be a number" >&2; exit 2 ;;
esac
glance_url=${3:-}
mkdir -p "$1"
state=$(cd "$1" && pwd)
venv=${KEYSTONE_VENV:-$(cd "$here/../.." && pwd)/target/keystone-venv}
py=${KEYSTONE_PYTHON:-python3.11}
version=${KEYSTONE_VERSION:-30.0.0}
timeout=${KEYSTONE_START_TIMEOUT:-90}
url="http://127.0.0.1:$port/v3"
password=secret

log() { echo "start-keystone: $*" >&2; }

# Refuse to start twice on one state dir.
if [ -s "$state/run/uwsgi.pid" ] && kill -0 "$(cat "$state/run/uwsgi.pid")" 2>/dev/null; then
  log "already running (pid $(cat "$state/run/uwsgi.pid"))"
  echo "$url"
  exit 0
fi
# Refuse a port something else already answers on.
if curl -s -o /dev/null --max-time 2 "$url"; then
  log "something already listens on port $port"
  exit 1
fi

# 1. Software. A fresh install downloads ~100 wheels (the venv ends up
#    ~205 MB) and compiles uWSGI from its sdist (needs gcc and the Python
#    headers): ~75 s with an empty pip cache, ~30 s with a warm one (e.g.
#    after start-glance.sh; every shared dependency has glance 33's version).
if [ ! -x "$venv/bin/keystone-manage" ] || [ ! -x "$venv/bin/uwsgi" ]; then
  log "creating venv $venv with keystone==$version and uwsgi"
  t0=$(date +%s)
  "$py" -m venv "$venv"
  constraints=()
  if [ "$version" = 30.0.0 ] && [ -f "$here/requirements-keystone-py311.txt" ]; then
    constraints=(-c "$here/requirements-keystone-py311.txt")
  fi
  "$venv/bin/pip" install --quiet --disable-pip-version-check \
      "${constraints[@]}" "keystone==$version" uwsgi >&2
  log "pip install took $(( $(date +%s) - t0 )) s"
fi

# 2. Directories and configuration. Key repositories must not be readable
#    by others (keystone warns) and must exist before *_setup.
mkdir -p "$state"/{etc,log,run}
mkdir -p -m 700 "$state/fernet-keys" "$state/credential-keys"
sed -e "s#@STATE@#$state#g" "$here/keystone.conf.in" > "$state/etc/keystone.conf"
sed -e "s#@STATE@#$state#g" -e "s#@PORT@#$port#g" \
    "$here/uwsgi.ini.in" > "$state/etc/uwsgi.ini"

# 3. Keys and schema. Each keystone-manage run spends ~2 s importing
#    keystone, so the three independent ones run in parallel. All are
#    idempotent: a rerun keeps existing keys and only checks the schema
#    version. Run as root, *_setup insist on --keystone-user/--keystone-group
#    (the key files get that owner): name whoever runs this script.
t0=$(date +%s)
manage() {
  "$venv/bin/keystone-manage" --config-file "$state/etc/keystone.conf" "$@" \
      >>"$state/log/keystone-manage.log" 2>&1
}
owner=(--keystone-user "$(id -un)" --keystone-group "$(id -gn)")
manage fernet_setup "${owner[@]}" & p1=$!
manage credential_setup "${owner[@]}" & p2=$!
manage db_sync & p3=$!
for p in $p1 $p2 $p3; do
  wait $p || { log "keystone-manage failed; see $state/log/keystone-manage.log"; exit 1; }
done

# 4. Server, started while step 5 runs (the app reads no rows at start-up).
#    keystone.wsgi.api reads OS_KEYSTONE_CONFIG_DIR/keystone.conf.
rm -f "$state/run/uwsgi.pid"
OS_KEYSTONE_CONFIG_DIR="$state/etc" PATH="$venv/bin:$PATH" \
  setsid "$venv/bin/uwsgi" --ini "$state/etc/uwsgi.ini" \
  </dev/null >>"$state/log/uwsgi.stdout" 2>&1 &
echo $! > "$state/run/launcher.pid"
# From here on, any failure (set -e included) stops the server again.
trap 'rc=$?; [ $rc -eq 0 ] || "$here/stop-keystone.sh" "$state" || true' EXIT

# 5. Admin user, project "admin", roles admin/manager/member/reader, region
#    and identity endpoints. A rerun leaves existing resources alone but
#    moves the identity endpoints to this PORT.
manage bootstrap --bootstrap-password "$password" \
    --bootstrap-username admin --bootstrap-project-name admin \
    --bootstrap-role-name admin --bootstrap-service-name keystone \
    --bootstrap-admin-url "$url" --bootstrap-internal-url "$url" \
    --bootstrap-public-url "$url" --bootstrap-region-id RegionOne ||
  { log "keystone-manage bootstrap failed; see $state/log/keystone-manage.log"; exit 1; }
log "keystone-manage setup took $(( $(date +%s) - t0 )) s"

# 6. Wait until the version document answers 200 (the app loads lazily in
#    the worker, so the port may accept connections before that).
deadline=$(( $(date +%s) + timeout ))
until curl -fs -o /dev/null --max-time 2 "$url"; do
  if ! kill -0 "$(cat "$state/run/launcher.pid")" 2>/dev/null; then
    log "uWSGI exited; last lines of $state/log/uwsgi.log:"
    tail -n 20 "$state/log/uwsgi.log" >&2 || true
    exit 1
  fi
  if [ "$(date +%s)" -ge "$deadline" ]; then
    log "not healthy after $timeout s; stopping it; see $state/log/"
    exit 1
  fi
  sleep 0.2
done
log "healthy after $(( $(date +%s) - t0 )) s in all (uwsgi pid $(cat "$state/run/launcher.pid"))"

# 7. The image service. keystone-manage cannot create services other than
#    identity, so this goes through the API with an admin token. Idempotent:
#    an existing "image" service is reused, its public endpoints with
#    another URL are deleted, an identical one is kept.
json() { "$venv/bin/python" -c "import json,sys; d=json.load(sys.stdin); print($1)"; }
if [ -n "$glance_url" ]; then
  tmp="$state/run/register"
  curl -fs -D "$tmp.hdr" -o /dev/null -H 'Content-Type: application/json' -d '{
      "auth": {"identity": {"methods": ["password"], "password": {"user": {
        "name": "admin", "domain": {"name": "Default"}, "password": "'"$password"'"}}},
      "scope": {"project": {"name": "admin", "domain": {"name": "Default"}}}}}' \
      "$url/auth/tokens" || { log "cannot get an admin token"; exit 1; }
  token=$(grep -i '^X-Subject-Token:' "$tmp.hdr" | cut -d' ' -f2 | tr -d '\r')
  api() { # METHOD PATH [JSON] -> response body on stdout
    curl -fs -X "$1" -H "X-Auth-Token: $token" -H 'Content-Type: application/json' \
        ${3:+-d "$3"} "$url$2" || { log "$1 $2 failed"; return 1; }
  }
  sid=$(api GET '/services?type=image' | json 'd["services"][0]["id"] if d["services"] else ""')
  if [ -z "$sid" ]; then
    sid=$(api POST /services '{"service": {"type": "image", "name": "glance",
        "description": "test Glance", "enabled": true}}' | json 'd["service"]["id"]')
  fi
  eps=$(api GET "/endpoints?service_id=$sid&interface=public" |
        json '"\n".join(e["id"] + "|" + e["url"] for e in d["endpoints"])')
  keep=no
  for line in $eps; do
    if [ "${line#*|}" = "$glance_url" ] && [ $keep = no ]; then keep=yes
    else api DELETE "/endpoints/${line%%|*}" >/dev/null; fi
  done
  if [ $keep = no ]; then
    api POST /endpoints '{"endpoint": {"service_id": "'"$sid"'", "interface": "public",
        "url": "'"$glance_url"'", "region_id": "RegionOne", "enabled": true}}' >/dev/null
  fi
  rm -f "$tmp.hdr"
  log "image service $sid: public endpoint $glance_url"
fi
echo "$url"
