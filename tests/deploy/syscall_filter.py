"""Prints the system calls, of those given, that a unit's SystemCallFilter= lines deny.

Usage: syscall_filter.py GROUPS UNIT CALL...
GROUPS is the output of `systemd-analyze syscall-filter` (every @group with its members).
"""
import re
import sys


def read_groups(path):
    groups, cur = {}, None
    for line in open(path, encoding="utf-8"):
        if line.startswith("@"):
            cur = groups.setdefault(line.strip(), [])
        elif not line.strip() or not line[0].isspace():
            cur = None
        elif cur is not None and not line.strip().startswith("#"):
            cur.append(line.strip())
    return groups


def expand(names, groups):
    out = set()
    for n in names:
        out |= expand(groups[n], groups) if n.startswith("@") else {n}
    return out


def main():
    groups = read_groups(sys.argv[1])
    mode, calls = None, set()
    for line in open(sys.argv[2], encoding="utf-8"):
        m = re.match(r"\s*SystemCallFilter=(.*)", line)
        if not m:
            continue
        value = m.group(1).strip()
        if not value:
            mode, calls = None, set()
            continue
        deny = value.startswith("~")
        names = expand(value.lstrip("~").split(), groups)
        if mode is None:
            mode, calls = ("deny" if deny else "allow"), names
        elif (mode == "allow") != deny:
            calls |= names
        else:
            calls -= names
    if mode is None:
        sys.exit(f"{sys.argv[2]}: no SystemCallFilter=")
    if mode == "allow":
        # allowed in allow-list mode whatever the list (systemd.exec(5))
        calls |= {"execve", "exit", "exit_group", "getrlimit", "rt_sigreturn", "sigreturn"}
    used = set(sys.argv[3:])
    denied = used - calls if mode == "allow" else used & calls
    print(" ".join(sorted(denied)))


main()
