#!/bin/sh
# Builds the libFuzzer targets with clang into build-fuzz/ and runs each for N seconds.
# Usage: tests/fuzz/run.sh [seconds]   (default 30; crashes are left in build-fuzz/artifacts/)
set -eu
secs=${1:-30}
root=$(cd "$(dirname "$0")/../.." && pwd)
build="$root/build-fuzz"
targets="fuzz_codec_json fuzz_codec_msgpack fuzz_token fuzz_mask"

CC=clang cmake -S "$root" -B "$build" -DKEFU_FUZZ=ON -DKEFU_TESTS=OFF \
    -DSANITIZE=address,undefined -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
# shellcheck disable=SC2086
cmake --build "$build" -j"$(nproc)" --target $targets

mkdir -p "$build/artifacts"
status=0
for t in $targets; do
    corpus="$build/corpus/$t"
    mkdir -p "$corpus"
    echo "== $t: ${secs}s"
    "$build/$t" -max_total_time="$secs" -max_len=8192 -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 -artifact_prefix="$build/artifacts/$t-" \
        "$corpus" "$root/tests/fuzz/corpus/$t" || status=1
done
exit $status
