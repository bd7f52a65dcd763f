"""Receive: the HTTP side of ingest (token, body limits, media type), then hand over to `relay.ingest`."""
