"""Change events: every write records one (``log``); the server fans them out (``hub``)."""
