"""HTTP content-coding negotiation shared by the tile answers and the app's gzip middleware."""

from __future__ import annotations


def accepts_gzip(accept_encoding: str) -> bool:
    """Whether an ``Accept-Encoding`` header (RFC 9110 §12.5.3) takes gzip: listed, or ``*``,
    with a weight above 0 (``gzip;q=0`` refuses it)."""
    if ";" not in accept_encoding:  # the usual "gzip, deflate, br": no weights to read
        return any(c.strip().lower() in ("gzip", "x-gzip", "*") for c in accept_encoding.split(","))
    weights: dict[str, float] = {}
    for item in accept_encoding.split(","):
        coding, _, params = item.partition(";")
        weight = 1.0
        name, _, value = params.strip().partition("=")
        if name.strip().lower() == "q":
            try:
                weight = float(value)
            except ValueError:
                weight = 0.0  # unreadable: not taken as consent
        weights[coding.strip().lower()] = weight
    gzip_weight = weights.get("gzip", weights.get("x-gzip"))
    return (gzip_weight if gzip_weight is not None else weights.get("*", 0.0)) > 0
