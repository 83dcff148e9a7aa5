#!/bin/sh
# Fetch Debian's libwebsockets source package and build it as a static library with libevent
# support. Debian's binary package lacks LWS_WITH_LIBEVENT, so it cannot join our event loop.
# Usage: build-lws.sh <work-dir>   (installs into <work-dir>/install; cached)
set -eu
work=${1:?usage: build-lws.sh WORKDIR}
mkdir -p "$work"
work=$(cd "$work" && pwd)
prefix="$work/install"
# Features kefu does not use, off: every one of them adds to each connection's struct lws
# (HTTP/2, the client side, UDP, unix sockets, raw files, uncommon and custom headers, IPv6).
LWS_TRIM="-DLWS_WITH_HTTP2=OFF -DLWS_WITHOUT_CLIENT=ON -DLWS_WITH_UDP=OFF -DLWS_UNIX_SOCK=OFF
 -DLWS_ROLE_RAW_FILE=OFF -DLWS_WITH_HTTP_UNCOMMON_HEADERS=OFF -DLWS_WITH_CUSTOM_HEADERS=OFF
 -DLWS_WITH_SYS_SMD=OFF -DLWS_IPV6=OFF"
# Our patches on top of Debian's (scripts/lws-patches/*.patch, applied in name order): a strict
# wire (RFC 6455 masking and RSV bits, CRLF-only HTTP headers); timeouts inserted from the tail
# of lws' sorted list (each handshake's timeout used to walk past every handshake in flight).
patches_dir=$(cd "$(dirname "$0")" && pwd)/lws-patches
PATCH_SUM=$(cat "$patches_dir"/*.patch 2>/dev/null | cksum | cut -d' ' -f1)
BUILD_ID="$LWS_TRIM patches:$PATCH_SUM"
stamp="$prefix/kefu-build-options"
if [ -f "$prefix/lib/libwebsockets.a" ] && [ -f "$prefix/include/lws_config.h" ] &&
    [ "$(cat "$stamp" 2>/dev/null)" = "$BUILD_ID" ]; then
    exit 0
fi
apt_dir="$work/apt"
mkdir -p "$apt_dir/lists/partial" "$apt_dir/sources.list.d" "$apt_dir/cache/archives/partial"
: > "$apt_dir/sources.list"
# Derive deb-src entries from the machine's own apt sources (deb822 and one-line formats).
for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    sed -e 's/^Types:.*/Types: deb-src/' "$f" > "$apt_dir/sources.list.d/$(basename "$f")"
done
if [ -f /etc/apt/sources.list ]; then
    sed -n -e 's/^deb \(.*\)/deb-src \1/p' /etc/apt/sources.list > "$apt_dir/sources.list"
fi
APT_OPTS="-o Dir::Etc::SourceList=$apt_dir/sources.list -o Dir::Etc::SourceParts=$apt_dir/sources.list.d -o Dir::State::Lists=$apt_dir/lists -o Dir::Cache=$apt_dir/cache"
src="$work/src"
if [ ! -d "$src" ] || [ -z "$(ls -d "$src"/libwebsockets-*/ 2>/dev/null)" ]; then
    # shellcheck disable=SC2086
    apt-get $APT_OPTS -q update >/dev/null
    rm -rf "$src" && mkdir -p "$src"
    # shellcheck disable=SC2086
    (cd "$src" && apt-get $APT_OPTS -q source --download-only libwebsockets >"$work/apt-source.log" 2>&1 &&
        dpkg-source --no-check -x ./*.dsc >/dev/null)
fi
# A fresh tree every build, so each patch applies exactly once.
(cd "$src" && rm -rf ./libwebsockets-*/ && dpkg-source --no-check -x ./*.dsc >/dev/null)
lws_src=
for d in "$src"/libwebsockets-*/; do
    if [ -d "$d" ]; then lws_src=$d; break; fi
done
[ -n "$lws_src" ] || { echo "no libwebsockets source tree in $src"; exit 1; }
for p in "$patches_dir"/*.patch; do
    [ -f "$p" ] || continue
    patch -s -p1 -d "$lws_src" < "$p" || { echo "cannot apply $p"; exit 1; }
done
rm -rf "$work/build" && mkdir -p "$work/build"
# $LWS_TRIM is split into its flags on purpose (POSIX sh has no arrays).
# shellcheck disable=SC2086
cmake -S "$lws_src" -B "$work/build" -DCMAKE_INSTALL_PREFIX="$prefix" \
    -DCMAKE_BUILD_TYPE=Release -DCMAKE_POSITION_INDEPENDENT_CODE=ON \
    -DLWS_WITH_LIBEVENT=ON -DLWS_WITH_EVLIB_PLUGINS=OFF -DLWS_WITH_SHARED=OFF -DLWS_WITH_STATIC=ON \
    -DDISABLE_WERROR=ON -DLWS_WITHOUT_TESTAPPS=ON -DLWS_WITHOUT_TEST_SERVER=ON \
    -DLWS_WITHOUT_TEST_SERVER_EXTPOLL=ON -DLWS_WITHOUT_TEST_PING=ON -DLWS_WITHOUT_TEST_CLIENT=ON \
    -DLWS_WITH_MINIMAL_EXAMPLES=OFF -DLWS_WITH_SSL=OFF -DLWS_WITH_EXTERNAL_POLL=OFF \
    $LWS_TRIM >"$work/cmake.log" 2>&1 || { tail -30 "$work/cmake.log"; exit 1; }
cmake --build "$work/build" -j"$(nproc)" >"$work/build.log" 2>&1 || { tail -30 "$work/build.log"; exit 1; }
cmake --install "$work/build" >/dev/null
printf '%s' "$BUILD_ID" > "$stamp"
echo "libwebsockets built into $prefix"
