"""A program written against the book's ``common/`` runs unchanged on minidl and
gives the same results up to floating-point rounding."""

import numpy as np
import pytest
from book_common import BOOK, two_layer_net_class

import minidl.gradient
import minidl.layers
from minidl.layers import *
from minidl.networks import TwoLayerNet

MINIDL = {"Affine": Affine, "Relu": Relu, "SoftmaxWithLoss": SoftmaxWithLoss,
          "numerical_gradient": minidl.gradient.numerical_gradient}


def test_star_import_gives_the_books_names():
    expected = {"MulLayer", "AddLayer", "Relu", "Sigmoid", "Affine", "SoftmaxWithLoss",
                "sigmoid", "relu", "softmax", "cross_entropy_error"}
    assert expected <= set(minidl.layers.__all__)
    for name in expected:
        assert name in globals()


def seed_loop(net, x_train, t_train, iters, lr=0.1, batch_size=20):
    """The assignment's loop: random batch, gradient, in-place SGD, batch loss."""
    losses = []
    for _ in range(iters):
        batch_mask = np.random.choice(x_train.shape[0], batch_size)
        x_batch, t_batch = x_train[batch_mask], t_train[batch_mask]
        grad = net.gradient(x_batch, t_batch)
        for key in ("W1", "b1", "W2", "b2"):
            net.params[key] -= lr * grad[key]
        losses.append(net.loss(x_batch, t_batch))
    return losses


def make_data(rng, one_hot):
    x = rng.random((200, 20)).astype(np.float32)
    x[x < 0.5] = 0  # sparse like MNIST
    t = (x[:, :5].sum(axis=1) * 3).astype(np.int64) % 4
    if one_hot:
        t = np.eye(4)[t]
    return x, t


@pytest.mark.parametrize("one_hot", [False, True])
def test_the_books_two_layer_net_trains_identically(backend, one_hot, rng):
    x, t = make_data(rng, one_hot)
    results = []
    for namespace in (BOOK, MINIDL):
        np.random.seed(1211)
        net = two_layer_net_class(namespace)(20, 10, 4, weight_init_std=0.5)
        losses = seed_loop(net, x, t, iters=300)
        results.append((losses, net.params, net.accuracy(x, t)))
    (book_losses, book_params, book_acc), (losses, params, acc) = results
    np.testing.assert_allclose(losses, book_losses, rtol=1e-9)
    for key in book_params:
        np.testing.assert_allclose(params[key], book_params[key], rtol=1e-8, atol=1e-10)
    assert acc == book_acc
    assert book_losses[-1] < book_losses[0]  # it did learn


def test_minidl_two_layer_net_matches_the_books(backend, rng):
    x, t = make_data(rng, one_hot=False)
    runs = []
    for build in (lambda: two_layer_net_class(BOOK)(20, 10, 4), lambda: TwoLayerNet(20, 10, 4)):
        np.random.seed(5)
        net = build()
        params = {key: value.copy() for key, value in net.params.items()}
        runs.append((params, seed_loop(net, x, t, 100)))
    (book_init, book_losses), (init, losses) = runs
    for key in book_init:
        np.testing.assert_array_equal(init[key], book_init[key])
    np.testing.assert_allclose(losses, book_losses, rtol=1e-9)


def test_numerical_gradient_idiom_matches_the_books(rng):
    x, t = make_data(rng, one_hot=False)
    x, t = x[:5], t[:5]
    grads = []
    for namespace in (BOOK, MINIDL):
        np.random.seed(3)
        net = two_layer_net_class(namespace)(20, 6, 4, weight_init_std=0.3)
        grads.append(net.numerical_gradient(x, t))
    for key in grads[0]:
        np.testing.assert_allclose(grads[1][key], grads[0][key], rtol=1e-7, atol=1e-9)
