"""Database trouble: a full disk and a filesystem gone read-only get 503 for what they cannot store, never a
200 for anything not committed, and lose nothing acknowledged.

Root ignores file permissions, so chmod cannot make the database read-only for these tests: they mount
small filesystems instead (tmpfs to fill up, an ext4 image the kernel forces read-only). Where mounting
is not permitted they skip and say so.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import shutil
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.chaos.harness import ADMIN_HEADERS, column, gateway, integrity, record, unfinished_deliveries
from tests.conftest import CALLBACK_TOKEN, job_body, job_id
from tests.live import wait_until
from tests.sink import Sink

PAGE = "<PageInfo><PageNo>{n}</PageNo><TgtUri>doc/out/page-{n}.jpg</TgtUri></PageInfo>"
DOC = Path(__file__).parent.parent / "data" / "samples" / "doc_process_success.xml"


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


@contextlib.contextmanager
def mounted(where: Path, *mount_args: str) -> Iterator[Path]:
    where.mkdir(parents=True, exist_ok=True)
    done = run("mount", *mount_args, str(where))
    if done.returncode != 0:
        pytest.skip(f"cannot mount a test filesystem here ({done.stderr.strip()}): run as root to test this")
    try:
        yield where
    finally:
        if run("umount", str(where)).returncode != 0:
            run("umount", "-l", str(where))


def big_body(number: int, pages: int = 3000) -> bytes:
    """A valid document-job callback of ~240 KB (so its commit needs fresh pages) with a distinct JobId."""
    extra = "".join(PAGE.format(n=n) for n in range(pages)).encode()
    body = DOC.read_bytes().replace(b"<PageInfo>", extra + b"<PageInfo>", 1)
    old = body.split(b"<JobId>")[1].split(b"</JobId>")[0]
    return body.replace(old, job_id(number).encode())


def fill(directory: Path) -> Path:
    """Write a file until the filesystem has no byte left."""
    filler = directory / "filler"
    with filler.open("wb", buffering=0) as out:
        for block in (1024 * 1024, 4096, 1):
            for _ in range(1_000_000):  # bounded: the filesystems here are a few MiB
                try:
                    out.write(b"\0" * block)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
    return filler


def post(client: httpx.Client, body: bytes) -> int:
    return client.post(f"/cos/callback?token={CALLBACK_TOKEN}", content=body).status_code


def test_a_full_disk_gets_503_never_200_and_the_gateway_recovers_by_itself_without_corruption(
    tmp_path: Path, long_run: bool, sink: Sink, sqlite_only: None
) -> None:
    # SQLite only: the gateway's own file on a full filesystem (PostgreSQL's outages: test_postgres_outage.py).
    recorder = subscriber = sink
    rounds = 10 if long_run else 2
    statuses: Counter[int] = Counter()
    acknowledged: set[str] = set()
    number = 0
    # Room for every round's callbacks: only the filler may make the disk full, so freeing it must be enough.
    with mounted(tmp_path / "disk", "-t", "tmpfs", "-o", "size=64m", "tmpfs") as disk:
        db = disk / "relay.db"
        server = gateway(db).start()
        try:
            with httpx.Client(base_url=server.url, headers=ADMIN_HEADERS, timeout=30) as api:
                assert (
                    api.post("/api/subscribers", json={"name": "s", "url": f"{subscriber.url}/ok"}).status_code == 201
                )
                for _ in range(rounds):
                    for _ in range(5):
                        number += 1
                        assert post(api, job_body(number)) == 200
                        acknowledged.add(job_id(number))
                    filler = fill(disk)
                    refused: list[int] = []
                    for _ in range(100):  # until five in a row are refused
                        number += 1
                        status = post(api, big_body(number))
                        statuses[status] += 1
                        assert status in (200, 503)
                        if status == 200:
                            # It fitted in space the WAL file already had: committed, so honestly acknowledged
                            # (and checked to be stored below).
                            acknowledged.add(job_id(number))
                            refused.clear()
                        else:
                            refused.append(number)
                        if len(refused) == 5:
                            break
                    assert len(refused) == 5, "the full disk never refused a callback"
                    assert api.get("/healthz").status_code == 200  # full, but alive
                    filler.unlink()
                    for late in refused:  # COS tries again later; now there is room
                        accepted = functools.partial(lambda again: post(api, big_body(again)) == 200, late)
                        wait_until(accepted, 20, "accepted after the disk freed")
                        acknowledged.add(job_id(late))
                    assert api.get("/readyz").status_code == 200
                wait_until(lambda: unfinished_deliveries(db) == 0, timeout=60, what="every delivery delivered")
        finally:
            server.stop()
        stored = set(column(db, "SELECT job_id FROM jobs"))
        events = column(db, "SELECT id FROM events")
        check = integrity(db)
    delivered = {request.webhook_id for request in recorder.to("/ok")}
    record(
        "disk_full_long" if long_run else "disk_full",
        {
            "fill_cycles": rounds,
            "callbacks_acknowledged": len(acknowledged),
            "refused_503_while_full": statuses[503],
            "acknowledged_while_full_and_stored": statuses[200],
            "stored": len(stored),
            "delivered_distinct": len(delivered),
            "integrity_check": check,
        },
    )
    assert acknowledged == stored
    assert set(events) <= delivered
    assert check == "ok"


def _ext4_device(mountpoint: Path) -> str:
    source = run("findmnt", "-n", "-o", "SOURCE", str(mountpoint)).stdout.strip()
    return os.path.basename(source)


@pytest.mark.parametrize("durability", ["full", "normal"])
def test_a_filesystem_gone_read_only_gets_503_never_200_and_a_restart_on_it_repaired_is_consistent(
    durability: str, tmp_path: Path, sink: Sink, sqlite_only: None
) -> None:
    """SQLite only: the gateway's own file on a filesystem gone read-only (PostgreSQL read-only:
    test_postgres_outage.py).

    The kernel remounts ext4 read-only on an error (errors=remount-ro) even with files open for writing;
    ``mount -o remount,ro`` would refuse (busy). Coming back needs an unmount and fsck, hence a restart.

    To the data not yet written back, a filesystem abort is a power loss: ``full`` durability (fsync per
    commit) keeps every acknowledged callback; ``normal`` may lose the last ones, but never consistency.
    """
    if shutil.which("mkfs.ext4") is None:
        pytest.skip("mkfs.ext4 is not installed")
    recorder = subscriber = sink
    image = tmp_path / "disk.img"
    with image.open("wb") as out:
        out.truncate(32 * 1024 * 1024)
    assert run("mkfs.ext4", "-q", str(image)).returncode == 0
    disk = tmp_path / "disk"
    statuses: Counter[int] = Counter()
    with mounted(disk, "-o", "loop,errors=remount-ro", str(image)):
        db = disk / "relay.db"
        trigger = Path(f"/sys/fs/ext4/{_ext4_device(disk)}/trigger_fs_error")
        if not trigger.exists():
            pytest.skip("this kernel has no ext4 trigger_fs_error")
        server = gateway(db, args=("--durability", durability)).start()
        try:
            with httpx.Client(base_url=server.url, headers=ADMIN_HEADERS, timeout=30) as api:
                assert (
                    api.post("/api/subscribers", json={"name": "s", "url": f"{subscriber.url}/ok"}).status_code == 201
                )
                for number in range(5):
                    assert post(api, job_body(number)) == 200
                recorder.wait_for("/ok", 5)
                trigger.write_text("cos-relay chaos test\n")
                for number in range(5, 15):
                    status = post(api, job_body(number))
                    statuses[status] += 1
                    assert status == 503, "a callback was acknowledged on a read-only filesystem"
                assert api.get("/readyz").status_code == 503
                assert api.get("/healthz").status_code == 200
        finally:
            server.stop()
    # The operator's repair: fsck the image and mount it again, then start the gateway on it.
    fsck = run("e2fsck", "-fy", str(image))
    assert fsck.returncode in (0, 1), fsck.stdout
    with mounted(disk, "-o", "loop", str(image)):
        server = gateway(db, args=("--durability", durability)).start()
        try:
            with httpx.Client(base_url=server.url, headers=ADMIN_HEADERS, timeout=30) as api:
                for number in range(5, 15):  # COS tries again
                    assert post(api, job_body(number)) == 200
                wait_until(lambda: unfinished_deliveries(db) == 0, timeout=60, what="every delivery delivered")
        finally:
            server.stop()
        stored = set(column(db, "SELECT job_id FROM jobs"))
        check = integrity(db)
    before = {job_id(number) for number in range(5)}
    record(
        f"read_only_filesystem_{durability}",
        {
            "durability": durability,
            "refused_503_while_read_only": statuses[503],
            "acknowledged_while_read_only": statuses[200],
            "acknowledged_before_the_abort_and_lost": len(before - stored),
            "stored_after_repair": len(stored),
            "delivered_distinct": len({request.webhook_id for request in recorder.to("/ok")}),
            "integrity_check": check,
        },
    )
    assert {job_id(number) for number in range(5, 15)} <= stored
    if durability == "full":
        assert before <= stored
    assert check == "ok"
