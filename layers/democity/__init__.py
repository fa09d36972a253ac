"""The deterministic demo-city generator: fills every catalog layer table with real open data of
Ho Chi Minh City where a file exists (IOC_DATA_DIR) and believable synthetic features elsewhere.

Entry point: :func:`seed_city` (called by ``ioc seed``).
"""

from layers.democity.seed import LayerSeedResult, seed_city, target_count

__all__ = ["LayerSeedResult", "seed_city", "target_count"]
