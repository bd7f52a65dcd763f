"""Prometheus metrics: what happened (`counters`), what /metrics renders with what the database holds
(`exposition`), the endpoint that serves it (`scrape`), and the files uvicorn workers count into (`files`)."""
