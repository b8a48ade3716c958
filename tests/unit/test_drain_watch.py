"""NodeDrainWatch (an in-trial run's drain-notice watcher) against a stand-in for
Ray's list of draining nodes: what its deadline says, and that its thread stops."""

from __future__ import annotations

import time

from raysweep.worker.drain import DEFAULT_DEADLINE_S, NodeDrainWatch


def wait_for(predicate, timeout: float = 5.0) -> None:
    end = time.time() + timeout
    while not predicate():
        assert time.time() < end, "timed out"
        time.sleep(0.01)


def test_a_notice_for_this_node_gives_its_deadline_and_one_for_another_node_does_not():
    draining: dict[str, int] = {"other": 1_000}
    with NodeDrainWatch("mine", poll_s=0.01, draining=lambda: dict(draining)) as watch:
        time.sleep(0.05)
        assert watch.deadline() is None
        draining["mine"] = 1_900_000_000_500
        wait_for(lambda: watch.deadline() is not None)
        assert watch.deadline() == 1_900_000_000.5
        del draining["mine"]  # (the drain was cancelled)
        wait_for(lambda: watch.deadline() is None)
    assert not watch._thread.is_alive()


def test_a_notice_without_a_deadline_gets_the_default_from_when_it_was_first_seen():
    calls = []

    def draining():
        calls.append(1)
        return {"mine": 0}

    seen = time.time()
    with NodeDrainWatch("mine", poll_s=0.01, draining=draining) as watch:
        wait_for(lambda: watch.deadline() is not None)
        first = watch.deadline()
        wait_for(lambda: len(calls) > 3)
        assert watch.deadline() == first  # (fixed when first seen, not pushed back)
    assert seen + DEFAULT_DEADLINE_S - 1 < first < time.time() + DEFAULT_DEADLINE_S


def test_a_failing_ask_keeps_the_last_answer():
    answers = iter([{"mine": 2_000_000_000_000}])

    def draining():
        try:
            return next(answers)
        except StopIteration:
            raise ConnectionError("GCS unavailable") from None

    with NodeDrainWatch("mine", poll_s=0.01, draining=draining) as watch:
        wait_for(lambda: watch.deadline() is not None)
        time.sleep(0.05)
        assert watch.deadline() == 2_000_000_000.0
