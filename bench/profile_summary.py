#!/usr/bin/env python3
"""Summarise a py-spy raw (collapsed stacks) profile, as written by `bench/run.py --profile DIR`.

    .venv/bin/python bench/profile_summary.py DIR/manifest_get-0.txt [--top 25] [--all]

Prints, for the samples of server worker processes, the functions where time is spent
(self = leaf frame, total = anywhere on the stack), as percentages of the active samples
(idle samples, e.g. waiting in epoll, are left out unless --all).
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

_PROCESS = re.compile(r'^process \d+:".*"$')
_IDLE_LEAVES = ("select (selectors.py", "_run_once (asyncio", "wait (threading.py", "_worker (concurrent")


def load(path: Path) -> list[tuple[list[str], int]]:
    stacks = []
    for line in path.read_text(errors="replace").splitlines():
        body, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        frames = [f for f in body.split(";") if not _PROCESS.match(f)]
        stacks.append((frames, int(count)))
    return stacks


def short(frame: str) -> str:
    # "func (pkg/module.py:123)" -> "func (pkg/module.py)": merge lines of one function.
    return re.sub(r":\d+\)$", ")", frame)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--all", action="store_true", help="keep idle samples")
    parser.add_argument("--grep", help="only stacks containing this text")
    args = parser.parse_args()
    stacks = load(args.profile)
    if not args.all:
        stacks = [(f, n) for f, n in stacks if f and not f[-1].startswith(_IDLE_LEAVES)]
    if args.grep:
        stacks = [(f, n) for f, n in stacks if any(args.grep in x for x in f)]
    total = sum(n for _, n in stacks) or 1
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    for frames, n in stacks:
        names = [short(f) for f in frames]
        own[names[-1] if names else "?"] += n
        for name in set(names):
            inclusive[name] += n
    print(f"{args.profile}: {total} active samples")
    print("\nself time:")
    for name, n in own.most_common(args.top):
        print(f"  {100 * n / total:5.1f}%  {name}")
    print("\ntotal time (function anywhere on the stack):")
    for name, n in inclusive.most_common(args.top):
        print(f"  {100 * n / total:5.1f}%  {name}")


if __name__ == "__main__":
    main()
