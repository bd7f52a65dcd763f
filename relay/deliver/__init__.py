"""Deliver: sign events, guard destinations, send them over HTTP and schedule retries."""
