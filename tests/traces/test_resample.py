def test_replicate_windows_are_seeded_and_fit_the_trace():
    from traces.resample import replicate_start

    assert replicate_start(1000, 200, seed=3, replicate=0) == 0  # replicate 0 is the trace's own start
    assert replicate_start(150, 200, seed=3, replicate=2) == 0  # too short for another window
    starts = [replicate_start(1000, 200, seed=3, replicate=k) for k in range(1, 6)]
    assert starts == [replicate_start(1000, 200, seed=3, replicate=k) for k in range(1, 6)]  # deterministic
    assert all(0 <= s <= 800 for s in starts) and len(set(starts)) > 1
