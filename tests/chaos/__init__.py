"""Fault tests: real gateway processes on loopback, killed, starved and flooded."""
