"""The gateway as a process: the app factory (`factory`: every object built from explicit settings and wired)
and running it under uvicorn (`serving`: in this process or in workers)."""
