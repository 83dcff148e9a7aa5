#!/bin/sh
# Writes what is generated from the programs' option tables: the option tables of
# docs/operations.md (between the options:<program>:begin/end markers) and the example
# configuration files deploy/kefu.conf.example and deploy/kefu-worker.conf.example.
# Usage: scripts/gen-docs.sh [--check] [--bin-dir DIR]
#   --check    change nothing; exit 1 and show the difference when a file is not up to date
#              (the test suite runs this: edit the option table, then run this script)
#   --bin-dir  where kefu-gateway and kefu-worker are (default: build)
set -eu
cd "$(dirname "$0")/.."
check=0
bin=build
while [ $# -gt 0 ]; do
    case $1 in
    --check) check=1 ;;
    --bin-dir)
        bin=$2
        shift
        ;;
    *)
        echo "usage: $0 [--check] [--bin-dir DIR]" >&2
        exit 2
        ;;
    esac
    shift
done
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
stale=0

# put FILE NEW: NEW is what FILE should hold.
put() {
    if cmp -s "$1" "$2"; then
        return 0
    fi
    if [ $check -eq 1 ]; then
        echo "$1 is not what the option tables print (run scripts/gen-docs.sh):"
        diff -u "$1" "$2" | head -n 40 || true
        stale=1
    else
        cp "$2" "$1"
        echo "wrote $1"
    fi
}

# splice FILE PROGRAM TABLE: FILE with the text between PROGRAM's markers replaced by TABLE.
splice() {
    awk -v begin="<!-- options:$2:begin -->" -v end="<!-- options:$2:end -->" -v table="$3" '
        $0 == begin { print; while ((getline line < table) > 0) print line; skip = 1; found = 1; next }
        $0 == end { skip = 0 }
        !skip { print }
        END { if (!found) { print "missing marker: " begin > "/dev/stderr"; exit 1 } }
    ' "$1"
}

cp docs/operations.md "$tmp/operations.md"
for prog in kefu-gateway kefu-worker; do
    "$bin/$prog" --dump-config markdown >"$tmp/$prog.md"
    splice "$tmp/operations.md" "$prog" "$tmp/$prog.md" >"$tmp/operations.next"
    mv "$tmp/operations.next" "$tmp/operations.md"
done
put docs/operations.md "$tmp/operations.md"

"$bin/kefu-gateway" --dump-config example >"$tmp/kefu.conf.example"
put deploy/kefu.conf.example "$tmp/kefu.conf.example"
"$bin/kefu-worker" --dump-config example >"$tmp/kefu-worker.conf.example"
put deploy/kefu-worker.conf.example "$tmp/kefu-worker.conf.example"

exit $stale
