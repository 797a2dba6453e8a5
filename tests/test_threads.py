"""The engine's thread choice (minidl.engine.threads) and the thread settings it drives."""

import numpy as np
import pytest

from minidl import _fused
from minidl.backend import blas_threads
from minidl.engine import threads as thread_choice
from minidl.engine.passes import passes_for
from minidl.engine.threads import ThreadChoice
from minidl.networks import TwoLayerNet


def run_calls(choice, seconds, calls):
    """Picks ``calls`` times, each call taking ``seconds[threads]``; returns the picks."""
    picks = []
    for _ in range(calls):
        n = choice.pick()
        picks.append(n)
        choice.record(n, seconds[n])
    return picks


@pytest.mark.parametrize("faster", [1, 2])
def test_the_faster_option_is_taken_and_the_other_tried_now_and_then(faster):
    choice = ThreadChoice(2, fixed=False)
    seconds = {1: 1.0, 2: 3.0} if faster == 1 else {1: 3.0, 2: 1.0}
    picks = run_calls(choice, seconds, 1000)
    assert set(picks) == {1, 2}
    share = picks.count(faster) / len(picks)
    assert 0.95 <= share < 1  # tries of the other option: a few calls in a hundred
    assert choice.best() == faster


def test_a_change_of_machine_is_followed():
    choice = ThreadChoice(2, fixed=False)
    run_calls(choice, {1: 3.0, 2: 1.0}, 300)
    assert choice.best() == 2
    # a neighbour starts: two threads become slow
    picks = run_calls(choice, {1: 3.0, 2: 9.0}, 2 * thread_choice.EXPLORE_EVERY
                      * thread_choice.KEPT)
    assert choice.best() == 1 and picks[-50:].count(1) >= 48


def test_tries_of_a_much_slower_option_take_a_small_share_of_the_time():
    # a busy machine: a second thread waits a time slice at each barrier (25 ms a call)
    choice = ThreadChoice(2, fixed=False)
    seconds = {1: 0.001, 2: 0.030}
    picks = run_calls(choice, seconds, 20000)
    later = picks[2 * thread_choice.TRIES:]
    tried = later.count(2) * seconds[2]
    assert 0 < tried <= 1.5 * thread_choice.EXPLORE_SHARE * later.count(1) * seconds[1]
    assert choice.best() == 1


def test_a_machine_that_became_idle_is_followed_within_a_few_calls():
    choice = ThreadChoice(2, fixed=False)
    run_calls(choice, {1: 3.0, 2: 9.0}, 300)
    assert choice.best() == 1
    # the neighbour stops: two threads become fast; the next try finds it and the
    # following calls confirm it
    picks = run_calls(choice, {1: 3.0, 2: 1.0}, 400)
    first = picks.index(2)
    assert picks[first:first + thread_choice.KEPT].count(2) >= thread_choice.KEPT // 2
    assert choice.best() == 2 and picks[-50:].count(2) >= 48


def test_an_option_fast_on_most_calls_but_stalling_on_some_is_not_taken():
    # beside a busy process two threads run most calls faster than one, and every
    # fourth waits a time slice for the descheduled thread: the sum is what counts
    choice = ThreadChoice(2, fixed=False)
    calls = [0]

    def seconds(n):
        calls[0] += 1
        return 1.0 if n == 1 else (10.0 if calls[0] % 4 == 0 else 0.8)

    for _ in range(2000):
        n = choice.pick()
        choice.record(n, seconds(n))
    assert choice.best() == 1


def test_a_fixed_count_is_never_changed():
    choice = ThreadChoice(2, fixed=True)
    assert set(run_calls(choice, {1: 1.0, 2: 5.0}, 300)) == {2}
    assert set(run_calls(ThreadChoice(1, fixed=False), {1: 1.0}, 50)) == {1}


def test_sgd_step_threads_are_clamped_to_what_it_was_made_for():
    W = [np.zeros((8, 4)), np.zeros((4, 3))]
    b = [np.zeros(4), np.zeros(3)]
    step = _fused.SGDStep(W, b, np.zeros((5, 8)), None, False, 10, 2)
    assert step.threads == step.max_threads == 2
    step.threads = 1
    assert step.threads == 1
    step.threads = 7
    assert step.threads == 2
    step.threads = 0
    assert step.threads == 1


@pytest.mark.parametrize("density", [0.2, 0.9])  # the kernels' threads, BLAS's threads
def test_the_thread_count_does_not_change_the_passes_results(density, rng, monkeypatch):
    x = rng.random((150, 64)).astype(np.float32)
    x[rng.random(x.shape) >= density] = 0
    t = rng.integers(0, 6, 150)
    net = TwoLayerNet(64, 20, 6, weight_init_std=0.3)
    passes = passes_for(net)
    results = []
    for n in (1, 2):
        monkeypatch.setattr(ThreadChoice, "pick", lambda self, n=n: n)
        monkeypatch.setattr(ThreadChoice, "best", lambda self, n=n: n)
        grads = passes.gradient(x, t)
        results.append((grads, passes.loss(x, t), passes.accuracy(x, t)))
    (g1, l1, a1), (g2, l2, a2) = results
    for key in g1:
        np.testing.assert_array_equal(g1[key], g2[key])
    assert l1 == l2 and a1 == a2


def test_blas_threads_set_for_the_calling_thread_are_restored():
    before = blas_threads.set_local(1)
    assert blas_threads.set_local(before) == (1 if blas_threads.available() else 0)


def test_blas_threads_local_restores_the_count_before_it():
    before = blas_threads.set_local(2)
    try:
        with blas_threads.local(1):
            assert blas_threads.set_local(1) == (1 if blas_threads.available() else 0)
        assert blas_threads.set_local(2) == (2 if blas_threads.available() else 0)
    finally:
        blas_threads.set_local(before)


class FakeClock:
    """A stand-in for the time module the thread choice reads: seconds set by hand."""

    def __init__(self):
        self.now = 1000.0

    def perf_counter(self):
        return self.now


@pytest.fixture
def clock(monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr(thread_choice, "time", fake)
    monkeypatch.setattr(thread_choice, "_recent_passes", {})
    return fake


def settled(choice, seconds):
    """``choice`` after enough calls, each taking ``seconds[threads]``, to have chosen."""
    run_calls(choice, seconds, 4 * thread_choice.TRIES)
    return choice


def test_a_blas_pass_takes_one_thread_beside_another_networks_passes(clock):
    blas = settled(ThreadChoice(2, fixed=False, pool=thread_choice.BLAS, owner="bn"),
                   {1: 3.0, 2: 1.0})
    assert blas.pick() == 2 and blas.best() == 2  # alone: its own choice
    other = ThreadChoice(2, fixed=False, pool=thread_choice.OPENMP, owner="plain")
    for _ in range(5):  # the two networks' passes in turn, 10 ms apart
        other.pick()
        clock.now += 0.01
        assert blas.pick() == 1 and blas.best() == 1
        clock.now += 0.01
    # the other network stops: past the window, the choice is its own again
    clock.now += 2 * thread_choice.TEAM_WINDOW
    assert blas.pick() == 2


def test_calls_kept_to_one_thread_are_not_measures_of_the_options(clock):
    blas = settled(ThreadChoice(2, fixed=False, pool=thread_choice.BLAS, owner="bn"),
                   {1: 3.0, 2: 1.0})
    before = {n: list(times) for n, times in blas.times.items()}
    calls = blas.calls
    other = ThreadChoice(2, fixed=False, pool=thread_choice.BLAS, owner="plain")
    for _ in range(50):
        other.pick()
        n = blas.pick()
        blas.record(n, 100.0)  # a slow call beside the other network: not counted
    assert {n: list(times) for n, times in blas.times.items()} == before
    assert blas.calls == calls


def test_passes_of_one_owner_and_openmp_passes_are_not_kept_to_one_thread(clock):
    gradient = settled(ThreadChoice(2, fixed=False, pool=thread_choice.BLAS, owner="net"),
                       {1: 3.0, 2: 1.0})
    loss = settled(ThreadChoice(2, fixed=False, pool=thread_choice.BLAS, owner="net"),
                   {1: 3.0, 2: 1.0})
    kernels = settled(ThreadChoice(2, fixed=False, pool=thread_choice.OPENMP, owner="other"),
                      {1: 3.0, 2: 1.0})
    clock.now += 2 * thread_choice.TEAM_WINDOW  # (settling them counted as passes)
    for _ in range(5):
        assert gradient.pick() == 2 and loss.pick() == 2  # the same network's passes
    assert kernels.pick() == 2  # OpenMP passes never step aside
    assert gradient.pick() == 1  # ... but BLAS passes beside them do


@pytest.mark.parametrize("pool", [None, thread_choice.BLAS])
def test_a_fixed_count_or_a_pass_of_no_pool_is_never_kept_to_one_thread(clock, pool):
    other = ThreadChoice(2, fixed=False, pool=thread_choice.OPENMP, owner="other")
    fixed = ThreadChoice(2, fixed=True, pool=pool, owner="net")
    free = settled(ThreadChoice(2, fixed=False, pool=None, owner="net"), {1: 3.0, 2: 1.0})
    for _ in range(5):
        other.pick()
        assert fixed.pick() == 2 and fixed.best() == 2
        other.pick()
        assert free.pick() == 2
    assert list(thread_choice._recent_passes) == [id("other")]  # (no pool: not noted)


def test_a_network_passes_choices_belong_to_the_network(rng):
    x = rng.random((20, 16)).astype(np.float32)
    net = TwoLayerNet(16, 8, 3)
    passes = passes_for(net)
    passes.gradient(x, rng.integers(0, 3, 20))
    choices = list(passes._threads.values())
    assert choices and all(c.owner == id(passes) for c in choices)
    assert {c.pool for c in choices} <= {thread_choice.BLAS, thread_choice.OPENMP}
