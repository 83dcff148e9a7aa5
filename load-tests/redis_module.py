"""The kefu Redis module for the redis-servers a benchmark starts: `--redis-module PATH|none`,
shared by bench, faults and cluster-bench."""

import sys
from pathlib import Path

HELP = ("kefu_redis.so for every redis-server (default: the bin dir's, if built); none: the "
        "msg_send script")


def loadmodule_args(choice, bin_dir):
    """["--loadmodule", path] for redis-server, or [] (choice "none", or no module built and
    none asked for). A path that does not exist ends the program."""
    if choice == "none":
        return []
    mod = Path(choice or Path(bin_dir) / "kefu_redis.so")
    if mod.is_file():
        return ["--loadmodule", str(mod.resolve())]
    if choice:
        sys.exit(f"{choice} not found")
    return []
