"""After start-up, the objects alive then are left out of every later garbage collection."""

from __future__ import annotations

import gc

from relay.app.serving import freeze_startup_heap


def test_freezing_after_start_up_leaves_the_objects_alive_then_out_of_later_collections() -> None:
    kept = [object() for _ in range(3)]
    try:
        freeze_startup_heap()
        assert gc.get_freeze_count() >= len(kept)
        before = gc.get_freeze_count()
        gc.collect()
        assert gc.get_freeze_count() == before  # a collection neither walks nor thaws them
    finally:
        gc.unfreeze()  # this test process goes on: let everything be collected again
    assert gc.get_freeze_count() == 0
