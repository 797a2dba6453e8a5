# coding: utf-8
# ruff: noqa  (the book's style on purpose: its imports, its dict loops)
# A small program in the style of the book's chapter 5 and 6 scripts (their imports,
# their loops and calls), on synthetic data so that it needs no dataset. The tests run it
# on a transcription of the book's common/ and on minidl (python -m minidl.book) and
# compare what it prints.
import sys, os
sys.path.append(os.pardir)  # the book's line: the parent folder holds common/
import numpy as np
from collections import OrderedDict
from common.multi_layer_net import MultiLayerNet
from common.multi_layer_net_extend import MultiLayerNetExtend
from common.optimizer import *
from common.trainer import Trainer
from common.util import smooth_curve, shuffle_dataset
from common.layers import *
from common.gradient import numerical_gradient
from common.functions import softmax, cross_entropy_error


def show(*values):
    print(" ".join(repr(float(v)) for v in values))


np.random.seed(1234)
x_train = np.random.rand(400, 30)
x_train[x_train < 0.7] = 0  # sparse, like MNIST's pixels
t_train = np.random.randint(0, 5, 400)
x_test = np.random.rand(100, 30)
x_test[x_test < 0.7] = 0
t_test = np.random.randint(0, 5, 100)
print("networks from", MultiLayerNet.__module__)

# optimizer_compare_mnist.py (np comes from `from common.optimizer import *`)
optimizers = OrderedDict()
optimizers['SGD'] = SGD()
optimizers['Momentum'] = Momentum()
optimizers['Nesterov'] = Nesterov(lr=0.05)
optimizers['AdaGrad'] = AdaGrad()
optimizers['RMSprop'] = RMSprop()
optimizers['Adam'] = Adam()
networks = {}
train_loss = {}
for key in optimizers.keys():
    networks[key] = MultiLayerNet(input_size=30, hidden_size_list=[20, 20, 20], output_size=5)
    train_loss[key] = []
for i in range(40):
    batch_mask = np.random.choice(400, 32)
    x_batch = x_train[batch_mask]
    t_batch = t_train[batch_mask]
    for key in optimizers.keys():
        grads = networks[key].gradient(x_batch, t_batch)
        optimizers[key].update(networks[key].params, grads)
        loss = networks[key].loss(x_batch, t_batch)
        train_loss[key].append(loss)
    if i % 20 == 0:
        print("===========" + "iteration:" + str(i) + "===========")
        for key in optimizers.keys():
            show(networks[key].loss(x_batch, t_batch))
for key in optimizers.keys():
    show(*smooth_curve(train_loss[key])[-3:])

# weight_init_compare.py
optimizer = SGD(lr=0.01)
for weight_type in (0.01, 'sigmoid', 'relu'):
    network = MultiLayerNet(input_size=30, hidden_size_list=[20, 20], output_size=5,
                            weight_init_std=weight_type)
    for i in range(10):
        batch_mask = np.random.choice(400, 32)
        grads = network.gradient(x_train[batch_mask], t_train[batch_mask])
        optimizer.update(network.params, grads)
    show(network.loss(x_train[batch_mask], t_train[batch_mask]))

# batch_norm_test.py
for w in np.logspace(0, -2, num=3):
    bn_network = MultiLayerNetExtend(input_size=30, hidden_size_list=[20, 20, 20], output_size=5,
                                     weight_init_std=w, use_batchnorm=True)
    network = MultiLayerNetExtend(input_size=30, hidden_size_list=[20, 20, 20], output_size=5,
                                  weight_init_std=w)
    optimizer = SGD(lr=0.01)
    for i in range(20):
        batch_mask = np.random.choice(400, 50)
        for _network in (bn_network, network):
            grads = _network.gradient(x_train[batch_mask], t_train[batch_mask])
            optimizer.update(_network.params, grads)
        if i % 8 == 0:
            show(network.accuracy(x_train, t_train), bn_network.accuracy(x_train, t_train))

# batch_norm_gradient_check.py (a batch of one, one-hot labels)
t_onehot = np.eye(5)[t_train]
network = MultiLayerNetExtend(input_size=30, hidden_size_list=[6, 6], output_size=5,
                              use_batchnorm=True)
grad_backprop = network.gradient(x_train[:1], t_onehot[:1])
grad_numerical = network.numerical_gradient(x_train[:1], t_onehot[:1])
for key in grad_numerical.keys():
    diff = np.average(np.abs(grad_backprop[key] - grad_numerical[key]))
    print(key + ": " + str(diff < 1e-7))

# overfit_weight_decay.py and overfit_dropout.py, with the book's Trainer
network = MultiLayerNet(input_size=30, hidden_size_list=[20, 20], output_size=5,
                        weight_decay_lambda=0.1)
trainer = Trainer(network, x_train[:100], t_train[:100], x_test, t_test, epochs=4,
                  mini_batch_size=25, optimizer='sgd', optimizer_param={'lr': 0.05},
                  verbose=False)
trainer.train()
show(*trainer.train_acc_list)
show(*trainer.test_acc_list)
network = MultiLayerNetExtend(input_size=30, hidden_size_list=[20, 20], output_size=5,
                              use_dropout=True, dropout_ration=0.2)
trainer = Trainer(network, x_train[:100], t_train[:100], x_test, t_test, epochs=3,
                  mini_batch_size=20, optimizer='Adam', optimizer_param={'lr': 0.01},
                  evaluate_sample_num_per_epoch=50, verbose=True)
trainer.train()

# hyperparameter_optimization.py
x, t = shuffle_dataset(x_train[:200], t_train[:200])
x_val, t_val, x, t = x[:40], t[:40], x[40:], t[40:]
for _ in range(3):
    weight_decay = 10 ** np.random.uniform(-8, -4)
    lr = 10 ** np.random.uniform(-3, -1)
    network = MultiLayerNet(input_size=30, hidden_size_list=[10, 10], output_size=5,
                            weight_decay_lambda=weight_decay)
    trainer = Trainer(network, x, t, x_val, t_val, epochs=3, mini_batch_size=40,
                      optimizer='sgd', optimizer_param={'lr': lr}, verbose=False)
    trainer.train()
    show(trainer.test_acc_list[-1], lr, weight_decay)

# ch05/two_layer_net.py's layers, by hand
W, b = 0.01 * np.random.randn(30, 5), np.zeros(5)
layers = OrderedDict()
layers['Affine1'] = Affine(W, b)
layers['Relu1'] = Relu()
last = SoftmaxWithLoss()
y = x_train[:8]
for layer in layers.values():
    y = layer.forward(y)
show(last.forward(y, t_train[:8]), cross_entropy_error(softmax(y), t_train[:8]))
f = lambda w: last.forward(layers['Relu1'].forward(layers['Affine1'].forward(x_train[:8])),
                           t_train[:8])
show(*numerical_gradient(f, b))
