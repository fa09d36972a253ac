"""Who may read or change which layer: the one place that decides.

Levels: ``public`` layers are for everyone; ``internal`` ones for any authenticated city user
(operator, analyst, department publisher); ``restricted`` ones for the owning department's
publishers and admins only. A layer a principal may not read does not exist for it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, Protocol, TypeVar

Role = Literal["anonymous", "operator", "analyst", "publisher", "admin"]
ROLES: tuple[Role, ...] = ("anonymous", "operator", "analyst", "publisher", "admin")
KEY_ROLES: tuple[Role, ...] = ("operator", "analyst", "publisher", "admin")
ACCESS_LEVELS = ("public", "internal", "restricted")


class Guarded(Protocol):
    """Anything with an access level and an owning department (a layer)."""

    # Read-only properties, so that frozen dataclasses (Layer) satisfy the protocol.
    @property
    def access(self) -> str: ...

    @property
    def department(self) -> str: ...


G = TypeVar("G", bound=Guarded)


@dataclass(frozen=True)
class Principal:
    """The caller: a role, the department of a publisher, and the API key id if any."""

    role: Role = "anonymous"
    department: str | None = None
    key_id: int | None = None

    @property
    def authenticated(self) -> bool:
        return self.role != "anonymous"

    @property
    def label(self) -> str:
        return f"{self.role}:{self.department}" if self.department else self.role


ANONYMOUS = Principal()
ADMIN = Principal(role="admin")


def can_read(principal: Principal, layer: Guarded) -> bool:
    """True when the principal may see the layer at all (features, tiles, catalog)."""
    if principal.role == "admin" or layer.access == "public":
        return True
    if layer.access == "internal":
        return principal.authenticated
    return principal.role == "publisher" and principal.department == layer.department


def can_write(principal: Principal, layer: Guarded) -> bool:
    """True when the principal may publish, replace or restore the layer's data."""
    if principal.role == "admin":
        return True
    return principal.role == "publisher" and principal.department == layer.department


def can_create_in(principal: Principal, department: str) -> bool:
    """True when the principal may create a new layer owned by ``department``."""
    return principal.role == "admin" or (
        principal.role == "publisher" and principal.department == department
    )


def readable(principal: Principal, layers: Iterable[G]) -> list[G]:
    """The layers the principal may read, in the given order."""
    return [layer for layer in layers if can_read(principal, layer)]
