"""``python -m bench [features|tiles|all] [options]``: run the benchmarks.

``features`` is ioc against tipg on OGC API – Features; ``tiles`` (when ``bench/tiles.py`` is
present) is the vector-tile benchmark. Options after the name go to that benchmark.
"""

from __future__ import annotations

import importlib.util
import inspect
import sys


def _tiles(argv: list[str]) -> None:
    if importlib.util.find_spec("bench.tiles") is None:
        print("bench/tiles.py is not present: skipping the tile benchmark.")
        return
    from bench import tiles

    if inspect.signature(tiles.main).parameters:
        tiles.main(argv)
    else:
        tiles.main()


def main() -> None:
    args = sys.argv[1:]
    which = args[0] if args and not args[0].startswith("-") else "all"
    rest = args[1:] if args and not args[0].startswith("-") else args
    if which not in ("features", "tiles", "all"):
        sys.exit(f"unknown benchmark '{which}': use features, tiles or all")
    if which in ("features", "all"):
        from bench import features

        features.main(rest if which == "features" else [])
    if which in ("tiles", "all"):
        _tiles(rest if which == "tiles" else [])


if __name__ == "__main__":
    main()
