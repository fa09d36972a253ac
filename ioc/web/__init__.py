"""The web face: what the pages for people show (the front page's sections, the catalog to
browse) and their own script and stylesheet in ``static/`` (served at ``/static/web``)."""

from pathlib import Path

STATIC_DIR = Path(__file__).parent / "static"
