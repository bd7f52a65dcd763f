"""The sender's own HTTP/1.1 client: a URL read once (target), a response read off the socket (response), the
connections kept per origin (pool), and one request with its deadline and outcome (exchange).

Imported by `Sender` at its first request: a gateway without subscribers never needs it.
"""
