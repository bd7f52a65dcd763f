"""Settings: the one table every way of setting the gateway is derived from (`table`), the kinds of value a
setting takes (`kinds`) and durations as operators write them (`durations`)."""
