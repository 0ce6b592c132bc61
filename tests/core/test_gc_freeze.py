import gc

from harness.core.gc_freeze import frozen_gc


def test_frozen_gc_freezes_for_the_block_only():
    gc.unfreeze()
    keep = [[i] for i in range(1000)]
    with frozen_gc():
        assert gc.get_freeze_count() >= len(keep)
    assert gc.get_freeze_count() == 0
