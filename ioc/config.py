"""The one ``Settings``: every settings group of ioc, built once at start-up.

The kernel's groups live in :mod:`ioc.settings` (the bottom layer); the domains' groups next to
their domain (tiles, maps, addresses, queries). This module sits above them all (see the layers
contract in pyproject.toml), so it is the one place that knows every group.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

from pydantic import ValidationError

from ioc.addresses.registry import AddressSettings
from ioc.errors import ConfigError
from ioc.maps.views import MapsSettings
from ioc.query.model import QuerySettings
from ioc.settings import (
    CoreSettings,
    DatabaseSettings,
    DataSettings,
    FeatureSettings,
    PublishSettings,
    ServerSettings,
)
from tiles.settings import TileSettings


@dataclass
class Settings(CoreSettings):
    """All settings groups (each one read from its ``IOC_*`` variables)."""

    tiles: TileSettings = field(default_factory=TileSettings)
    maps: MapsSettings = field(default_factory=MapsSettings)
    addresses: AddressSettings = field(default_factory=AddressSettings)
    query: QuerySettings = field(default_factory=QuerySettings)


_GROUPS = (
    DatabaseSettings,
    ServerSettings,
    DataSettings,
    PublishSettings,
    FeatureSettings,
    TileSettings,
    MapsSettings,
    AddressSettings,
    QuerySettings,
)


def setting_problem(exc: ValidationError) -> str:
    """One sentence naming the first wrong setting (its environment variable) and why."""
    first = exc.errors()[0]
    name = "_".join(str(part) for part in first.get("loc", ())).upper() or "?"
    groups = {cls.__name__: cls for cls in _GROUPS}
    group = groups.get(exc.title)
    prefix = group.model_config.get("env_prefix", "IOC_") if group else "IOC_"
    value = first.get("input")
    shown = f" ({value!r})" if isinstance(value, str | int | float) else ""
    return f"The setting {prefix}{name}{shown} is wrong: {first.get('msg', 'invalid value')}."


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read from the environment on first use. A wrong value is a
    ConfigError naming the variable, not a validation traceback."""
    try:
        return Settings()
    except ValidationError as exc:
        raise ConfigError(setting_problem(exc)) from None
