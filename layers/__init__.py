"""The city's layer catalog and the way layer data comes in."""
