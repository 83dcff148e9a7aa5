#!/bin/sh
# Runs the kefu integration suite (real redis-server + kefu-gateway processes).
# Usage: tests/integration/run.sh [pytest args...]   (paths among the args replace the default
# tests/integration, e.g. run.sh tests/integration/test_chat.py -k race)
# Env: KEFU_BIN_DIR (default <repo>/build), KEFU_TEST_GATEWAY=ws://host:port to use a running
# gateway (process-control tests skip), KEFU_TEST_KEEP=1 to keep the process logs.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
cd "$repo"
export PYTHONDONTWRITEBYTECODE=1
target=tests/integration
for a in "$@"; do
    case "$a" in
        tests/integration/*|*.py|*.py::*) target= ;;
    esac
done
# shellcheck disable=SC2086
exec timeout -k 10 600 /usr/bin/python3 -m pytest -q -p no:cacheprovider $target "$@"
