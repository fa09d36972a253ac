"""Dashboards as data: ``ioc/dashboards/view_files/<id>.yaml``, validated at start-up.

A dashboard names one source layer (e.g. ``reports_1022``), the attributes its panels read
(category, status, channel, handling unit, the reported and resolved times), which statuses
count as open and as closed, the handling deadline per category, and the thresholds that colour
wards and fill the alert strip. Who may open it is its ``audience``, as for map views
(``ioc.maps.views.can_open``); the layer's own access still applies to every number.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Self

import yaml
from pydantic import Field, ValidationError, model_validator

from ioc.catalog.access import Principal
from ioc.errors import ConfigError, LayerNotFound
from ioc.maps import views
from ioc.maps.views import Colour, LayerId, Localized, _Model

DASHBOARDS_DIR = Path(__file__).parent / "view_files"
Metric = Literal["total", "open", "overdue"]
UnitLevel = Literal["district", "ward", "ward2019"]
Layout = Literal["wall", "desk"]
AttributeName = Field(pattern=r"^[a-z][a-z0-9_]{0,62}$")


class DashboardNotFound(LayerNotFound):
    """Unknown dashboard, or one the caller may not open (the same answer on purpose)."""


class DashboardError(ConfigError):
    """A dashboard file that cannot be read or does not validate."""


class Fields(_Model):
    """Which attributes of the source layer the panels read."""

    category: str = AttributeName
    status: str = AttributeName
    channel: str = AttributeName
    handling_unit: str = AttributeName
    reported_at: str = AttributeName
    resolved_at: str = AttributeName


class Deadline(_Model):
    """The handling deadline: hours after the report, per category, else ``default_hours``."""

    default_hours: float = Field(gt=0, le=24 * 365)
    by_category: dict[str, float] = Field(default_factory=dict)


class Threshold(_Model):
    """A unit whose ``metric`` exceeds ``above`` is coloured and listed in the alert strip."""

    metric: Metric
    above: float = Field(ge=0)
    colour: Colour = "#d7191c"
    label: Localized


class Dashboard(_Model):
    """One dashboard file."""

    id: str = Field(pattern=r"^[a-z][a-z0-9_-]{1,40}$")
    title: Localized
    description: Localized
    audience: Literal["public", "internal"]
    language: Literal["vi", "en"] = "vi"
    layout: Layout = "desk"
    layer: LayerId
    fields: Fields
    open_statuses: list[str] = Field(min_length=1)
    closed_statuses: list[str] = Field(min_length=1)
    deadline: Deadline
    thresholds: list[Threshold] = Field(default_factory=list, max_length=10)
    days: int = Field(default=30, ge=1, le=3660, description="Default time range, days to now.")
    center: tuple[float, float] = (10.7769, 106.7009)
    zoom: int = Field(default=11, ge=8, le=18)

    @model_validator(mode="after")
    def _check(self) -> Self:
        if set(self.open_statuses) & set(self.closed_statuses):
            raise ValueError("a status cannot be both open and closed")
        return self


def load_dashboard(path: Path) -> Dashboard:
    """Read and validate one file; its id must be its file name."""
    try:
        board = Dashboard.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
    except (OSError, yaml.YAMLError, ValidationError) as exc:
        raise DashboardError(f"Dashboard {path.name} is invalid: {exc}") from exc
    if board.id != path.stem:
        raise DashboardError(
            f"Dashboard {path.name} has id '{board.id}': it must be '{path.stem}'."
        )
    return board


def load_dashboards(directory: Path = DASHBOARDS_DIR) -> dict[str, Dashboard]:
    """Every dashboard in the folder, by id."""
    return {b.id: b for b in map(load_dashboard, sorted(directory.glob("*.yaml")))}


def can_open(principal: Principal, board: Dashboard) -> bool:
    """Public dashboards are for everyone; internal ones for any authenticated city user (the
    map views' rule)."""
    return views.can_open(principal, board)  # type: ignore[arg-type]


def get_dashboard(boards: dict[str, Dashboard], board_id: str, principal: Principal) -> Dashboard:
    """The dashboard, or DashboardNotFound when unknown or not for this caller."""
    board = boards.get(board_id)
    if board is None or not can_open(principal, board):
        raise DashboardNotFound(f"There is no dashboard '{board_id}'.", parameter="dashboard")
    return board
