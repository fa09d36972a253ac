"""Benchmarks against peer servers (``make bench``); not part of the test suite."""
