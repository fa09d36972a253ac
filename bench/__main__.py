"""``python -m bench [features|tiles|addresses|queries|all] [options]``: run the benchmarks.

- ``features``: ioc against tipg on OGC API – Features (items with bbox, single features);
- ``tiles``: ioc (uncached, warm cache, both under 10 writes/s) against tipg and PostGIS alone
  on the city's 1 M reports and 300 k buildings, tiles drawn where the data is, content checked
  (``tiles --quick`` for a shorter run);
- ``addresses``: look-up, search and reverse latency on the city-scale address registry;
- ``queries``: per-ward statistics on one million citizen reports;
- ``dashboards``: the 1022 dashboard's data on one million reports, cold, warm, after a write;
- ``live``: upserts/s through HTTP, commit-to-SSE latency with 50 subscribers, cached wall tiles
  with and without updates (the demo city, its own database);
- ``scaling``: tiles/s and items/s with one and two ioc processes behind HAProxy over a Patroni
  primary and replica on loopback, and the shared disk tile cache's hit ratio across processes.

Options after the name go to that benchmark. ``all`` runs features and tiles (the city-scale
benchmarks seed their own database first, which takes minutes: run them by name).
"""

from __future__ import annotations

import importlib
import inspect
import sys

BENCHMARKS = ("features", "tiles", "addresses", "queries", "dashboards", "live", "scaling")
DEFAULT = ("features", "tiles")


def _run(name: str, argv: list[str]) -> None:
    module = importlib.import_module(f"bench.{name}")
    if inspect.signature(module.main).parameters:
        module.main(argv)
    else:
        module.main()


def main() -> None:
    args = sys.argv[1:]
    which = args[0] if args and not args[0].startswith("-") else "all"
    rest = args[1:] if args and not args[0].startswith("-") else args
    if which not in (*BENCHMARKS, "all"):
        sys.exit(f"unknown benchmark '{which}': use {', '.join(BENCHMARKS)} or all")
    for name in DEFAULT if which == "all" else (which,):
        _run(name, rest if which != "all" else [])


if __name__ == "__main__":
    main()
