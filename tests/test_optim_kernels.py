"""minidl._optim (compiled update rules) against the book's NumPy lines, bit for bit."""

import copy

import numpy as np
import pytest
from book_common import book_ch6

import minidl
from minidl import _optim_cython, optimizer

RULES = {
    "SGD": {"lr": 0.1},
    "Momentum": {"lr": 0.05, "momentum": 0.8},
    "Nesterov": {"lr": 0.05, "momentum": 0.85},
    "AdaGrad": {"lr": 0.3},
    "RMSprop": {"lr": 0.02, "decay_rate": 0.9},
    "Adam": {"lr": 0.01, "beta1": 0.8, "beta2": 0.99},
}


def params_of(rng, dtype, special=False):
    p = {"W": rng.standard_normal((31, 17)).astype(dtype), "b": rng.standard_normal(17)
         .astype(dtype), "s": rng.standard_normal((2, 3, 4, 5)).astype(dtype)}
    if special:  # zeros, tiny and huge values, as training meets them
        p["W"][0, :5] = [0.0, 1e-30, -1e-30, 1e30, -0.0]
    return p


def grads_of(rng, params, special=False):
    g = {k: (rng.standard_normal(v.shape) * 10.0 ** rng.integers(-8, 3, v.shape)).astype(v.dtype)
         for k, v in params.items()}
    if special:
        g["W"][0, :4] = [0.0, 1e-38, np.inf, np.nan]
    return g


def run(name, kwargs, params, grads_list, backend):
    before = minidl.get_backend()
    minidl.set_backend(backend)
    try:
        opt = getattr(optimizer, name)(**kwargs)
        for grads in grads_list:
            opt.update(params, grads)
    finally:
        minidl.set_backend(before)
    return opt


@pytest.fixture(params=["avx2", "baseline"])
def simd(request):
    from minidl import _optim

    level = _optim.use_simd(request.param == "avx2")
    if level != request.param:
        pytest.skip("this CPU has no AVX2")
    yield level
    _optim.use_simd(True)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # (NaN and infinity in the gradients)
@pytest.mark.parametrize("special", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("scalar", [float, np.float64, np.float32])
@pytest.mark.parametrize("name", list(RULES))
def test_compiled_rules_are_the_books_numpy_lines_bit_for_bit(name, scalar, dtype, special, simd,
                                                              rng):
    kwargs = {k: scalar(v) for k, v in RULES[name].items()}
    params = params_of(rng, dtype, special)
    grads_list = [grads_of(rng, params, special and i == 2) for i in range(5)]
    compiled, numpy_path, book = (copy.deepcopy(params) for _ in range(3))
    ours = run(name, kwargs, compiled, grads_list, "cython")
    run(name, kwargs, numpy_path, grads_list, "numpy")
    book_opt = getattr(book_ch6, name)(**kwargs)
    for grads in grads_list:
        book_opt.update(book, grads)
    for key in params:
        assert compiled[key].dtype == dtype
        np.testing.assert_array_equal(compiled[key], numpy_path[key], err_msg=key)
        np.testing.assert_array_equal(compiled[key], book[key], err_msg=key)
    assert_same_states(ours, book_opt, params)


def assert_same_states(ours, book_opt, params):
    for state in ("v", "h", "m"):
        if hasattr(book_opt, state):
            for key in params:
                np.testing.assert_array_equal(getattr(ours, state)[key],
                                              getattr(book_opt, state)[key])


@pytest.mark.parametrize("name", list(RULES))
def test_the_kernels_serve_the_common_cases(name, rng):
    for dtype in (np.float32, np.float64):
        params = params_of(rng, dtype)
        opt = getattr(optimizer, name)(**RULES[name])
        opt.update(params, {k: np.zeros_like(v) for k, v in params.items()})
        kernel = _optim_cython.kernel_for(opt)
        assert kernel is not None  # (one per rule, whatever the instance)
        assert kernel is _optim_cython.kernel_for(getattr(optimizer, name)(**RULES[name]))
        g = np.ones_like(params["W"])
        assert kernel(opt, "W", params["W"], g) is True


@pytest.mark.parametrize("name", list(RULES))
def test_the_kernels_step_aside_where_numpy_would_compute_differently(name, rng):
    params = params_of(rng, np.float32)
    opt = getattr(optimizer, name)(**RULES[name])
    opt.update(params, {k: np.zeros_like(v) for k, v in params.items()})
    kernel = _optim_cython.kernel_for(opt)
    W = params["W"]
    assert not kernel(opt, "W", W, np.ones(W.shape))  # float64 gradient: NumPy promotes
    assert not kernel(opt, "W", W, W)  # the gradient is the parameter
    strided = np.ones((W.shape[0], 2 * W.shape[1]), np.float32)[:, ::2]
    assert not kernel(opt, "W", W, strided)
    opt.lr = np.float64(opt.lr)  # a NumPy float64 makes the book's float32 lines float64
    if name != "Adam":  # (Adam's float32 step is float64 already)
        assert not kernel(opt, "W", W, np.ones_like(W))


@pytest.mark.parametrize("name", list(RULES))
def test_overlapping_arrays_run_the_books_lines(name, rng):
    # the kernels may assume arrays that do not overlap: arrays that own their memory
    # are taken without np.may_share_memory, views of one buffer must not be
    buf = rng.standard_normal(2 * 40).astype(np.float64)
    opt = getattr(optimizer, name)(**RULES[name])
    W = buf[:40]  # a view: does not own its memory
    opt.update({"W": W}, {"W": np.zeros(40)})
    kernel = _optim_cython.kernel_for(opt)
    assert kernel(opt, "W", W, buf[40:].copy()) is True  # a view beside a separate array
    assert not kernel(opt, "W", W, buf[20:60])  # a gradient overlapping the parameter
    state = opt.m if name == "Adam" else getattr(opt, "v", None) or getattr(opt, "h", None)
    if state is not None:  # a state array overlapping the gradient
        grad = np.ones(40)
        state["W"] = grad
        assert not kernel(opt, "W", W, grad)
    owned = np.ones(40)
    assert not kernel(opt, "W", owned, owned)  # the same array twice, both owning

    # and the update over overlapping arrays gives the book's numbers
    for overlap in (lambda b: (b[:40], b[20:60]), lambda b: (b[:40], b[:40])):
        mine, ref = buf.copy(), buf.copy()
        p, g = overlap(mine)
        opt = getattr(optimizer, name)(**RULES[name])
        opt.update({"W": p}, {"W": g})
        p, g = overlap(ref)
        getattr(book_ch6, name)(**RULES[name]).update({"W": p}, {"W": g})
        np.testing.assert_array_equal(mine, ref)


def test_subclasses_and_patched_methods_run_their_own_code(rng, monkeypatch):
    class Mine(optimizer.SGD):
        def update_one(self, key, param, grad):
            param += 1.0

    assert _optim_cython.kernel_for(Mine()) is None
    p = {"W": np.zeros(3)}
    Mine().update(p, {"W": np.ones(3)})
    np.testing.assert_array_equal(p["W"], 1.0)

    class Same(optimizer.Adam):  # a subclass keeps the book's code: no kernel either
        pass

    assert _optim_cython.kernel_for(Same()) is None
    monkeypatch.setattr(optimizer.Momentum, "update_one",
                        lambda self, key, param, grad: param.fill(7.0))
    p = {"W": np.zeros(3)}
    optimizer.Momentum().update(p, {"W": np.ones(3)})
    np.testing.assert_array_equal(p["W"], 7.0)


def test_kernels_check_lengths():
    from minidl import _optim

    with pytest.raises(ValueError, match="arrays of 2 and 3 elements"):
        _optim.sgd(np.zeros(3), np.zeros(2), 0.1)
    with pytest.raises(ValueError):
        _optim.adam(np.zeros(3), np.zeros(3), np.zeros(3), np.zeros(4), 0.1, 0.1, 0.1)



# -- every parameter in one call (_optim.update_all) ----------------------------------

@pytest.mark.parametrize("name", list(RULES))
def test_one_call_updates_every_parameter_as_the_book(name, rng, monkeypatch):
    from minidl import _optim

    calls = []
    real = _optim.update_all
    monkeypatch.setattr(_optim, "update_all", lambda *a: calls.append(real(*a)) or calls[-1])
    def not_called(*args):
        raise AssertionError("a per-parameter kernel ran")

    for cls, (update_one, _) in list(_optim_cython._KERNELS.items()):
        monkeypatch.setitem(_optim_cython._KERNELS, cls, (update_one, not_called))
    for dtype in (np.float32, np.float64):
        params = params_of(rng, dtype)
        book = copy.deepcopy(params)
        grads_list = [grads_of(rng, params) for _ in range(3)]
        ours = run(name, RULES[name], params, grads_list, "cython")
        book_opt = getattr(book_ch6, name)(**RULES[name])
        for grads in grads_list:
            book_opt.update(book, grads)
        for key in params:
            np.testing.assert_array_equal(params[key], book[key], err_msg=key)
        assert_same_states(ours, book_opt, params)
    assert calls == [True] * 6


def _cases(rng):
    """Updates the one call must refuse (nothing changed), with why."""
    p64 = params_of(rng, np.float64)
    mixed = dict(p64, b=p64["b"].astype(np.float32))  # float64 and float32 parameters
    yield "mixed dtypes", mixed, {k: np.ones_like(v) for k, v in mixed.items()}
    grads = {k: np.ones_like(v) for k, v in p64.items()}
    grads["W"] = np.ones((31, 34))[:, ::2]  # a strided gradient
    yield "strided gradient", params_of(rng, np.float64), grads
    p = params_of(rng, np.float64)
    yield "gradient is the parameter", p, dict({k: np.ones_like(v) for k, v in p.items()},
                                                s=p["s"])
    p = params_of(rng, np.float64)
    p["W"] = p["W"].astype(">f8")  # not in native byte order
    yield "swapped bytes", p, {k: np.ones(v.shape) for k, v in p.items()}
    p = params_of(rng, np.float64)
    p["b"] = p["b"].reshape(1, 17)  # a gradient of another shape, the same size
    yield "shapes", p, {k: np.ones(v.shape[::-1]) for k, v in p.items()}


@pytest.mark.parametrize("name", list(RULES))
def test_one_call_refuses_with_nothing_changed_and_the_update_is_the_books(name, rng):
    for why, params, grads in _cases(rng):
        opt = getattr(optimizer, name)(**RULES[name])
        if why == "shapes":  # the update itself raises: check the one call alone
            opt.update({k: v.copy() for k, v in params.items()},
                       {k: np.zeros_like(v) for k, v in params.items()})
            before = copy.deepcopy(params)
            assert not _optim_cython.update_all(opt, params, grads)
            for key in params:
                np.testing.assert_array_equal(params[key], before[key])
            continue
        book = copy.deepcopy(params)
        opt.update(params, {k: np.zeros_like(v) for k, v in params.items()})  # make the state
        book_opt = getattr(book_ch6, name)(**RULES[name])
        book_opt.update(book, {k: np.zeros_like(v) for k, v in book.items()})
        snapshot = {k: v.copy() for k, v in params.items()}
        if name == "Adam":
            opt.iter += 1  # (begin_update's work, which update_all does not do)
            opt.lr_t = opt.lr * np.sqrt(1.0 - opt.beta2 ** opt.iter) / (1.0 - opt.beta1 ** opt.iter)
        assert not _optim_cython.update_all(opt, params, grads), why
        for key in params:
            np.testing.assert_array_equal(params[key], snapshot[key], err_msg=why)
        if name == "Adam":
            opt.iter -= 1
        # (a gradient that is the parameter is the book's own parameter there)
        book_grads = {k: book[k] if g is params[k] else g for k, g in grads.items()}
        opt.update(params, grads)  # the per-parameter path: the book's numbers
        book_opt.update(book, book_grads)
        for key in params:
            np.testing.assert_array_equal(params[key], book[key], err_msg=f"{why}: {key}")


def test_one_call_refuses_float32_with_numpy_scalars_and_keeps_the_order(rng):
    params = params_of(rng, np.float32)
    opt = optimizer.SGD(lr=np.float64(0.1))  # the book's float32 lines become float64
    assert not _optim_cython.update_all(opt, params, {k: np.ones_like(v) for k, v in
                                                      params.items()})
    # parameters sharing memory across keys: updated one after another, as the book's loop
    buf, ref = np.arange(30.0), np.arange(30.0)
    opt = optimizer.SGD(lr=0.5)
    grads = {"a": np.ones(20), "b": np.full(20, 3.0)}
    assert _optim_cython.update_all(opt, {"a": buf[:20], "b": buf[10:]}, grads)
    book_ch6.SGD(lr=0.5).update({"a": ref[:20], "b": ref[10:]}, grads)
    np.testing.assert_array_equal(buf, ref)


def big_params_of(rng, dtype):
    # above _optim.THREADS_MIN elements, in pieces of several sizes (not multiples of 16)
    shapes = {"W1": (301, 117), "b1": (117,), "W2": (117, 101), "b2": (101,), "W3": (3, 5)}
    return {k: rng.standard_normal(s).astype(dtype) for k, s in shapes.items()}


@pytest.mark.parametrize("name", list(RULES))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_one_call_on_two_threads_gives_the_books_numbers(name, dtype, rng):
    from minidl import _optim

    params = big_params_of(rng, dtype)
    assert sum(v.size for v in params.values()) >= _optim.THREADS_MIN
    book = copy.deepcopy(params)
    one = copy.deepcopy(params)
    grads_list = [grads_of(rng, params) for _ in range(3)]
    opts = [getattr(optimizer, name)(**RULES[name]) for _ in range(2)]
    book_opt = getattr(book_ch6, name)(**RULES[name])
    for grads in grads_list:
        for opt, p, threads in ((opts[0], params, 2), (opts[1], one, 1)):
            opt._init_state(p)
            opt.begin_update()
            keys = list(p)
            states = [[getattr(opt, n)[k] for k in keys] for n in type(opt).state_names]
            states += [None] * (2 - len(states))
            assert _optim.update_all(_optim.RULES[name], [p[k] for k in keys],
                                     [grads[k] for k in keys], *states,
                                     *_optim_cython._scalars(opt, np.dtype(dtype)),
                                     num_threads=threads)
        book_opt.update(book, grads)
    for key in params:
        np.testing.assert_array_equal(params[key], book[key], err_msg=key)
        np.testing.assert_array_equal(one[key], book[key], err_msg=key)
    assert_same_states(opts[0], book_opt, params)


def test_two_threads_update_parameters_that_share_memory_in_order():
    from minidl import _optim

    # two parameters over one buffer: the second's update reads the first's result,
    # as in the book's loop, whatever the thread count asked for
    buf, ref = np.arange(80000.0), np.arange(80000.0)
    grads = {"a": np.ones(50000), "b": np.full(50000, 3.0)}
    assert _optim.update_all(_optim.RULES["SGD"], [buf[:50000], buf[30000:]],
                             [grads["a"], grads["b"]], None, None, 0.5, num_threads=2)
    book_ch6.SGD(lr=0.5).update({"a": ref[:50000], "b": ref[30000:]}, grads)
    np.testing.assert_array_equal(buf, ref)


def test_an_optimizer_measures_its_update_on_one_and_two_threads(rng, monkeypatch):
    from minidl import _optim, backend

    monkeypatch.setattr(backend, "STEP_THREADS", 2)
    monkeypatch.setattr(backend, "THREADS_FIXED", False)
    counts = []
    real = _optim.update_all
    monkeypatch.setattr(_optim, "update_all",
                        lambda *a, num_threads=1: counts.append(num_threads) or real(
                            *a, num_threads=num_threads))
    params = big_params_of(rng, np.float64)
    book = copy.deepcopy(params)
    opt, book_opt = optimizer.Adam(), book_ch6.Adam()
    for _ in range(6):
        grads = grads_of(rng, params)
        opt.update(params, grads)
        book_opt.update(book, grads)
    assert set(counts) == {1, 2}  # both tried (minidl.engine.threads)
    for key in params:
        np.testing.assert_array_equal(params[key], book[key], err_msg=key)
    counts.clear()
    small = params_of(rng, np.float64)
    optimizer.SGD().update(small, grads_of(rng, small))
    assert counts == [1]  # a small update: one thread, no choice made


def test_update_all_checks_its_arguments():
    from minidl import _optim

    with pytest.raises(ValueError, match="unknown rule"):
        _optim.update_all(9, [np.zeros(3)], [np.zeros(3)], None, None, 0.1)
    with pytest.raises(ValueError, match="different lengths"):
        _optim.update_all(0, [np.zeros(3)], [], None, None, 0.1)
    with pytest.raises(ValueError, match="different lengths"):
        _optim.update_all(1, [np.zeros(3)], [np.zeros(3)], None, None, 0.1, 0.9)
    assert _optim.update_all(0, [], [], None, None, 0.1)
    p = np.zeros(3)
    assert not _optim.update_all(0, [p], [[1.0, 2.0, 3.0]], None, None, 0.1)  # not an array
    assert not _optim.update_all(0, [np.zeros(3, np.int64)], [np.zeros(3, np.int64)], None,
                                 None, 0.1)
    ro = np.zeros(3)
    ro.flags.writeable = False
    assert not _optim.update_all(0, [ro], [np.ones(3)], None, None, 0.1)
    assert _optim.update_all(0, [p], [np.ones(3)], None, None, 0.5)
    np.testing.assert_array_equal(p, -0.5)
