"""minidl.trainer.Trainer against the book's common/trainer.py (transcribed in bench/book_ch6.py)."""

import re

import numpy as np
import pytest
from book_common import book_ch6

from minidl.networks import MultiLayerNet, MultiLayerNetExtend
from minidl.optimizer import Adam
from minidl.trainer import Trainer

NUMBER = re.compile(r"-?\d+\.\d*(?:e-?\d+)?|-?\d+")


def data(rng, n_train=125, n_test=40, width=20, classes=4, one_hot=False):
    x = rng.random((n_train + n_test, width))
    x[x < 0.75] = 0.0  # sparse, as MNIST: what tempts minidl's compiled shortcuts
    t = rng.integers(0, classes, n_train + n_test)
    if one_hot:
        t = np.eye(classes)[t]
    return x[:n_train], t[:n_train], x[n_train:], t[n_train:]


def assert_same_prints(ours, book):
    """The book's lines with the same numbers (up to the last digits of rounding)."""
    ours, book = ours.splitlines(), book.splitlines()
    assert len(ours) == len(book)
    for a, b in zip(ours, book):
        assert NUMBER.sub("#", a) == NUMBER.sub("#", b)
        np.testing.assert_allclose([float(v) for v in NUMBER.findall(a)],
                                   [float(v) for v in NUMBER.findall(b)], rtol=1e-9)


CASES = [
    ("MultiLayerNet", {}, "SGD", {"lr": 0.1}, None),
    ("MultiLayerNet", {"weight_decay_lambda": 0.01}, "momentum", {"lr": 0.05}, 50),
    ("MultiLayerNet", {"activation": "sigmoid", "weight_init_std": "xavier"}, "AdaGrad", {}, None),
    ("MultiLayerNetExtend", {"use_dropout": True, "dropout_ration": 0.2}, "sgd", {"lr": 0.1},
     None),
    ("MultiLayerNetExtend", {"use_batchnorm": True}, "Adam", {"lr": 0.01}, 30),
    ("MultiLayerNetExtend", {"use_batchnorm": True, "use_dropout": True}, "rmsprop", {}, None),
    ("MultiLayerNet", {}, "Nesterov", {"lr": 0.01, "momentum": 0.8}, None),
]


@pytest.mark.parametrize(("cls", "net_kwargs", "opt", "opt_param", "sample"), CASES)
def test_trainer_is_the_books(cls, net_kwargs, opt, opt_param, sample, capsys, rng):
    x_train, t_train, x_test, t_test = data(rng, one_hot=cls == "MultiLayerNetExtend")
    runs = {}
    for name, module in (("ours", __import__("minidl.networks", fromlist=["x"])),
                         ("book", book_ch6)):
        np.random.seed(42)
        net = getattr(module, cls)(20, [12, 8], 4, **net_kwargs)
        trainer_cls = Trainer if name == "ours" else book_ch6.Trainer
        trainer = trainer_cls(net, x_train, t_train, x_test, t_test, epochs=3,
                              mini_batch_size=25, optimizer=opt, optimizer_param=opt_param,
                              evaluate_sample_num_per_epoch=sample, verbose=True)
        trainer.train()
        runs[name] = (trainer, net, capsys.readouterr().out)
    (ours, ours_net, ours_out), (book, book_net, book_out) = runs["ours"], runs["book"]
    assert ours.iter_per_epoch == book.iter_per_epoch == 5
    assert ours.max_iter == book.max_iter == 15
    assert ours.current_iter == 15 and ours.current_epoch == book.current_epoch == 3
    np.testing.assert_allclose(ours.train_loss_list, book.train_loss_list, rtol=1e-9)
    assert ours.train_acc_list == book.train_acc_list
    assert ours.test_acc_list == book.test_acc_list
    for key in book_net.params:
        # (atol: biases in front of BatchNorm have gradient 0 up to rounding, which
        # RMSprop's division by sqrt(h) + 1e-7 turns into steps of 1e-12)
        np.testing.assert_allclose(ours_net.params[key], book_net.params[key], rtol=1e-9,
                                   atol=1e-10)
    assert_same_prints(ours_out, book_out)
    assert "=============== Final Test Accuracy ===============" in ours_out
    assert type(ours.optimizer).__name__.lower() == opt.lower()


def test_epochs_of_a_fractional_length_are_evaluated_as_the_books(rng):
    # 130 / 25 = 5.2 steps an epoch: `current_iter % 5.2 == 0` holds at step 0 only, so the
    # book evaluates once; so does minidl (the book's answer, quirks included)
    x_train, t_train, x_test, t_test = data(rng, n_train=130)
    lists = []
    for trainer_cls, net_cls in ((Trainer, MultiLayerNet), (book_ch6.Trainer,
                                                           book_ch6.MultiLayerNet)):
        np.random.seed(1)
        trainer = trainer_cls(net_cls(20, [6], 4), x_train, t_train, x_test, t_test, epochs=3,
                              mini_batch_size=25, verbose=False)
        trainer.train()
        lists.append((trainer.max_iter, trainer.current_epoch, trainer.test_acc_list))
    assert lists[0] == lists[1] and lists[0][:2] == (15, 1)


def test_trainer_defaults_and_attributes(rng):
    x_train, t_train, x_test, t_test = data(rng)
    net = MultiLayerNet(20, [5], 4)
    trainer = Trainer(net, x_train, t_train, x_test, t_test, verbose=False)
    assert (trainer.epochs, trainer.batch_size, trainer.evaluate_sample_num_per_epoch) == (
        20, 100, None)
    assert type(trainer.optimizer).__name__ == "SGD" and trainer.optimizer.lr == 0.01
    assert trainer.train_size == 125 and trainer.iter_per_epoch == 1.25
    assert trainer.max_iter == 25
    assert (trainer.train_loss_list, trainer.train_acc_list, trainer.test_acc_list) == ([], [], [])
    trainer.train_step()
    assert len(trainer.train_loss_list) == 1 and len(trainer.test_acc_list) == 1


def test_trainer_takes_an_optimizer_object_and_stays_quiet(capsys, rng):
    x_train, t_train, x_test, t_test = data(rng)
    opt = Adam(lr=0.01)
    trainer = Trainer(MultiLayerNetExtend(20, [6], 4, use_batchnorm=True), x_train, t_train,
                      x_test, t_test, epochs=1, optimizer=opt, optimizer_param={},
                      verbose=False)
    assert trainer.optimizer is opt
    acc = trainer.train()
    assert capsys.readouterr().out == ""
    assert opt.iter == 1 and 0 <= acc <= 1


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"optimizer": "adamw"}, ValueError, "unknown optimizer 'adamw'; choose one of sgd"),
    ({"optimizer_param": {"lr": -1}}, ValueError, "SGD: lr must be in"),
    ({"optimizer_param": [0.1]}, TypeError, "optimizer_param must be a dict"),
    ({"mini_batch_size": 0}, ValueError, "mini_batch_size must be >= 1"),
    ({"mini_batch_size": 2.5}, TypeError, "mini_batch_size must be a whole number"),
    ({"epochs": -1}, ValueError, "epochs must be a finite number >= 0"),
    ({"epochs": float("nan")}, ValueError, "epochs must be a finite number"),
    ({"evaluate_sample_num_per_epoch": 0}, ValueError, "evaluate_sample_num_per_epoch must be"),
])
def test_trainer_bad_arguments(kwargs, error, match, rng):
    x_train, t_train, x_test, t_test = data(rng)
    with pytest.raises(error, match=match):
        Trainer(MultiLayerNet(20, [5], 4), x_train, t_train, x_test, t_test, **kwargs)


def test_trainer_bad_data(rng):
    x_train, t_train, x_test, t_test = data(rng)
    net = MultiLayerNet(20, [5], 4)
    with pytest.raises(ValueError, match="125 training images and 124 labels"):
        Trainer(net, x_train, t_train[:-1], x_test, t_test)
    with pytest.raises(TypeError, match="the test images must be a NumPy array, got list"):
        Trainer(net, x_train, t_train, x_test.tolist(), t_test)
    with pytest.raises(TypeError, match="no gradient"):
        Trainer(object(), x_train, t_train, x_test, t_test)
