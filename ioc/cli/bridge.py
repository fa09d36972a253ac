"""``ioc bridge mqtt``: feed live layers from an MQTT broker (sensor gateways)."""

from __future__ import annotations

import signal
import threading
from typing import Annotated

import typer

from ioc.cli.console import err, friendly
from ioc.config import get_settings
from ioc.logs import configure_logging

app = typer.Typer(help="Bridges that feed live layers from other systems.", no_args_is_help=True)

DEFAULT_TOPICS = ["ioc/+/features"]


@app.command("mqtt")
@friendly
def mqtt(
    broker: Annotated[
        str,
        typer.Option(
            envvar="IOC_MQTT_BROKER",
            help="mqtt://host:port or mqtts://host:port (TLS); user:password@ before the "
            "host when the broker asks for them.",
        ),
    ],
    key: Annotated[
        str,
        typer.Option(
            envvar="IOC_MQTT_KEY",
            help="API key whose principal writes (a department publisher); prefer the "
            "environment variable, which other users cannot see in the process list.",
        ),
    ],
    topic: Annotated[
        list[str] | None,
        typer.Option(help="Topic filter (repeatable); its first '+' level names the layer."),
    ] = None,
    qos: Annotated[int, typer.Option(min=0, max=2, help="Subscription QoS.")] = 1,
    client_id: Annotated[
        str,
        typer.Option(
            help="Client id: the broker keeps the subscription and queues QoS 1 messages "
            "while the bridge is away. Empty = a new clean session each start."
        ),
    ] = "",
    batch_size: Annotated[
        int, typer.Option(min=1, max=5000, help="Most features written in one batch.")
    ] = 500,
    batch_ms: Annotated[
        int, typer.Option(min=10, max=10_000, help="How long a batch collects messages.")
    ] = 200,
) -> None:
    """Subscribe to BROKER and upsert the GeoJSON features published on the topics."""
    from layers.mqtt_batches import check_topic_filter, parse_broker
    from layers.mqtt_bridge import Bridge, BridgeOptions

    settings = get_settings()
    configure_logging(settings.server.log_level, settings.server.log_format)
    options = BridgeOptions(
        broker=parse_broker(broker),
        topics=tuple(check_topic_filter(t) for t in topic or DEFAULT_TOPICS),
        qos=qos,
        client_id=client_id,
        batch_size=batch_size,
        batch_seconds=batch_ms / 1000,
        catalog_seconds=settings.server.catalog_check_seconds,
    )
    bridge = Bridge(settings, key, options)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        # Stop after the current batch and write what was received: nothing half-done.
        signal.signal(sig, lambda *_: stop.set())
    err.print(f"bridging {options.broker} {', '.join(options.topics)} → ioc", highlight=False)
    bridge.run(stop)
