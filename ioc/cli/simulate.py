"""``ioc simulate``: keep the demo city alive through the public write API.

With ``--own-key`` (what ``make run`` uses) the command creates an admin key for itself in the
database, revokes it when it stops, and only feeds layers whose data the demo city generated
(their catalog metadata says ``synthetic``): it never writes invented readings into a real
city's layers.
"""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Annotated

import typer
from rich.table import Table

from ioc.catalog import keys as keys_mod
from ioc.cli.console import err, friendly, out
from ioc.config import Settings, get_settings
from ioc.db.connection import connection
from ioc.errors import IocError
from layers.simulation import HCMC, LIVE_LAYERS, Scenario
from layers.simulation_client import SimulationClient

OWN_KEY_LABEL = "ioc simulate"
READY_SECONDS = 300.0  # `make run` starts the simulator with the server: wait for it


@friendly
def simulate(
    url: Annotated[
        str | None, typer.Option(help="The ioc server (default: this one's host:port).")
    ] = None,
    key: Annotated[
        str | None, typer.Option(envvar="IOC_SIMULATE_KEY", help="An admin or publisher key.")
    ] = None,
    own_key: Annotated[
        bool, typer.Option("--own-key", help="Create (and at the end revoke) an admin key.")
    ] = False,
    speed: Annotated[
        float, typer.Option(min=0.1, max=3600, help="Simulated seconds per real second.")
    ] = 60.0,
    duration: Annotated[
        float | None, typer.Option(min=0, help="Stop after this many real seconds.")
    ] = None,
    seed: Annotated[
        int, typer.Option(help="Same seed, same start, same data: same changes.")
    ] = 2025,
    start: Annotated[
        str | None, typer.Option(help="Simulated start, HCMC time (ISO, e.g. 2025-06-02T06:30).")
    ] = None,
    interval: Annotated[float, typer.Option(min=0.1, max=60, help="Real seconds a tick.")] = 1.0,
    layers: Annotated[str, typer.Option(help="Comma-separated live layers to feed.")] = ",".join(
        LIVE_LAYERS
    ),
) -> None:
    """Feed flood sensors, congestion, 1022 reports and hospital beds, as they would change."""
    settings = get_settings()
    url = url or f"http://{_loopback(settings.server.host)}:{settings.server.port}"
    chosen = tuple(layer.strip() for layer in layers.split(",") if layer.strip())
    unknown = [layer for layer in chosen if layer not in LIVE_LAYERS]
    if unknown:
        raise IocError(f"Unknown live layer {unknown[0]}: use {', '.join(LIVE_LAYERS)}.")
    begin = _start_time(start)
    # `make run` stops it with SIGTERM, maybe while it still waits for the server: unwind
    # (revoking its own key) as Ctrl-C does; the ticks then finish their write first (_run).
    signal.signal(signal.SIGTERM, _interrupt)
    with _key(settings, key, own_key) as secret:
        client = SimulationClient(url, secret)
        client.demo_only = own_key
        client.warn = lambda message: err.print(
            f"[yellow]warning:[/yellow] {message}", highlight=False
        )
        try:
            if own_key:
                _wait_ready(client)
            scenario = Scenario(begin, seed=seed)
            fed = client.load(scenario, chosen)
            if not fed:
                raise IocError("This key may write none of the live layers: nothing to simulate.")
            out.print(
                f"Simulating {', '.join(fed)} at {url}, ×{speed:g} from "
                f"{begin:%Y-%m-%d %H:%M} (seed {seed}); Ctrl-C stops.",
                highlight=False,
            )
            _run(client, scenario, speed, interval, duration)
        finally:
            client.close()
        _summary(client)


def _run(
    client: SimulationClient,
    scenario: Scenario,
    speed: float,
    interval: float,
    duration: float | None,
) -> None:
    """Tick until the duration is over or a SIGTERM/Ctrl-C: the simulated clock moves
    ``speed × interval`` seconds a tick however long the writes took."""
    stop = {"now": False}
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    began = time.monotonic()
    next_report = began + 30

    def over() -> bool:
        return stop["now"] or (duration is not None and time.monotonic() - began >= duration)

    try:
        while not over():
            tick_began = time.monotonic()
            client.write(scenario.tick(speed * interval / 60), over)
            if time.monotonic() >= next_report:
                next_report += 30
                out.print(f"{scenario.now:%H:%M} {_line(client)}", highlight=False)
            time.sleep(
                max(0.0, min(interval - (time.monotonic() - tick_began), _left(began, duration)))
            )
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def _left(began: float, duration: float | None) -> float:
    return float("inf") if duration is None else duration - (time.monotonic() - began)


def _line(client: SimulationClient) -> str:
    t = client.tally
    return " · ".join(
        f"{layer} {t.written[layer] + t.created[layer]}"
        + (f" ({t.failed[layer]} failed)" if t.failed[layer] else "")
        for layer in client.id_attribute
    )


def _summary(client: SimulationClient) -> None:
    t = client.tally
    table = Table("layer", "updated", "created", "failed", "write path")
    for layer in client.id_attribute:
        path = "feed" if client.feed.get(layer) else "single writes"
        table.add_row(
            layer, str(t.written[layer]), str(t.created[layer]), str(t.failed[layer]), path
        )
    out.print(table)
    for reason in t.reasons:
        err.print(f"[yellow]refused:[/yellow] {reason}", highlight=False)


def _start_time(text: str | None) -> datetime:
    if text is None:
        return datetime.now(HCMC).replace(second=0, microsecond=0)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise IocError(
            f"--start '{text}' is not an ISO date and time (2025-06-02T06:30)."
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=HCMC)


def _loopback(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "::", "") else host


@contextlib.contextmanager
def _key(settings: Settings, key: str | None, own: bool) -> Iterator[str]:
    """The key given, or (``--own-key``) one created now and revoked at the end."""
    if not own:
        if not key:
            raise IocError("Give --key KEY (an admin or publisher key) or --own-key.")
        yield key
        return
    with connection(settings.database) as conn:
        # A simulator killed without its clean-up left its key active: revoke it now.
        for old in keys_mod.list_keys(conn):
            if old.label == OWN_KEY_LABEL and old.revoked_at is None:
                keys_mod.revoke_key(conn, old.id)
        secret = keys_mod.create_key(conn, "admin", None, OWN_KEY_LABEL)
    try:
        yield secret
    finally:
        with connection(settings.database) as conn:
            for old in keys_mod.list_keys(conn):
                if old.label == OWN_KEY_LABEL and old.revoked_at is None:
                    keys_mod.revoke_key(conn, old.id)


def _wait_ready(client: SimulationClient) -> None:
    """Started beside the server: wait until it answers /readyz."""
    deadline = time.monotonic() + READY_SECONDS
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if client.http.get("/readyz", timeout=2).status_code == 200:
                return
        time.sleep(1)
    raise IocError(f"The server at {client.http.base_url} did not become ready.")
