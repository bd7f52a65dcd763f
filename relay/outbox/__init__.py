"""Outbox: the events a callback becomes and which subscribers each one is for."""
