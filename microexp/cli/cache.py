"""``microexp cache info|prune DIR``: what a preprocessed-clip cache holds, and freeing its space.

``info`` lists the entries of a ``data.cache_dir`` folder per kind and setting with their total size and
prints the size rule (what one entry costs). ``prune`` removes entries by age (``--older-than DAYS``), by
total size, least recently used first (``--max-size GB``), or all of them (``--all``), and prints what it
freed; it never removes a file that is not a cache entry.
"""

from __future__ import annotations

import argparse
import datetime
import math
import sys
from typing import Any

HELP = "show (info) or free (prune) a preprocessed-clip cache folder (data.cache_dir)"


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "cache",
        help=HELP,
        description=(
            "Inspect or prune the preprocessed-clip cache that data.cache_dir (and `microexp flow`) fill. "
            "Entries are recomputed on their next use, so pruning is always safe, also while a run reads "
            "the cache."
        ),
    )
    actions = parser.add_subparsers(dest="cache_action", metavar="ACTION", required=True)
    info = actions.add_parser("info", help="entries, total size, breakdown per kind and setting, and the size rule",
                              description="Entries, total size and a breakdown per kind (frames, flow) and setting "
                              "(size, flow method, frames), then the rule that gives an entry's size.")
    info.add_argument("dir", metavar="DIR", help="the cache folder (data.cache_dir)")
    info.add_argument("--json", action="store_true", help="print a JSON object instead of text")
    prune = actions.add_parser(
        "prune", help="remove entries by age, by total size (least recently used first) or all",
        description="Remove cache entries; at least one of --older-than, --max-size, --all. Only files named "
        "like cache entries (DIR/<2 hex>/<64 hex>.npy|.json) and writers' temporary files older than an hour are "
        "removed; any other file is left alone. 'Last used' is the later of a file's access and modification "
        "time (access times are updated about once a day on most file systems).")
    prune.add_argument("dir", metavar="DIR", help="the cache folder (data.cache_dir)")
    prune.add_argument("--older-than", type=_non_negative, default=None, metavar="DAYS",
                       help="remove entries not used for more than DAYS days")
    prune.add_argument("--max-size", type=_non_negative, default=None, metavar="GB",
                       help="then remove the least recently used entries until the cache holds at most GB "
                       "gigabytes (10^9 bytes)")
    prune.add_argument("--all", action="store_true", help="remove every entry")
    prune.add_argument("--dry-run", action="store_true", help="only print what would be removed")
    return parser


def run(args: argparse.Namespace) -> int:
    from microexp.errors import ConfigError

    if args.cache_action == "info":
        return _info(args)
    if args.older_than is None and args.max_size is None and not args.all:
        raise ConfigError("cache prune: say what to remove: --older-than DAYS, --max-size GB or --all")
    if args.all and (args.older_than is not None or args.max_size is not None):
        raise ConfigError("cache prune: --all removes every entry; leave out --older-than/--max-size")
    return _prune(args)


def _info(args: argparse.Namespace) -> int:
    from microexp.data.cache import SIZE_RULE, format_bytes, scan_cache
    from microexp.fileio import dumps_json

    scan = scan_cache(args.dir)
    groups = scan.breakdown()
    if args.json:
        doc: dict[str, Any] = {
            "dir": str(scan.root), "entries": len(scan.entries), "bytes": scan.bytes,
            "groups": [{"kind": k, "setting": s, "entries": n, "bytes": b} for k, s, n, b in groups],
            "temp_files": len(scan.temp_files), "orphan_key_files": len(scan.orphans),
            "other_files": len(scan.foreign), "size_rule": SIZE_RULE,
        }
        if scan.entries:
            doc["last_used"] = {"oldest": _when(min(e.last_used for e in scan.entries)),
                                "newest": _when(max(e.last_used for e in scan.entries))}
        print(dumps_json(doc))
        return 0
    print(f"{scan.root}: {len(scan.entries)} entries, {format_bytes(scan.bytes)}")
    if groups:
        width = max(len(k) for k, *_ in groups)
        for kind, setting, count, size in groups:
            print(f"  {kind:<{width}}  {count:>6} entries  {format_bytes(size):>9}  {setting}")
        print(f"  last used: oldest {_when(min(e.last_used for e in scan.entries))}, "
              f"newest {_when(max(e.last_used for e in scan.entries))}")
    extras = [f"{len(scan.temp_files)} temporary file(s) of writers" if scan.temp_files else "",
              f"{len(scan.orphans)} key file(s) without an array" if scan.orphans else "",
              f"{len(scan.foreign)} other file(s), not cache entries (never pruned)" if scan.foreign else ""]
    if any(extras):
        print("  also: " + "; ".join(e for e in extras if e))
    print(f"size rule: {SIZE_RULE}")
    return 0


def _prune(args: argparse.Namespace) -> int:
    from microexp.data.cache import format_bytes, prune_cache

    max_bytes = None if args.max_size is None else int(args.max_size * 1e9)
    result = prune_cache(args.dir, older_than_days=args.older_than, max_bytes=max_bytes, remove_all=args.all,
                         dry_run=args.dry_run)
    verb = "would free" if args.dry_run else "freed"
    extras = []
    if result.temp_files:
        extras.append(f"{len(result.temp_files)} stale temporary file(s)")
    if result.orphans:
        extras.append(f"{len(result.orphans)} key file(s) without an array")
    extra = f" (and {', '.join(extras)})" if extras else ""
    removed = "would be removed" if args.dry_run else "removed"
    print(f"{args.dir}: {verb} {format_bytes(result.freed_bytes)}: {len(result.removed)} entries {removed}{extra}; "
          f"kept {result.kept_entries} entries, {format_bytes(result.kept_bytes)}", file=sys.stdout)
    return 0


def _when(timestamp: float) -> str:
    return datetime.datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M")
