"""What the HTTP edges share (the callback endpoint, the admin API, /metrics, the console)."""
