"""minidl.train's fast path (the engine's StepRunner) against the plain Python loop it
replaces.

Same seed, same batches (np.random.choice from the global generator), so the
trajectories must agree up to rounding: parameters, batch losses and
accuracies after a few hundred steps on small random data, over networks,
activations, dtypes, label forms and input densities (nonzero lists, row scans,
dense BLAS inputs).
"""

import numpy as np
import pytest
from conftest import real_data_dir

import minidl
import minidl.optimizer
from minidl import _fused, _sparse, training
from minidl.backend import ops, use_simd
from minidl.engine.runner import StepRunner
from minidl.networks import MultiLayerNet, ThreeLayerNet, TwoLayerNet
from minidl.training import _BatchDrawer, train


def data(rng, n=300, k=40, density=0.25, dtype=np.float32, classes=5):
    x = rng.random((n, k))
    x[rng.random((n, k)) >= density] = 0
    return x.astype(dtype), rng.integers(0, classes, n)


def both(make, x, t, xt=None, tt=None, **kw):
    """(network, history) from the plain loop and from the fast one, on the same seed."""
    out = []
    for fast in (False, True):
        np.random.seed(7)
        net = make()
        hist = train(net, x, t, xt, tt, fast=fast, **kw)
        out.append((net, hist, np.random.get_state()[1].copy()))
    return out


def assert_same_run(plain, fast, tol):
    (net0, h0, rng0), (net1, h1, rng1) = plain, fast
    for key in net0.params:
        np.testing.assert_allclose(net1.params[key], net0.params[key], **tol, err_msg=key)
    np.testing.assert_allclose(h1.train_loss, h0.train_loss, **tol)
    assert h1.epochs == h0.epochs
    np.testing.assert_allclose(h1.train_acc, h0.train_acc, atol=0.01)
    np.testing.assert_allclose(h1.test_acc, h0.test_acc, atol=0.01)
    assert np.array_equal(rng0, rng1)  # the global generator ends in the same state


NETS = {
    "two-relu": lambda dt: TwoLayerNet(40, 20, 5, dtype=dt),
    "two-sigmoid": lambda dt: TwoLayerNet(40, 20, 5, activation="sigmoid", dtype=dt),
    "three": lambda dt: ThreeLayerNet(40, 30, 20, 5, dtype=dt),
    "multi": lambda dt: MultiLayerNet(40, [17, 9, 6], 5, weight_init_std="he", dtype=dt),
}


@pytest.mark.parametrize("net", sorted(NETS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("density", [0.05, 0.45, 0.9])  # lists, row scans (float64), BLAS
def test_fast_path_follows_the_plain_loop(net, dtype, density, rng):
    x, t = data(rng, density=density)
    runner, why = ops().step_runner(NETS[net](dtype), x, t)
    assert why is None
    assert runner.dense == (density == 0.9 or (density == 0.45 and dtype == np.float32))
    assert (runner.lists is not None) == (density == 0.05)
    runs = both(lambda: NETS[net](dtype), x, t, x[:80], t[:80], lr=0.1, batch_size=10,
                iters=300)
    tol = {"rtol": 2e-4, "atol": 2e-5} if dtype == np.float32 else {"rtol": 1e-9, "atol": 1e-11}
    assert_same_run(*runs, tol)


def test_float64_data_one_hot_labels_and_uneven_epochs(rng):
    x, t = data(rng, n=97, dtype=np.float64)
    onehot = np.eye(5)[t]
    # 97 / 7 iterations per epoch is not an integer: evaluations only where i % 13.857 == 0
    runs = both(lambda: TwoLayerNet(40, 20, 5), x, onehot, x, onehot, lr=0.05, batch_size=7,
                iters=200)
    assert_same_run(*runs, {"rtol": 1e-9, "atol": 1e-11})


def test_tensor_shaped_images(rng):
    x, t = data(rng, k=36)
    x = x.reshape(-1, 1, 6, 6)
    runs = both(lambda: TwoLayerNet(36, 10, 5), x, t, lr=0.1, batch_size=10, iters=100)
    assert_same_run(*runs, {"rtol": 1e-9, "atol": 1e-11})


def test_on_iteration_callbacks_that_draw_random_numbers_see_the_same_stream(rng):
    x, t = data(rng)
    seen = {False: [], True: []}
    for fast in (False, True):
        np.random.seed(1)
        net = TwoLayerNet(40, 10, 5)

        def on_iteration(i, loss, fast=fast):
            seen[fast].append(np.random.rand())  # interleaved with the batch draws

        train(net, x, t, lr=0.1, batch_size=10, iters=50, fast=fast, on_iteration=on_iteration)
    assert seen[False] == seen[True]


@pytest.mark.parametrize("iters,per_epoch", [(1, 3.0), (25, 6.0), (25, 13.857), (40, 1)])
def test_batch_drawer_gives_the_per_iteration_stream(iters, per_epoch):
    np.random.seed(5)
    expected = [np.random.choice(90, 4) for _ in range(iters)]
    np.random.seed(5)
    drawer = _BatchDrawer(90, 4, iters, per_epoch, ahead=True)
    got = [drawer.draw(i) for i in range(iters)]
    assert all(np.array_equal(a, b) for a, b in zip(expected, got))


def test_batches_are_not_drawn_past_an_evaluation(rng):
    # on_epoch may draw from the generator: the fast path must not have drawn ahead of it
    x, t = data(rng, n=100)
    states = {}
    for fast in (False, True):
        np.random.seed(2)
        net = TwoLayerNet(40, 10, 5)
        draws = []
        train(net, x, t, lr=0.1, batch_size=10, iters=35, fast=fast,
              on_epoch=lambda i, h, draws=draws: draws.append(np.random.rand()))
        states[fast] = (draws, net.params["W1"].copy())
    assert states[False][0] == states[True][0]
    np.testing.assert_allclose(states[True][1], states[False][1], rtol=1e-9, atol=1e-12)


# -- what the StepRunner does not take: the plain loop runs instead --------------------
class Custom(TwoLayerNet):
    def gradient(self, x, t):
        return super().gradient(x, t)


@pytest.mark.parametrize("case", ["custom", "soft_labels", "f64_data_f32_net", "numpy_backend",
                                  "numerical"])
def test_unsupported_cases_fall_back_to_the_plain_loop(case, rng):
    x, t = data(rng, n=60, k=12)
    labels = t
    make = lambda: TwoLayerNet(12, 6, 5)
    kw = {"lr": 0.1, "batch_size": 6, "iters": 12}
    if case == "custom":
        make = lambda: Custom(12, 6, 5)
    elif case == "soft_labels":
        labels = np.full((60, 5), 0.2)
    elif case == "f64_data_f32_net":
        x = x.astype(np.float64)
        make = lambda: TwoLayerNet(12, 6, 5, dtype=np.float32)
    elif case == "numerical":
        kw.update(grad="numerical", iters=2)
    before = minidl.get_backend()
    if case == "numpy_backend":
        minidl.set_backend("numpy")
    try:
        if case != "numerical":
            assert ops().step_runner(make(), x, labels)[0] is None
        (net0, h0, _), (net1, h1, _) = both(make, x, labels, **kw)
    finally:
        minidl.set_backend(before)
    for key in net0.params:
        assert np.array_equal(net0.params[key], net1.params[key])  # the very same code ran
    assert h0.train_loss == h1.train_loss


def test_step_runner_refuses_what_it_cannot_run(rng):
    x, t = data(rng, n=20, k=12)
    with pytest.raises(ValueError, match="width"):
        StepRunner(TwoLayerNet(13, 6, 5), x, t)
    with pytest.raises(ValueError, match="labels must be class indices in range"):
        StepRunner(TwoLayerNet(12, 6, 5), x, t + 5)
    with pytest.raises(ValueError, match="one-hot"):
        StepRunner(TwoLayerNet(12, 6, 5), x, np.full((20, 5), 0.2))
    tr = StepRunner(TwoLayerNet(12, 6, 5), x, t)
    with pytest.raises(ValueError, match="another dtype"):
        StepRunner(TwoLayerNet(12, 6, 5, dtype=np.float32), x.astype(np.float64), t)
    with pytest.raises(ValueError, match="labels"):
        tr.add_eval_set("bad", x, t.astype(np.float64))
    with pytest.raises(ValueError, match="NaN"):
        StepRunner(TwoLayerNet(12, 6, 5), np.where(x > 0.5, np.nan, x), t)


def test_trainer_step_is_one_sgd_step_of_the_network(rng):
    x, t = data(rng, n=50)
    np.random.seed(0)
    a = TwoLayerNet(40, 20, 5)
    np.random.seed(0)
    b = TwoLayerNet(40, 20, 5)
    rows = np.arange(0, 50, 3)
    loss = StepRunner(b, x, t, lr=0.2).step(rows)
    grads = a.gradient(x[rows], t[rows])
    for key in a.params:
        a.params[key] -= 0.2 * grads[key]
        np.testing.assert_allclose(b.params[key], a.params[key], rtol=1e-12, atol=1e-15)
    assert loss == pytest.approx(a.loss(x[rows], t[rows]), rel=1e-12)


def test_trainer_accuracy_equals_the_networks(rng):
    x, t = data(rng, n=300)
    net = TwoLayerNet(40, 20, 5, weight_init_std=0.5)
    tr = StepRunner(net, x, t)
    tr.add_eval_set("test", x[:77], t[:77])
    assert tr.accuracy("train") == net.accuracy(x, t)
    assert tr.accuracy("test") == net.accuracy(x[:77], t[:77])


def test_interrupt_keeps_the_history(rng):
    x, t = data(rng, n=50)

    def stop(i, loss):
        if i == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt) as info:
        train(TwoLayerNet(40, 10, 5), x, t, lr=0.1, batch_size=5, iters=50, on_iteration=stop)
    assert info.value.history.iterations == 6


def test_train_is_exported():
    assert minidl.train is training.train


@pytest.mark.skipif(real_data_dir() is None, reason="real MNIST not available")
def test_real_mnist_fast_path_follows_the_plain_loop(monkeypatch):
    monkeypatch.setenv("MINIDL_DATA_DIR", str(real_data_dir()))
    from minidl.datasets import load_mnist

    (x, t), (xt, tt) = load_mnist()
    x, t, xt, tt = x[:6000], t[:6000], xt[:1000], tt[:1000]
    runs = both(lambda: TwoLayerNet(784, 50, 10), x, t, xt, tt, lr=0.1, batch_size=100,
                iters=200)
    assert_same_run(*runs, {"rtol": 1e-8, "atol": 1e-10})


# -- the compiled whole step (_fused.SGDStep) ------------------------------------------
@pytest.mark.parametrize("level", ["baseline", "scalar"])
def test_fast_path_follows_the_plain_loop_on_every_instruction_set(level, rng):
    x, t = data(rng, density=0.05)
    use_simd(level)
    try:
        for dt, tol in ((np.float32, {"rtol": 2e-4, "atol": 2e-5}),
                        (np.float64, {"rtol": 1e-9, "atol": 1e-11})):
            runs = both(lambda dt=dt: NETS["multi"](dt), x, t, lr=0.1, batch_size=10,
                        iters=100)
            assert_same_run(*runs, tol)
    finally:
        use_simd("best")


def test_trainer_takes_batches_of_any_size_and_empty_data(rng):
    x, t = data(rng, n=60)
    x[:, :] = 0  # no nonzeros at all: the lists are empty
    np.random.seed(1)
    a, b = ThreeLayerNet(40, 7, 6, 5), None
    np.random.seed(1)
    b = ThreeLayerNet(40, 7, 6, 5)
    tr = StepRunner(b, x, t, lr=0.3)
    for rows in (np.arange(5), np.arange(60), np.array([7])):  # grows, then shrinks
        loss = tr.step(rows)
        grads = a.gradient(x[rows], t[rows])
        for key in a.params:
            a.params[key] -= 0.3 * grads[key]
        assert loss == pytest.approx(a.loss(x[rows], t[rows]), rel=1e-12)
    for key in a.params:
        np.testing.assert_allclose(b.params[key], a.params[key], rtol=1e-12, atol=1e-15)


def test_networks_deeper_than_the_compiled_step_take_the_plain_loop(rng):
    x, t = data(rng, n=50)
    deep = lambda: MultiLayerNet(40, [4] * _fused.MAX_LAYERS, 5, weight_init_std="he")
    runs = both(deep, x, t, lr=0.05, batch_size=10, iters=20)
    assert_same_run(*runs, {"rtol": 1e-9, "atol": 1e-11})


def test_sgd_step_refuses_what_would_read_out_of_bounds(rng):
    x, _ = data(rng, n=30, k=12)
    W = [np.zeros((12, 6)), np.zeros((6, 5))]
    b = [np.zeros(6), np.zeros(5)]
    step = _fused.SGDStep(W, b, x, _sparse.nonzero_lists(x), False, 8)
    rows, labels = np.arange(4, dtype=np.int64), np.zeros(4, dtype=np.int64)
    assert np.isfinite(step.step(rows, labels, 0.1))
    for bad_rows, bad_labels in ((rows + 27, labels), (rows - 1, labels), (rows, labels + 5),
                                 (rows, labels - 1)):
        with pytest.raises(ValueError, match="rows must be in"):
            step.step(bad_rows, bad_labels, 0.1)
    with pytest.raises(ValueError, match="rows and"):
        step.step(np.arange(9, dtype=np.int64), np.zeros(9, dtype=np.int64), 0.1)  # > batch
    with pytest.raises(ValueError, match="rows and"):
        step.step(rows, labels[:3], 0.1)
    with pytest.raises(ValueError, match="rows and"):
        step.step(rows[:0], labels[:0], 0.1)
    with pytest.raises(ValueError, match="chained shapes"):
        _fused.SGDStep([W[0], np.zeros((7, 5))], b, x, None, False, 8)
    with pytest.raises(ValueError, match="chained shapes"):
        _fused.SGDStep([W[0], W[1].astype(np.float32)], b, x, None, False, 8)
    with pytest.raises(ValueError, match="chained shapes"):
        _fused.SGDStep([np.asfortranarray(W[0]), W[1]], b, x, None, False, 8)
    with pytest.raises(ValueError, match="x must be"):
        _fused.SGDStep(W, b, x[:, :11], None, False, 8)
    with pytest.raises(ValueError, match="x must be"):
        _fused.SGDStep([w.astype(np.float32) for w in W], [c.astype(np.float32) for c in b],
                      x.astype(np.float64), None, False, 8)
    with pytest.raises(ValueError, match="lists must be"):
        _fused.SGDStep(W, b, x, _sparse.nonzero_lists(x[:20]), False, 8)
    with pytest.raises(ValueError, match="layers"):
        _fused.SGDStep(W, b[:1], x, None, False, 8)
    with pytest.raises(TypeError, match="float32 or float64"):
        _fused.SGDStep([w.astype(np.float16) for w in W], b, x, None, False, 8)


def test_sgd_step_gradient_refuses_what_would_write_out_of_bounds(rng):
    x, t = data(rng, n=30, k=12)
    W = [rng.standard_normal((12, 6)), rng.standard_normal((6, 5))]
    b = [np.zeros(6), np.zeros(5)]
    step = _fused.SGDStep(W, b, x[:0], None, False, 8)
    gW, gb = [np.empty_like(w) for w in W], [np.empty_like(c) for c in b]
    labels = t[:8].astype(np.int64)
    loss = step.gradient(x[:8], labels, gW, gb)
    np.random.seed(0)
    net = TwoLayerNet(12, 6, 5)
    for i in range(2):
        net.params[f"W{i + 1}"][...] = W[i]
    assert loss == pytest.approx(net.loss(x[:8], labels), rel=1e-12)
    with pytest.raises(ValueError, match="x must be"):
        step.gradient(x[:8].astype(np.float64), labels, gW, gb)  # not the dtype it was made for
    with pytest.raises(ValueError, match="x must be"):
        step.gradient(np.asfortranarray(x[:8]), labels, gW, gb)
    with pytest.raises(ValueError, match="rows and"):
        step.gradient(x[:9], t[:9].astype(np.int64), gW, gb)  # more than batch_size
    with pytest.raises(ValueError, match="labels in"):
        step.gradient(x[:8], labels + 5, gW, gb)
    with pytest.raises(ValueError, match="gradients must be"):
        step.gradient(x[:8], labels, [gW[0], gW[1].T.copy()], gb)
    with pytest.raises(ValueError, match="gradients must be"):
        step.gradient(x[:8], labels, gW, [gb[0].astype(np.float32), gb[1]])
    with pytest.raises(ValueError, match="one dW"):
        step.gradient(x[:8], labels, gW[:1], gb)


def test_sgd_step_checks_the_lists_it_indexes_by(rng):
    x, _ = data(rng, n=30, k=12)
    W, b = [np.zeros((12, 6)), np.zeros((6, 5))], [np.zeros(6), np.zeros(5)]
    li, lv, lp = _sparse.nonzero_lists(x)
    bad_col = li.copy()
    bad_col[3] = 12  # a column past W's rows
    long_row = np.concatenate([[0], np.full(30, 13)]).cumsum()  # 13 entries a row, K = 12
    for lists in ((bad_col, lv, lp), (li, lv, lp + 1), (li, lv.astype(np.float64), lp),
                  (np.zeros(long_row[-1], np.int32), np.zeros(long_row[-1], np.float32),
                   long_row)):
        with pytest.raises(ValueError, match="lists must be"):
            _fused.SGDStep(W, b, x, lists, False, 8)
        step = _fused.SGDStep(W, b, x, None, False, 8)
        with pytest.raises(ValueError, match="lists must be"):
            step.count_correct(x, np.zeros(30, np.int64), lists)


@pytest.mark.parametrize("k", [70, 6])  # wider and narrower than the pieces shared out
def test_threads_do_not_change_the_results(k, rng):
    x, t = data(rng, n=400, k=k, density=0.1 if k > 10 else 0.35)
    nets = []
    for threads in (1, 2, 3):
        np.random.seed(5)
        net = ThreeLayerNet(k, 40, 20, 5)
        tr = StepRunner(net, x, t, lr=0.1, num_threads=threads)
        np.random.seed(6)
        for _ in range(30):
            tr.step(np.random.choice(400, 100))
        nets.append((net, tr.accuracy("train")))
    for net, acc in nets[1:]:
        assert acc == nets[0][1]
        for key in net.params:  # each row of every product is computed the same way
            assert np.array_equal(net.params[key], nets[0][0].params[key]), key


@pytest.mark.parametrize("density", [0.25, 0.9])
def test_weight_decay_follows_the_plain_loop(density, rng):
    x, t = data(rng, n=80, k=40, density=density)
    make = lambda: MultiLayerNet(40, [20, 9], 5, weight_decay_lambda=0.1, weight_init_std="he")
    assert ops().step_runner(make(), x, t)[0] is not None
    runs = both(make, x, t, x, t, lr=0.1, batch_size=10, iters=60)
    assert_same_run(*runs, {"rtol": 1e-9, "atol": 1e-11})


class Recorder:
    """An optimizer of a student's own: the book's update interface, plain SGD."""

    def __init__(self, lr):
        self.lr, self.calls = lr, 0

    def update(self, params, grads):
        self.calls += 1
        for key in params:
            params[key] -= self.lr * grads[key]


@pytest.mark.parametrize("density", [0.25, 0.9])
def test_an_optimizer_object_follows_the_plain_loop_with_it(density, rng):
    x, t = data(rng, n=80, k=40, density=density)
    optimizers = []

    def run(fast):
        np.random.seed(3)
        net = ThreeLayerNet(40, 20, 9, 5, weight_init_std=0.3)
        optimizers.append(Recorder(0.2))
        hist = train(net, x, t, x, t, optimizer=optimizers[-1], batch_size=10, iters=40,
                     fast=fast)
        return net, hist, np.random.get_state()[1].copy()

    plain, fast = run(False), run(True)
    assert_same_run(plain, fast, {"rtol": 1e-9, "atol": 1e-11})
    assert optimizers[0].calls == optimizers[1].calls == 40
    np.random.seed(3)
    net = ThreeLayerNet(40, 20, 9, 5, weight_init_std=0.3)
    assert ops().step_runner(net, x, t, Recorder(0.2))[0] is not None


def test_a_callback_that_changes_the_network_switches_to_the_plain_loop(rng):
    x, t = data(rng, n=100, k=40)

    class Halve:
        def forward(self, z):
            return z * 0.5

        def backward(self, dout):
            return dout * 0.5

    def insert(i, history, net_box):
        if i == 20:  # after the third evaluation, a student's layer goes in
            net = net_box[0]
            items = list(net.layers.items())
            items.insert(1, ("Halve", Halve()))
            net.layers.clear()
            net.layers.update(items)

    runs = []
    for fast in (False, True):
        np.random.seed(8)
        box = [TwoLayerNet(40, 20, 5, weight_init_std=0.3)]
        hist = train(box[0], x, t, lr=0.1, batch_size=10, iters=60, fast=fast,
                     on_epoch=lambda i, h, box=box: insert(i, h, box))
        runs.append((box[0], hist, np.random.get_state()[1].copy()))
    assert_same_run(*runs, {"rtol": 1e-9, "atol": 1e-11})


@pytest.mark.parametrize("name", ["SGD", "momentum", "Nesterov", "AdaGrad", "RMSprop", "adam"])
@pytest.mark.parametrize("density", [0.25, 0.9])
def test_the_books_optimizers_by_name_follow_the_plain_loop(name, density, rng):
    x, t = data(rng, n=90, k=40, density=density)
    param = {"lr": 0.01} if name.lower() in ("adam", "rmsprop", "adagrad") else {"lr": 0.1}
    make = lambda: MultiLayerNet(40, [20, 10], 5)
    np.random.seed(2)
    assert ops().step_runner(make(), x, t, minidl.optimizer.make_optimizer(name, **param))[0]
    runs = both(make, x, t, x, t, optimizer=name, optimizer_param=param, batch_size=10,
                iters=50)
    assert_same_run(*runs, {"rtol": 1e-9, "atol": 1e-11})
    np.random.seed(7)
    untrained = make()
    assert not np.allclose(runs[1][0].params["W1"], untrained.params["W1"])  # it was updated


def test_train_lr_goes_to_the_named_optimizer_and_bad_arguments_are_refused(rng):
    x, t = data(rng, n=40, k=40)
    runs = both(lambda: TwoLayerNet(40, 10, 5), x, t, optimizer="momentum", lr=0.05,
                batch_size=10, iters=8)
    ref = both(lambda: TwoLayerNet(40, 10, 5), x, t, optimizer="momentum",
               optimizer_param={"lr": 0.05}, batch_size=10, iters=8)
    assert runs[1][1].train_loss == ref[1][1].train_loss
    from minidl.optimizer import Adam

    with pytest.raises(ValueError, match="unknown optimizer"):
        train(TwoLayerNet(40, 10, 5), x, t, optimizer="adamw", iters=1)
    with pytest.raises(ValueError, match="twice"):
        train(TwoLayerNet(40, 10, 5), x, t, optimizer="sgd", lr=0.1,
              optimizer_param={"lr": 0.2}, iters=1)
    with pytest.raises(ValueError, match="own lr"):
        train(TwoLayerNet(40, 10, 5), x, t, optimizer=Adam(), lr=0.1, iters=1)
    with pytest.raises(ValueError, match="optimizer_param without"):
        train(TwoLayerNet(40, 10, 5), x, t, optimizer_param={"lr": 0.1}, iters=1)
    for bad in (-1.0, float("nan"), "0.1", True):
        with pytest.raises(ValueError, match="lr"):
            train(TwoLayerNet(40, 10, 5), x, t, lr=bad, iters=1)
    with pytest.raises(ValueError, match="lr"):
        train(TwoLayerNet(40, 10, 5), x, t, optimizer="adam", lr=-1, iters=1)


@pytest.mark.parametrize("network", [None, "TwoLayerNet", object()])
def test_train_refuses_what_is_not_a_network(network, rng):
    x, t = data(rng, n=20, k=8)
    with pytest.raises(TypeError, match="network must be a network with params, gradient"):
        train(network, x, t, iters=1)
