"""What the attempts of the log cost to write and to read back, as the table grows: keyed by event position (m018)
against keyed by event id (the layout before it), in the same run.

Run: python -m bench.attempts_index [--rows 0,500000] [--batches 200] [--json PATH]

For each size, two fresh SQLite files at today's schema, one of them taken back to the layout before m018 (the
index of the log's attempts on (event_id, subscriber_id), and every attempt in the index of delivery ids), are
filled with that many attempts of the log. Then, in each: batches of 100 attempts inserted and committed as
`attempts.finish` writes them (CPU per row), and a page of the console's question "which of these 50 events did
the subscriber get?" (`implied.recent_states`'s query; time per query). Event ids are random, as the gateway's
are; positions only grow.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

from relay.store import store_for
from relay.store.ops.attempts import INSERT

#: The layout before m018: the log's attempts found by event id, and all attempts in the delivery id index.
BEFORE = (
    "DROP INDEX attempts_of_the_log",
    "CREATE INDEX attempts_of_the_log ON attempts(event_id, subscriber_id) WHERE delivery_id IS NULL",
    "DROP INDEX idx_attempts_delivery_id_id",
    "CREATE INDEX idx_attempts_delivery_id_id ON attempts(delivery_id, id)",
)
#: "Which of these events did the subscriber get?", keyed each way (the console's recent states, a listing's page).
SUCCEEDED = {
    "position": "SELECT event_id FROM attempts WHERE position IN ({marks}) AND subscriber_id = 1"
    " AND delivery_id IS NULL AND outcome = 'success'",
    "event id": "SELECT event_id FROM attempts WHERE event_id IN ({marks}) AND subscriber_id = 1"
    " AND delivery_id IS NULL AND outcome = 'success'",
}
PAGE = 50


@dataclass(frozen=True)
class Layout:
    key: str
    rows_before: int
    insert_cpu_us: float  # a row, committed in batches of 100
    page_ms: float  # one "which of these 50 did it get" query


class Attempts:
    """A fresh store file whose attempts of the log are keyed by ``key`` ("position" or "event id")."""

    def __init__(self, folder: Path, key: str) -> None:
        path = folder / f"{key.replace(' ', '_')}.db"
        with store_for(path):
            pass
        self.conn = sqlite3.connect(path, isolation_level=None)
        self.conn.execute("PRAGMA synchronous=NORMAL")
        if key == "event id":
            for statement in BEFORE:
                self.conn.execute(statement)
        self.key = key
        self.written: list[tuple[str, int]] = []  # (event id, position)

    def rows(self, count: int) -> list[tuple[object, ...]]:
        start = len(self.written)
        made = [(str(uuid.uuid4()), start + number + 1) for number in range(count)]
        self.written += made
        stamp = "2026-12-08T01:00:00.123456+00:00"
        return [(None, 1, event, stamp, 0.01, "success", 204, None, b"", "first", position) for event, position in made]

    def fill(self, count: int) -> None:
        self.conn.execute("BEGIN")
        for start in range(0, count, 10_000):
            self.conn.executemany(INSERT, self.rows(min(10_000, count - start)))
        self.conn.execute("COMMIT")

    def insert_cpu_us(self, batches: int) -> float:
        prepared = [self.rows(100) for _ in range(batches)]
        started = time.process_time()
        for rows in prepared:
            self.conn.execute("BEGIN")
            self.conn.executemany(INSERT, rows)
            self.conn.execute("COMMIT")
        return (time.process_time() - started) / (batches * 100) * 1e6

    def page_ms(self, pages: int) -> float:
        query = SUCCEEDED[self.key].format(marks=", ".join("?" * PAGE))
        column = 1 if self.key == "position" else 0
        step = (len(self.written) - PAGE) // pages  # pages spread over the table, each of PAGE events
        started = time.perf_counter()
        for page in range(pages):
            chosen = self.written[page * step : page * step + PAGE]
            found = self.conn.execute(query, [written[column] for written in chosen]).fetchall()
            assert len(found) == len(chosen)
        return (time.perf_counter() - started) / pages * 1e3


def measure(rows_before: int, batches: int) -> list[Layout]:
    results = []
    with tempfile.TemporaryDirectory() as folder:
        for key in ("event id", "position"):
            attempts = Attempts(Path(folder), key)
            attempts.fill(rows_before)
            results.append(Layout(key, rows_before, attempts.insert_cpu_us(batches), attempts.page_ms(20)))
            attempts.conn.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", default="0,500000", help="attempts already in the table, comma-separated")
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--json", type=Path)
    options = parser.parse_args()
    results = [layout for rows in options.rows.split(",") for layout in measure(int(rows), options.batches)]
    print("| attempts before | keyed by | µs CPU an insert | ms a page of 50 |")
    print("| ---: | --- | ---: | ---: |")
    for layout in results:
        print(f"| {layout.rows_before:,} | {layout.key} | {layout.insert_cpu_us:.1f} | {layout.page_ms:.2f} |")
    if options.json:
        options.json.write_text(json.dumps([asdict(layout) for layout in results], indent=2))


if __name__ == "__main__":
    main()
