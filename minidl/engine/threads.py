"""How many threads a compiled pass runs on: chosen by measuring, call by call.

A second thread makes minidl's steps faster on an idle machine (about 1.2x on
two cores) and several times slower when another process keeps a core busy: a
thread descheduled for a time slice holds up the others at every barrier of
every step. No fixed default is right for both, and a student's laptop, a
shared lab machine and a Colab host are each sometimes one and sometimes the
other. So each pass (a runner's steps, a network's gradient or loss) keeps the
wall times of its recent calls on one thread and on the default number, runs
on the faster, and tries the other now and then (a few calls in a hundred) to
notice when the machine changes. minidl's own kernels give the same numbers on
any number of threads (tests hold them to it); OpenBLAS's products, which the
dense passes and the convolutions run, may not in the last bits for some shapes
(100 x 784 x 50 differs by ~1e-13 between one thread and two), so there a run's
last digits can depend on the machine's load, as the book's own NumPy code's
depend on NumPy's thread setting.

Two teams of threads do not share two cores well. After its work each team
spins for a while before it sleeps (the kernels' OpenMP team, OpenBLAS's
threads), and a team that starts meanwhile waits for the cores. ch06's batch_norm_test trains a network
with batch normalisation (its products on BLAS) beside one without (minidl's
OpenMP kernels on MNIST), a call of each in turn: with both on two threads its
loop took 10.9 s, on one thread 3.7 s, each choosing for itself 4.1-4.5 s, the
BLAS passes on one thread and the kernels on two 3.6 s (4 weight scales, 2
cores; at the weight scale where the network without batch normalisation
overflows to NaN and moves to BLAS too, its passes took 0.28 s with the other
network's on one thread, 0.43 s with both choosing two). So a pass on BLAS
(``pool=BLAS``) stays on one thread while passes of another owner (another
network's, on minidl's OpenMP kernels or on BLAS) run beside it, one within the
last ``TEAM_WINDOW`` seconds; a network alone chooses as before. Passes of
neither kind (``pool=None``) take no part.

``MINIDL_NUM_THREADS`` set in the environment fixes the count: no choice is made.
"""

from __future__ import annotations

import time
from collections import deque

from .. import backend

__all__ = ["BLAS", "OPENMP", "ThreadChoice"]

EXPLORE_EVERY = 100  # calls at least between two tries of the option not in use
EXPLORE_SHARE = 0.02  # at most this share of the time spent goes to those tries
TRIES = 2  # calls on each option at the start
KEPT = 12  # recent wall times kept per option (their mean decides: see ThreadChoice)
OPENMP, BLAS = "openmp", "blas"  # the team of threads a pass runs on
TEAM_WINDOW = 0.05  # seconds after another owner's pass that BLAS passes take one thread
_recent_passes: dict = {}  # owner -> when its last pass started (within TEAM_WINDOW)


class ThreadChoice:
    """Picks, before each call, between one thread and ``many``, from the mean wall
    times of recent calls on each. ``fixed``: always ``many`` (the user's setting).

    The mean, not the median: beside a busy process, two threads run most calls
    a little faster than one and every few calls wait a whole time slice for the
    descheduled thread. The median hides those waits; the time a student waits
    is the sum, which the mean follows.

    A try of the other option costs what that option costs, which on a busy
    machine can be thirty calls' worth (a second thread waiting a time slice at
    each barrier): tries come at least ``EXPLORE_EVERY`` calls apart, and further
    apart when the other option was slow, so that they take at most
    ``EXPLORE_SHARE`` of the time. A try that beats the option in use is followed
    by another at once, so that a machine that became idle (or busy) is followed
    within a few calls.
    """

    def __init__(self, many: int | None = None, fixed: bool | None = None,
                 pool: str | None = None, owner=None):
        self.many = max(1, many or backend.STEP_THREADS)
        self.fixed = backend.THREADS_FIXED if fixed is None else fixed
        # OPENMP, BLAS or None, and the owner of the passes (see the module's docstring)
        self.pool = pool
        self.owner = id(self) if owner is None else id(owner)
        self._kept_off = False  # the last pick was one thread beside another owner's passes
        self.times = {1: deque(maxlen=KEPT), self.many: deque(maxlen=KEPT)}
        self.calls = 0
        self._since_try = 0  # calls since the last try of the other option
        self._spent = 0.0  # seconds spent on the option in use since then
        self._again = False  # the last try was faster: try once more

    def best(self) -> int:
        """The option with the lower mean wall time so far (``many`` until both are
        known), for a call about to run; one thread for a BLAS pass beside another
        owner's passes."""
        if self.fixed or self.many == 1:
            return self.many
        if self._beside_another_owner():
            return 1
        return self._fastest()

    def _fastest(self) -> int:
        one, many = self.times[1], self.times[self.many]
        return 1 if one and many and _mean(one) < _mean(many) else self.many

    def pick(self) -> int:
        """The thread count for the next call (then ``record`` its wall time)."""
        if self.fixed or self.many == 1:
            return self.many
        self._kept_off = self._beside_another_owner()
        if self._kept_off:
            return 1  # (not a try: the calls' count and the tries' schedule stand still)
        self.calls += 1
        if self.calls <= 2 * TRIES:  # first both, a couple of calls each
            return self.many if self.calls <= TRIES else 1
        best = self._fastest()
        other = 1 if best == self.many else self.many
        if self._again or (self._since_try >= EXPLORE_EVERY
                           and self._spent * EXPLORE_SHARE >= _mean(self.times[other])):
            return other
        return best

    def _beside_another_owner(self) -> bool:
        """Whether this is a BLAS pass beside another owner's passes; notes the pass."""
        if self.pool is None:
            return False
        now = time.perf_counter()
        beside = False
        for owner, when in list(_recent_passes.items()):  # (a few owners at most)
            if now - when >= TEAM_WINDOW:
                _recent_passes.pop(owner, None)
            elif owner != self.owner:
                beside = True
        _recent_passes[self.owner] = now
        return beside and self.pool == BLAS

    def record(self, threads: int, seconds: float) -> None:
        if self._kept_off:
            return  # a call kept off the other passes' cores, not a measure of the options
        if self.calls > 2 * TRIES and not self.fixed and self.many != 1:
            best = self._fastest()
            if threads == best:
                self._since_try += 1
                self._spent += seconds
                self._again = False
            else:  # a try of the other option
                self._again = seconds < _mean(self.times[best])
                self._since_try, self._spent = 0, 0.0
        self.times[threads].append(seconds)

    def timed(self, run, *args):
        """``run(threads, *args)`` on the picked thread count, its wall time recorded."""
        threads = self.pick()
        start = time.perf_counter()
        result = run(threads, *args)
        self.record(threads, time.perf_counter() - start)
        return result


def _mean(values) -> float:
    return sum(values) / len(values)
