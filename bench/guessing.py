"""How fast a token can be guessed through a real ``cos-relay serve``: at the console login, the admin bearer
check and the callback token check, from one address and from many (127.0.0.2, 127.0.0.3, ...), throttled
(the default RELAY_GUESS_LIMIT) against unthrottled (RELAY_GUESS_LIMIT=0) in the same run.

A guess counts when the server compared it (401); a 429 compared nothing. ``python -m bench.guessing``
(``--seconds``, ``--sources``, ``--concurrency``, ``--json FILE``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

from bench.process import free_port, serving

CALLBACK_TOKEN = "bench-callback-token-not-guessed"  # noqa: S105 - a throwaway gateway on loopback
ADMIN_TOKEN = "bench-admin-Qm7vX2pLr9TcW4nKd8sYh3JfB6gZ1aE5uN0oR"  # noqa: S105 - a throwaway gateway on loopback
CHECKS = ("login", "bearer", "callback")
#: The keyspace of a four-digit token such as the issue's ``7351``.
FOUR_DIGITS = 10_000


@dataclass
class Rate:
    limit: str
    check: str
    sources: int
    seconds: float
    guesses: int
    throttled: int

    @property
    def per_second(self) -> float:
        return self.guesses / self.seconds


def guess(http: httpx.AsyncClient, check: str, number: int) -> httpx.Request:
    token = f"{number:04d}"
    if check == "login":
        origin = str(http.base_url).rstrip("/")
        return http.build_request("POST", "/console/login", data={"token": token}, headers={"origin": origin})
    if check == "bearer":
        return http.build_request("GET", "/api/jobs", headers={"authorization": f"Bearer {token}"})
    return http.build_request("POST", f"/cos/callback?token={token}", content=b"<Response/>")


async def hammer(url: str, check: str, sources: int, concurrency: int, seconds: float) -> tuple[int, int, float]:
    """Guesses compared (401) and refused (429) in ``seconds``, from ``sources`` loopback addresses."""
    clients = [
        httpx.AsyncClient(
            base_url=url,
            timeout=10,
            transport=httpx.AsyncHTTPTransport(local_address=f"127.0.0.{2 + index}" if sources > 1 else None),
        )
        for index in range(sources)
    ]
    counts = {401: 0, 429: 0}
    started = time.monotonic()
    deadline = started + seconds

    async def worker(first: int) -> None:
        number = first
        while time.monotonic() < deadline:
            http = clients[number % sources]
            response = await http.send(guess(http, check, number))
            counts[response.status_code] = counts.get(response.status_code, 0) + 1
            number += concurrency

    try:
        await asyncio.gather(*(worker(first) for first in range(max(concurrency, sources))))
    finally:
        for client in clients:
            await client.aclose()
    unexpected = set(counts) - {401, 429}
    if unexpected:
        raise RuntimeError(f"unexpected answers to guesses: {counts}")
    return counts[401], counts[429], time.monotonic() - started


def measure(seconds: float, sources: int, concurrency: int, folder: Path) -> list[Rate]:
    rates = []
    for limit in ("0", "10"):
        port = free_port()
        args = ["-m", "relay", "serve", "--port", str(port), "--db", str(folder / f"limit{limit}.db")]
        args += ["--callback-token", CALLBACK_TOKEN, "--admin-token", ADMIN_TOKEN, "--log-level", "error"]
        with serving(args, port, folder / "server.log", env={"RELAY_GUESS_LIMIT": limit}):
            for check in CHECKS:
                for count in (1, sources):
                    guesses, throttled, elapsed = asyncio.run(
                        hammer(f"http://127.0.0.1:{port}", check, count, concurrency, seconds)
                    )
                    rates.append(Rate(limit, check, count, elapsed, guesses, throttled))
    return rates


def report(rates: list[Rate]) -> str:
    lines = [
        "| RELAY_GUESS_LIMIT | check | source addresses | guesses compared / s, measured | answered 429"
        " | guesses / s once the first burst is spent | 10,000 guesses (four digits) take |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for rate in rates:
        per_second = rate.per_second
        # After the first minute, each address gets its limit per minute: the steady pace, not the burst.
        steady = per_second if rate.limit == "0" else rate.sources * int(rate.limit) / 60
        lines.append(
            f"| {rate.limit} | {rate.check} | {rate.sources} | {per_second:,.1f} | {rate.throttled:,} |"
            f" {steady:,.2f} | {duration(FOUR_DIGITS / steady)} |"
        )
    return "\n".join(lines)


def duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0, help="how long each run guesses")
    parser.add_argument("--sources", type=int, default=50, help="loopback addresses of the many-address runs")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--json", type=Path)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-guessing-") as folder:
        rates = measure(options.seconds, options.sources, options.concurrency, Path(folder))
    print(report(rates))
    if options.json:
        options.json.write_text(json.dumps([{**asdict(rate), "per_second": rate.per_second} for rate in rates]))


if __name__ == "__main__":
    main()
