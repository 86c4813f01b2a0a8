"""Self-tests of the linearizability checker: real histories pass, known bad ones fail."""

from __future__ import annotations

import random
import threading
import time

from tests.linearizability import Op, Recorder, check_history, check_register


def w(call: float, ret: float | None, value: str) -> Op:
    return Op(call, ret, "w", value)


def r(call: float, ret: float, value: str | None) -> Op:
    return Op(call, ret, "r", value)


def test_sequential_history() -> None:
    assert check_register([w(0, 1, "a"), r(2, 3, "a"), w(4, 5, "b"), r(6, 7, "b")]).ok


def test_initial_value_and_concurrent_read_sees_either() -> None:
    assert check_register([r(0, 1, None), w(2, 5, "a"), r(3, 4, None)]).ok
    assert check_register([w(2, 5, "a"), r(3, 4, "a")]).ok


def test_read_of_a_value_never_written_fails() -> None:
    result = check_register([w(0, 1, "a"), r(2, 3, "zzz")])
    assert not result.ok and "never written" in result.message


def test_stale_read_after_completed_newer_write_fails() -> None:
    assert not check_register([w(0, 1, "a"), w(2, 3, "b"), r(4, 5, "a")]).ok


def test_new_then_old_between_concurrent_readers_fails() -> None:
    # w(b) is still running, but once a read returned b, a later read must not return a again.
    assert not check_register([w(0, 1, "a"), w(2, 10, "b"), r(3, 4, "b"), r(5, 6, "a")]).ok
    assert check_register([w(0, 1, "a"), w(2, 10, "b"), r(3, 4, "a"), r(5, 6, "b")]).ok


def test_maybe_applied_writes() -> None:
    # A timed-out write may have happened ...
    assert check_register([w(0, 1, "a"), w(2, None, "b"), r(5, 6, "b")]).ok
    # ... or not.
    assert check_register([w(0, 1, "a"), w(2, None, "b"), r(5, 6, "a")]).ok
    # But not twice, or un-happen.
    assert not check_register([w(0, 1, "a"), w(2, None, "b"), r(5, 6, "b"), r(7, 8, "a")]).ok


def test_per_key_checking_names_the_bad_key() -> None:
    good = [w(0, 1, "a"), r(2, 3, "a")]
    bad = [w(0, 1, "a"), w(2, 3, "b"), r(4, 5, "a")]
    result = check_history({"k1": good, "k2": bad})
    assert not result.ok and result.key == "k2"
    assert check_history({"k1": good, "k2": good}).ok


def simulated_history(seed: int, clients: int = 6, ops_per_client: int = 60) -> list[Op]:
    """A linearizable history: each op takes effect atomically at a point inside its interval."""
    rnd = random.Random(seed)
    events = []
    for c in range(clients):
        t = rnd.random()
        for k in range(ops_per_client):
            call = t
            point = call + rnd.random() * 0.5
            ret = point + rnd.random() * 0.5
            kind = "w" if rnd.random() < 0.4 else "r"
            events.append((point, call, ret, kind, f"{c}-{k}", c))
            t = ret + rnd.random() * 0.2
    events.sort()
    value = None
    ops = []
    for point, call, ret, kind, val, c in events:
        if kind == "w":
            value = val
            timed_out = rnd.random() < 0.05
            ops.append(Op(call, None if timed_out else ret, "w", val, c))
        else:
            ops.append(Op(call, ret, "r", value, c))
    return ops


def test_random_linearizable_histories_pass_quickly() -> None:
    for seed in range(5):
        started = time.monotonic()
        result = check_register(simulated_history(seed))
        assert result.ok, result.message
        assert time.monotonic() - started < 10


def test_corrupted_history_fails() -> None:
    ops = simulated_history(7)
    reads = [i for i, op in enumerate(ops) if op.kind == "r" and op.value is not None]
    i = reads[len(reads) // 2]
    ops[i] = Op(ops[i].call, ops[i].ret, "r", "never-written", ops[i].client)
    assert not check_register(ops).ok


def test_recorder_is_thread_safe() -> None:
    rec = Recorder()

    def work(c: int) -> None:
        for k in range(100):
            now = time.monotonic()
            rec.record("key", "w", f"{c}-{k}", now, now, c)

    threads = [threading.Thread(target=work, args=(c,)) for c in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert rec.count() == 400
