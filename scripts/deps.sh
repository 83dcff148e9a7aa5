#!/bin/sh
# Installs the Debian packages kefu builds, tests and runs with (as root), only when missing.
set -eu
PKGS="build-essential cmake pkg-config dpkg-dev ca-certificates curl
libevent-dev libhiredis-dev libmsgpack-dev libjemalloc-dev liblua5.4-dev libjansson-dev
libssl-dev libcmocka-dev uthash-dev redis-server redis-tools haproxy patch
python3 python3-websockets python3-msgpack python3-pytest python3-pytest-xdist
gnuplot-nox clang libclang-rt-14-dev
shellcheck yamllint python3-yaml systemd strace procps tzdata
postgresql libpq-dev
chromium chromium-driver python3-selenium fonts-noto-cjk"
missing=""
for p in $PKGS; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done
if [ -n "$missing" ]; then
    echo "installing:$missing"
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO=sudo
    $SUDO apt-get update -q
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends $missing
fi
