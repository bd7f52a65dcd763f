"""Outbox: managing subscribers (the service the CLI, the admin API and the TOML config go through)."""
