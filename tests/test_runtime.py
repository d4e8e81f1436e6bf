"""AppRuntime's shared services that are not covered elsewhere: the stream pacer."""

from __future__ import annotations

import threading

from llm_levels.runtime import StreamPacer


def test_one_stream_updates_at_the_base_rate_and_many_share_a_budget():
    pacer = StreamPacer(base=0.05, cap=0.5)
    assert pacer.interval() == 0.05 and pacer.active == 0
    with pacer.streaming():
        assert pacer.interval() == 0.05 and pacer.active == 1
        with pacer.streaming(), pacer.streaming(), pacer.streaming():
            assert pacer.active == 4
            assert abs(pacer.interval() - 0.2) < 1e-9  # 4 streams: each updates 5 times a second
        assert pacer.active == 1
    assert pacer.active == 0


def test_the_interval_is_capped_and_the_count_survives_errors_and_threads():
    pacer = StreamPacer(base=0.05, cap=0.5)
    try:
        with pacer.streaming():
            raise RuntimeError("a handler failed")
    except RuntimeError:
        pass
    assert pacer.active == 0
    inside, release = threading.Barrier(41), threading.Event()

    def stream():
        with pacer.streaming():
            inside.wait()
            release.wait()

    threads = [threading.Thread(target=stream) for _ in range(40)]
    for t in threads:
        t.start()
    inside.wait()
    assert pacer.active == 40 and pacer.interval() == 0.5
    release.set()
    for t in threads:
        t.join()
    assert pacer.active == 0
