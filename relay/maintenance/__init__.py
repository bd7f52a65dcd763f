"""The maintenance loops the app factory starts beside the server: the pruner (the retention windows) and the
shedder (the database's size bound and each subscriber's backlog bound)."""
