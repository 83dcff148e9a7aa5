#!/bin/sh
# Runs the kefu integration suite (real redis-server + kefu-gateway processes).
# Usage: tests/integration/run.sh [pytest args...]
# Env: KEFU_BIN_DIR (default <repo>/build), KEFU_TEST_GATEWAY=ws://host:port to use a running
# gateway (process-control tests skip), KEFU_TEST_KEEP=1 to keep the logs.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
cd "$repo"
export PYTHONDONTWRITEBYTECODE=1
exec timeout -k 10 600 /usr/bin/python3 -m pytest -q -p no:cacheprovider tests/integration "$@"
