"""The ``ioc`` command (``ioc = "ioc.cli:app"``): one module per command group, registered here.

An interface like ``api``: it may import every domain package, and none imports it.
"""

from __future__ import annotations

import typer

from ioc.cli import addresses, bridge, db, keys, layers, maps, publish, serve, simulate, tiles

app = typer.Typer(
    help="ioc — map server of the HCMC Intelligent Operations Centre.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(db.app, name="db")
app.add_typer(layers.app, name="layers")
app.add_typer(keys.app, name="keys")
app.add_typer(addresses.app, name="addresses")
app.add_typer(maps.app, name="maps")
app.add_typer(tiles.app, name="tiles")
app.add_typer(bridge.app, name="bridge")
app.command("publish")(publish.publish)
app.command("import")(publish.import_dir)
app.command("seed")(serve.seed)
app.command("serve")(serve.serve)
app.command("simulate")(simulate.simulate)
