"""The production topology's configuration (deploy/templates, rendered by deploy/render.py)."""
