"""What the HTTP edges share (the callback endpoint, the admin API, /metrics, the console): the tokens that admit
a request and the guessing throttle in front of them (`auth`), and how a refusal is answered (`errors`)."""
