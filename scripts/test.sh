#!/bin/bash
# Installs what is missing, builds kefu (normal and ASan+UBSan) and runs every test suite:
# unit tests (cmocka/ctest), integration tests (a real redis-server and Redis Cluster, real
# gateways, real WebSocket clients), the load-test smoke, and a short fuzzing pass.
# Usage: scripts/test.sh [--quick]   (--quick: skip the sanitizer build and fuzzing)
set -u
cd "$(dirname "$0")/.." || exit 1
quick=0
[ "${1:-}" = "--quick" ] && quick=1
jobs=$(nproc 2>/dev/null || echo 2)

scripts/deps.sh || { echo "installing dependencies failed"; exit 1; }

passed=0
failed=0
failed_names=""
suite() {
    local name=$1
    shift
    echo
    echo "=== $name"
    local t0=$SECONDS
    if "$@"; then
        passed=$((passed + 1))
        echo "=== $name: ok ($((SECONDS - t0)) s)"
    else
        failed=$((failed + 1))
        failed_names="$failed_names [$name]"
        echo "=== $name: FAILED ($((SECONDS - t0)) s)"
    fi
}
# Runs a command with its output in a log file; prints the tail when it fails or at the end.
quiet() {
    local log=$1
    shift
    if "$@" >"$log" 2>&1; then
        grep -E "Done [0-9]+ runs|^=== " "$log" | tail -n 20 || true
    else
        tail -n 60 "$log"
        return 1
    fi
}
build() {
    local dir=$1
    shift
    cmake -S . -B "$dir" "$@" >"$dir/cmake.log" 2>&1 || { cat "$dir/cmake.log"; return 1; }
    cmake --build "$dir" -j"$jobs" 2>&1 | grep -Ev '^\[ *[0-9]+%\]' || true
    test "${PIPESTATUS[0]}" -eq 0
}

mkdir -p build build-asan
suite "build" build build -DCMAKE_BUILD_TYPE=RelWithDebInfo
suite "deploy files and scripts" env KEFU_BIN_DIR="$PWD/build" tests/deploy/run.sh
suite "unit tests" ctest --test-dir build --output-on-failure
# The plain build's suite runs with the kefu Redis module loaded into every redis-server (so
# msg.send goes through KEFU.MSGSEND), the sanitizer build's without it (the msg_send script).
suite "integration tests (Redis module)" env KEFU_BIN_DIR="$PWD/build" \
    KEFU_TEST_REDIS_MODULE="$PWD/build/kefu_redis.so" tests/integration/run.sh
if [ -x load-tests/smoke.sh ]; then
    suite "load-test smoke" env KEFU_BIN_DIR="$PWD/build" load-tests/smoke.sh
fi
suite "demo smoke" scripts/demo.sh --smoke

if [ $quick -eq 0 ]; then
    export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:halt_on_error=1:detect_stack_use_after_return=1"
    export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
    export LSAN_OPTIONS="suppressions=$PWD/tests/lsan.supp"
    suite "build (asan+ubsan)" build build-asan -DSANITIZE=address,undefined -DCMAKE_BUILD_TYPE=Debug
    suite "unit tests (asan+ubsan)" ctest --test-dir build-asan --output-on-failure
    suite "integration tests (asan+ubsan)" env KEFU_BIN_DIR="$PWD/build-asan" tests/integration/run.sh
    if [ -x tests/fuzz/run.sh ] && command -v clang >/dev/null; then
        suite "fuzz (20 s per target)" quiet build/fuzz.log tests/fuzz/run.sh 20
    fi
fi

echo
[ -n "$failed_names" ] && echo "failed suites:$failed_names"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
