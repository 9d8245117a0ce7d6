#!/usr/bin/env bash
# stop-keystone.sh STATE_DIR -- stop the Keystone that start-keystone.sh
# started there: the same uWSGI pid files as a test Glance.
STOP_NAME=stop-keystone exec "$(dirname "$0")/../glance-server/stop-glance.sh" "$@"
