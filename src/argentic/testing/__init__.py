"""Helpers for tests and benchmarks: real brokers and servers on loopback."""
