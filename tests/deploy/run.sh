#!/bin/bash
# Checks of the deployment files and of the repository's shell scripts, made without a
# container engine, a cluster or a running systemd (none of them is here):
#   docker       deploy/Dockerfile's run stage installs the Debian package of every shared
#                library the programs it ships load (ldd, dpkg -S)
#   systemd      the units pass systemd-analyze verify without a word, and systemd-analyze
#                security rates each at or below 3.0
#   syscalls     the gateway (master and processes, bots, SIGHUP, drain) and the worker, run
#                under strace, make only system calls their unit's SystemCallFilter= allows,
#                and never map memory writable and executable (MemoryDenyWriteExecute=)
#   k8s          deploy/k8s and the compose file pass yamllint (.yamllint); probes, ports,
#                options, environment and names in the manifests agree with the programs
#   scripts      every shell script of the repository passes shellcheck
#   files        deploy/README.md describes every file of deploy/; no build log is tracked
# Usage: tests/deploy/run.sh [check...]   (KEFU_BIN_DIR: the built programs, default build/;
# KEFU_TEST_KEEP=1 keeps the work directory)
set -u
cd "$(dirname "$0")/../.." || exit 1
bin=${KEFU_BIN_DIR:-$PWD/build}
here=tests/deploy
work=$(mktemp -d "${TMPDIR:-/tmp}/kefu-deploy.XXXXXX")
pids=()
PY=/usr/bin/python3
cleanup() {
    local p c
    # strace stays while its program runs: stop the program first.
    for p in "${pids[@]}"; do
        for c in $(ps -o pid= --ppid "$p"); do kill -TERM "$c" 2>/dev/null; done
        kill -TERM "$p" 2>/dev/null
    done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
    if [ "${KEFU_TEST_KEEP:-}" = 1 ]; then echo "work directory kept: $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

# ---- docker ----

# deploy/Dockerfile's last stage, comment lines dropped and continuation lines joined.
run_stage() {
    local last
    last=$(grep -c '^FROM ' deploy/Dockerfile)
    awk -v last="$last" '/^FROM /{n++} n == last' deploy/Dockerfile | grep -v '^[[:space:]]*#' |
        sed -e ':a' -e '/\\$/{N;s/\\\n/ /;ba' -e '}'
}

# Fills pkg_of[path] with the package holding each file given, in one (slow) dpkg -S. ldd
# names /lib paths that dpkg may know under /usr (merged /usr), or by the symlink's target.
declare -A pkg_of=()
find_packages() {
    local f cand p path
    local -A asked=()
    for f in "$@"; do
        for cand in "$f" "/usr$f" "$(readlink -f "$f")"; do asked[$cand]=$f; done
    done
    while read -r p path; do
        f=${asked[$path]:-}
        [ -n "$f" ] && pkg_of[$f]=${p%%:*}
    done < <(dpkg -S "${!asked[@]}" 2>/dev/null | sed 's/: / /')
}

# The packages given and, recursively, what they depend on as installed here (the first of
# alternatives, as apt picks), one per line.
with_depends() {
    local -A seen=()
    local todo=("$@") p d
    while [ ${#todo[@]} -gt 0 ]; do
        p=${todo[0]}
        todo=("${todo[@]:1}")
        [ -n "${seen[$p]:-}" ] && continue
        seen[$p]=1
        echo "$p"
        while read -r d; do
            [ -n "$d" ] && todo+=("$d")
        done < <(dpkg-query -W -f='${Depends},${Pre-Depends}' "$p" 2>/dev/null | tr ',' '\n' |
                 sed -e 's/|.*//' -e 's/(.*//' -e 's/:any//' -e 's/[[:space:]]//g')
    done
}

check_docker() {
    local bad=0 b f so pkg named shipped
    # apt-get install's package arguments, and the base names of COPY --from sources
    named=$(run_stage | sed -n 's/^RUN //p' | sed -e 's/&&/\n/g' -e 's/;/\n/g' |
        awk '$1 == "apt-get" { for (i = 2; i <= NF; i++) if ($i == "install") {
                 for (j = i + 1; j <= NF; j++) if ($j !~ /^-/) print $j; break } }')
    shipped=$(run_stage | awk '$1 == "COPY" && $2 ~ /^--from=/ { for (i = 3; i < NF; i++) print $i }' |
        xargs -r -n1 basename)
    [ -n "$named" ] || { echo "no apt-get install in the run stage"; return 1; }
    [ -n "$shipped" ] || { echo "no program copied into the run stage"; return 1; }
    # libc6 is in every Debian image (every Essential package needs it); with its dependencies.
    local -A allowed=() explicit=()
    for pkg in $named; do explicit[$pkg]=1; done
    # shellcheck disable=SC2086 # $named: one package per word
    while read -r pkg; do allowed[$pkg]=1; done < <(with_depends libc6 $named)
    echo "run stage installs: $(echo "$named" | tr '\n' ' ')"
    for b in $shipped; do
        [ -x "$bin/$b" ] || { echo "$b: not built in $bin"; return 1; }
        if ldd "$bin/$b" | grep 'not found'; then
            echo "$b: a library is missing here"
            bad=1
        fi
    done
    # shellcheck disable=SC2046 # one path per word
    find_packages $(for b in $shipped; do ldd "$bin/$b"; done | awk '$2 == "=>" { print $3 } $1 ~ /^\// { print $1 }' | sort -u)
    for b in $shipped; do
        local -A path=()
        while read -r so f; do path[$so]=$f; done < <(ldd "$bin/$b" |
            awk '$2 == "=>" { print $1, $3 } $1 ~ /^\// { print $1, $1 }')
        # Every library the program names itself: its package named in apt-get install.
        for so in $(readelf -d "$bin/$b" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do
            f=${path[$so]:-}
            pkg=${pkg_of[$f]:-}
            if [ -z "$pkg" ]; then
                echo "$b: $so ($f) belongs to no package"
                bad=1
            elif [ -z "${explicit[$pkg]:-}" ] && [ "$pkg" != libc6 ]; then
                echo "$b: needs $so from $pkg, which the run stage does not install"
                bad=1
            fi
        done
        # Every library loaded at all (those libraries' own needs too): installed with them.
        for so in "${!path[@]}"; do
            f=${path[$so]}
            pkg=${pkg_of[$f]:-}
            if [ -z "$pkg" ]; then
                echo "$b: $so ($f) belongs to no package"
                bad=1
            elif [ -z "${allowed[$pkg]:-}" ]; then
                echo "$b: loads $so from $pkg, which nothing in the run stage installs"
                bad=1
            fi
        done
        unset path
    done
    return $bad
}

# ---- systemd ----

units=(deploy/kefu-gateway.service deploy/kefu-worker.service deploy/redis@.service
       deploy/kefu-archive-backup.service deploy/kefu-archive-backup.timer)

check_systemd() {
    local bad=0 u copy out
    # verify wants the programs where ExecStart= says: copies pointing at the built ones (an
    # instance name for the template).
    mkdir -p "$work/units"
    local copies=()
    for u in "${units[@]}"; do
        copy="$work/units/$(basename "${u/@./@0.}")"
        # the backup script is not built: the repository's copy
        sed -e "s|/usr/local/bin/kefu-archive-backup|$PWD/deploy/kefu-archive-backup|" \
            -e "s|/usr/local/bin/|$bin/|" "$u" >"$copy"
        copies+=("$copy")
    done
    if ! out=$(systemd-analyze verify "${copies[@]}" 2>&1) || [ -n "$out" ]; then
        echo "systemd-analyze verify:"
        echo "$out"
        bad=1
    fi
    # --threshold is in tenths: exposure 3.0 is 30.
    for u in "${units[@]}"; do
        [[ $u == *.service ]] || continue # timers have no sandbox to rate
        if ! out=$(systemd-analyze security --offline=yes --threshold=30 "$u" 2>&1); then
            echo "$out" | grep -v -e '✓' -e 'Overall exposure'
            bad=1
        fi
        echo "$out" | grep 'Overall exposure'
    done
    return $bad
}

# ---- syscalls ----

free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# wait_log FILE PATTERN COUNT: until FILE has COUNT lines matching PATTERN (10 s at most).
wait_log() {
    local _
    for _ in $(seq 100); do
        [ "$(grep -c -- "$2" "$1" 2>/dev/null)" -ge "$3" ] && return 0
        sleep 0.1
    done
    echo "timed out waiting for $3 lines '$2' in $1"
    return 1
}

# The process strace started (its only child).
traced_pid() { ps -o pid= --ppid "$1" | tr -d ' '; }

# check_trace UNIT TRACE...: every system call in the strace logs is allowed by the unit's
# SystemCallFilter= lines, and none maps memory writable and executable or makes it executable.
check_trace() {
    local unit=$1 bad=0 calls=() denied
    shift
    systemd-analyze syscall-filter >"$work/syscall-groups" 2>/dev/null
    mapfile -t calls < <(sed -n 's/^[0-9]\+ \+\([a-z_][a-z0-9_]*\)(.*/\1/p' "$@" | sort -u)
    denied=$("$PY" "$here/syscall_filter.py" "$work/syscall-groups" "$unit" "${calls[@]}")
    if [ -n "$denied" ]; then
        echo "$unit: SystemCallFilter= denies calls the programs made: $denied"
        bad=1
    fi
    if grep -E '^[0-9]+ +(mmap|mprotect|pkey_mprotect)\(.*PROT_EXEC' "$@" |
        grep -E 'mprotect|PROT_WRITE' | head -n3 | grep .; then
        echo "$unit: writable and executable memory (MemoryDenyWriteExecute= would refuse it)"
        bad=1
    fi
    [ $bad -eq 0 ] && echo "$unit: the ${#calls[@]} distinct system calls made are allowed"
    return $bad
}

check_syscalls() {
    local rport gport wport secret gw wk gpid wpid tok_c tok_a
    command -v strace >/dev/null || { echo "strace missing"; return 1; }
    rport=$(free_port)
    redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no \
        --logfile "$work/redis.log" &
    pids+=($!)
    for _ in $(seq 50); do redis-cli -p "$rport" ping >/dev/null 2>&1 && break; sleep 0.1; done
    gport=$(free_port)
    secret=deploy-test-secret
    # Reloadable options in the file, so that SIGHUP re-reads it; bots with the file watch.
    cat >"$work/gateway.conf" <<EOF
bind 127.0.0.1
port $gport
processes 2
node_name deploytest
redis 127.0.0.1:$rport
jwt_secrets $secret
bots_dir $PWD/lua/bots/hello
bot_watch yes
drain_timeout_ms 1000
EOF
    strace -f -qq -o "$work/gateway.trace" "$bin/kefu-gateway" --config "$work/gateway.conf" \
        2>"$work/gateway.log" &
    gw=$!
    pids+=("$gw")
    # The worker's HTTP listener on a free port (the environment names only options the
    # program has, so an older worker without one ignores it).
    wport=$(free_port)
    KEFU_HTTP_PORT=$wport strace -f -qq -o "$work/worker.trace" "$bin/kefu-worker" \
        --redis "127.0.0.1:$rport" --consumer deploytest 2>"$work/worker.log" &
    wk=$!
    pids+=("$wk")
    for _ in $(seq 100); do
        curl -sf "http://127.0.0.1:$gport/readyz" >/dev/null && break
        sleep 0.1
    done
    curl -sf "http://127.0.0.1:$gport/readyz" >/dev/null || { echo "gateway not ready"; cat "$work/gateway.log"; return 1; }
    if ! curl -sf "http://127.0.0.1:$gport/healthz" >/dev/null ||
        ! curl -sf "http://127.0.0.1:$gport/metrics" >/dev/null; then
        echo "/healthz or /metrics failed"
        return 1
    fi
    tok_c=$("$bin/kefu-token" --secret "$secret" --sub deploy-customer --role customer)
    tok_a=$("$bin/kefu-token" --secret "$secret" --sub deploy-agent --role agent --skills default --max-chats 2)
    if "$bin/kefu-worker" --help | grep -q -- --http-port; then
        for _ in $(seq 100); do
            curl -sf "http://127.0.0.1:$wport/readyz" >/dev/null && break
            sleep 0.1
        done
        curl -sf "http://127.0.0.1:$wport/metrics" >/dev/null || { echo "worker /metrics failed"; return 1; }
    fi
    # A customer talks to the bot, asks for a human, and the worker assigns the agent.
    "$PY" "$here/chat.py" "$gport" "$tok_c" "$tok_a" || { tail -n 20 "$work/gateway.log" "$work/worker.log"; return 1; }
    gpid=$(traced_pid "$gw")
    wpid=$(traced_pid "$wk")
    kill -HUP "$gpid" "$wpid"
    wait_log "$work/gateway.log" "SIGHUP: configuration reloaded" 2 &&
        wait_log "$work/worker.log" "SIGHUP: configuration reloaded" 1 || return 1
    kill -TERM "$gpid" "$wpid"
    wait "$gw" "$wk"
    check_trace deploy/kefu-gateway.service "$work/gateway.trace" || return 1
    check_trace deploy/kefu-worker.service "$work/worker.trace"
}

# ---- k8s ----

check_k8s() {
    local bad=0
    yamllint -s deploy/ .yamllint || bad=1
    # kubectl --dry-run=client needs the API server's discovery, so it cannot run offline.
    "$PY" "$here/check_k8s.py" deploy/k8s "$bin" || bad=1
    return $bad
}

# ---- scripts ----

# Every tracked shell script: *.sh, and files whose first line runs sh, bash or dash.
shell_scripts() {
    local f
    git ls-files | while read -r f; do
        [ -f "$f" ] || continue
        case "$f" in
            *.sh) echo "$f" ;;
            *) head -n1 "$f" 2>/dev/null | grep -qE '^#!.*[/ ](ba|da)?sh( |$)' && echo "$f" ;;
        esac
    done
}

check_scripts() {
    local files
    mapfile -t files < <(shell_scripts)
    echo "${#files[@]} scripts: ${files[*]}"
    shellcheck "${files[@]}"
}

# ---- files ----

check_files() {
    local bad=0 f logs
    for f in $(git ls-files deploy | grep -v '^deploy/README.md$'); do
        grep -qF "\`${f#deploy/}\`" deploy/README.md || { echo "deploy/README.md does not describe $f"; bad=1; }
    done
    logs=$(git ls-files '*.cmake.log' '*.log')
    [ -z "$logs" ] || { echo "build logs tracked: $logs"; bad=1; }
    for f in build.cmake.log build-asan.cmake.log build/cmake.log; do
        git check-ignore -q "$f" || { echo ".gitignore does not cover $f"; bad=1; }
    done
    return $bad
}

all=(docker systemd syscalls k8s scripts files)
[ $# -gt 0 ] && all=("$@")
failed=()
for c in "${all[@]}"; do
    echo "--- $c"
    t0=$SECONDS
    if "check_$c"; then
        echo "--- $c: ok ($((SECONDS - t0)) s)"
    else
        echo "--- $c: FAILED"
        failed+=("$c")
    fi
done
[ ${#failed[@]} -eq 0 ] || { echo "failed: ${failed[*]}"; exit 1; }
echo "all ${#all[@]} checks passed"
