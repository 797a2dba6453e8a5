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

``MINIDL_NUM_THREADS`` set in the environment fixes the count: no choice is made.
"""

from __future__ import annotations

import time
from collections import deque

from .. import backend

__all__ = ["ThreadChoice"]

EXPLORE_EVERY = 100  # calls at least between two tries of the option not in use
EXPLORE_SHARE = 0.02  # at most this share of the time spent goes to those tries
TRIES = 2  # calls on each option at the start
KEPT = 12  # recent wall times kept per option (their mean decides: see ThreadChoice)


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

    def __init__(self, many: int | None = None, fixed: bool | None = None):
        self.many = max(1, many or backend.STEP_THREADS)
        self.fixed = backend.THREADS_FIXED if fixed is None else fixed
        self.times = {1: deque(maxlen=KEPT), self.many: deque(maxlen=KEPT)}
        self.calls = 0
        self._since_try = 0  # calls since the last try of the other option
        self._spent = 0.0  # seconds spent on the option in use since then
        self._again = False  # the last try was faster: try once more

    def best(self) -> int:
        """The option with the lower mean wall time so far (``many`` until both are known)."""
        if self.fixed or self.many == 1:
            return self.many
        one, many = self.times[1], self.times[self.many]
        if not one or not many:
            return self.many
        return 1 if _mean(one) < _mean(many) else self.many

    def pick(self) -> int:
        """The thread count for the next call (then ``record`` its wall time)."""
        self.calls += 1
        if self.fixed or self.many == 1:
            return self.many
        if self.calls <= 2 * TRIES:  # first both, a couple of calls each
            return self.many if self.calls <= TRIES else 1
        best = self.best()
        other = 1 if best == self.many else self.many
        if self._again or (self._since_try >= EXPLORE_EVERY
                           and self._spent * EXPLORE_SHARE >= _mean(self.times[other])):
            return other
        return best

    def record(self, threads: int, seconds: float) -> None:
        if self.calls > 2 * TRIES and not self.fixed and self.many != 1:
            best = self.best()
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
