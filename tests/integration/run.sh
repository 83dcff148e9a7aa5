#!/bin/sh
# Runs the kefu integration suite (real redis-server + kefu-gateway processes).
# Usage: tests/integration/run.sh [pytest args...]   (paths among the args replace the default
# tests/integration, e.g. run.sh tests/integration/test_chat.py -k race)
# Env: KEFU_BIN_DIR (default <repo>/build), KEFU_TEST_GATEWAY=ws://host:port to use a running
# gateway (process-control tests skip), KEFU_TEST_KEEP=1 to keep the process logs,
# KEFU_TEST_JOBS=N to run the tests in N pytest-xdist worker processes (default 3; 0: serially in
# one process, for debugging; an -n in the pytest args wins). Every worker starts its own Redis,
# gateways and workers on its own ports; against KEFU_TEST_GATEWAY the default is 0, since the
# tests would share that one gateway and its Redis.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
cd "$repo"
export PYTHONDONTWRITEBYTECODE=1
target=tests/integration
jobs=${KEFU_TEST_JOBS:-3}
[ -z "${KEFU_TEST_JOBS:-}" ] && [ -n "${KEFU_TEST_GATEWAY:-}" ] && jobs=0
for a in "$@"; do
    case "$a" in
        tests/integration/*|*.py|*.py::*) target= ;;
        -n|-n[0-9]*|--numprocesses|--numprocesses=*) jobs= ;;
    esac
done
if [ -n "$jobs" ] && ! /usr/bin/python3 -c "import xdist" 2>/dev/null; then
    echo "run.sh: python3-pytest-xdist is not installed (scripts/deps.sh), running serially" >&2
    jobs=
fi
# shellcheck disable=SC2086
exec timeout -k 10 600 /usr/bin/python3 -m pytest -q -p no:cacheprovider ${jobs:+-n "$jobs"} \
    $target "$@"
