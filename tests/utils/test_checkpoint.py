"""tensora.utils.checkpoint (tensora/utils/checkpoint.py).

The reference is the same function run without checkpointing: outputs and every
gradient (arguments, weights captured by closure, non-leaf arguments, dropout
inside, attention dropout inside, nested checkpoints) must be equal. Saved-activation
memory of a 16-layer MLP is measured with and without checkpointing (saved_bytes:
the arrays the graph keeps for backward) and printed.
"""

import numpy as np
import pytest

import tensora
import tensora.utils
from tensora.utils import checkpoint, checkpoint_sequential, saved_bytes


def leaf(*shape, seed=0):
    return tensora.tensor(np.random.default_rng(seed).standard_normal(shape), requires_grad=True)


def relu(h):
    return h * (h > 0)


def grads_of(run, *tensors):
    """Run `run()` (returning a scalar), backprop, return the output and copies of the grads."""
    for t in tensors:
        t.grad = None
    out = run()
    out.backward()
    return [out.item()] + [t.grad.numpy().copy() for t in tensors]


def assert_same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, rtol=1e-12, atol=1e-12)


def test_argument_and_closure_gradients_equal_plain_run():
    x, w1, b = leaf(5, 4, seed=1), leaf(4, 6, seed=2), leaf(6, seed=3)
    w2 = leaf(6, 3, seed=4)

    def block(h, w):  # w1 passed as an argument, b and w2 captured by the closure
        return relu(h @ w + b) @ w2

    plain = grads_of(lambda: block(x, w1).exp().sum(), x, w1, b, w2)
    ckpt = grads_of(lambda: checkpoint(block, x, w1).exp().sum(), x, w1, b, w2)
    assert_same(plain, ckpt)
    assert tensora.utils.checkpoint is checkpoint


def test_first_layer_input_without_grad_still_trains_captured_weights():
    x = tensora.randn(5, 4)  # a data batch: no grad
    w = leaf(4, 4, seed=5)
    plain = grads_of(lambda: (x @ w).exp().sum(), w)
    ckpt = grads_of(lambda: checkpoint(lambda h: (h @ w).exp(), x).sum(), w)
    assert_same(plain, ckpt)
    # torch's reentrant rule: recorded only if an argument requires grad, so w would get nothing.
    assert not checkpoint(lambda h: (h @ w).exp(), x, use_reentrant=True).requires_grad


def test_non_leaf_argument_and_argument_used_twice():
    a, w = leaf(3, 4, seed=6), leaf(4, 4, seed=7)

    def f(p, q):
        return (p @ w) * q

    plain = grads_of(lambda: f(a * 2, a * 2).sum(), a, w)
    h = a * 2
    ckpt = grads_of(lambda: checkpoint(f, h, h).sum(), a, w)
    assert_same(plain, ckpt)


def test_dropout_inside_replays_the_same_masks():
    x, w = leaf(8, 16, seed=8), leaf(16, 16, seed=9)

    def block(h):
        return tensora.dropout(relu(h @ w), p=0.5) @ w

    tensora.manual_seed(0)
    plain = grads_of(lambda: block(x).pow(2).sum(), x, w)
    tensora.manual_seed(0)
    out = checkpoint(block, x)
    after_forward = tensora.get_rng_state()
    for t in (x, w):
        t.grad = None
    out.pow(2).sum().backward()
    assert_same(plain, [out.pow(2).sum().item(), x.grad.numpy(), w.grad.numpy()])
    assert tensora.get_rng_state() == after_forward  # the replay put the stream back

    tensora.manual_seed(0)
    no_replay = grads_of(lambda: checkpoint(block, x, preserve_rng_state=False).pow(2).sum(), x, w)
    assert not np.allclose(no_replay[2], plain[2])  # new masks in the recomputation: wrong gradients


def test_attention_dropout_inside_checkpoint():
    q, k, v = leaf(1, 2, 6, 4, seed=10), leaf(1, 2, 7, 4, seed=11), leaf(1, 2, 7, 4, seed=12)

    def attn(a, b, c):
        return tensora.scaled_dot_product_attention(a, b, c, dropout_p=0.3)

    tensora.manual_seed(1)
    plain = grads_of(lambda: attn(q, k, v).pow(2).sum(), q, k, v)
    tensora.manual_seed(1)
    ckpt = grads_of(lambda: checkpoint(attn, q, k, v).pow(2).sum(), q, k, v)
    assert_same(plain, ckpt)


def test_tuple_outputs_kwargs_and_non_tensor_arguments():
    x, w = leaf(3, 4, seed=13), leaf(4, 4, seed=14)

    def f(h, n, scale=1.0):
        y = (h @ w) * scale
        return y * n, y.exp().sum(), "tag"

    def loss(out):
        return out[0].sum() + out[1]

    plain = grads_of(lambda: loss(f(x, 3, scale=0.5)), x, w)
    ckpt = grads_of(lambda: loss(checkpoint(f, x, 3, scale=0.5)), x, w)
    assert_same(plain, ckpt)
    assert checkpoint(f, x, 3)[2] == "tag"
    with pytest.raises(ValueError, match="use_reentrant=True takes no keyword arguments.*scale"):
        checkpoint(f, x, 3, scale=0.5, use_reentrant=True)


def test_output_that_is_an_input_and_autograd_grad():
    x, w = leaf(3, 3, seed=15), leaf(3, 3, seed=16)

    def f(h):
        return h, h @ w

    a, b = checkpoint(f, x)
    gx, = tensora.autograd.grad([(a * b).sum()], [x])
    x2 = x.detach().requires_grad_(True)
    a2, b2 = f(x2)
    ref, = tensora.autograd.grad([(a2 * b2).sum()], [x2])
    np.testing.assert_allclose(gx.numpy(), ref.numpy(), rtol=1e-12)


def test_nested_checkpoints():
    x, w = leaf(4, 4, seed=17), leaf(4, 4, seed=18)

    def inner(h):
        return (h @ w).exp()

    def outer(h):
        return checkpoint(inner, h * 0.5) @ w

    plain = grads_of(lambda: ((x * 0.5 @ w).exp() @ w).sum(), x, w)
    ckpt = grads_of(lambda: checkpoint(outer, x).sum(), x, w)
    assert_same(plain, ckpt)


def test_checkpoint_sequential_matches_plain_chain():
    ws = [leaf(8, 8, seed=20 + i) for i in range(5)]
    layers = [lambda h, w=w: relu(h @ w) for w in ws]
    x = leaf(3, 8, seed=30)

    def plain_run():
        h = x
        for f in layers:
            h = f(h)
        return h.sum()

    plain = grads_of(plain_run, x, *ws)
    for segments in (1, 2, 5):
        assert_same(plain, grads_of(lambda: checkpoint_sequential(layers, segments, x).sum(), x, *ws))
    with pytest.raises(ValueError, match=r"segments must be in \[1, 5\], got 6"):
        checkpoint_sequential(layers, 6, x)


def test_errors_for_create_graph_and_modified_inputs():
    x, w = leaf(3, 3, seed=31), leaf(3, 3, seed=32)
    out = checkpoint(lambda h: (h @ w).exp(), x).sum()
    with pytest.raises(tensora.AutogradError, match="create_graph=True"):
        tensora.autograd.grad([out], [x], create_graph=True)
    h = x * 1.0
    out = checkpoint(lambda t: (t @ w).exp(), h).sum()
    with tensora.no_grad():
        h.add_(1.0)
    with pytest.raises(tensora.AutogradError, match="modified by an in-place operation"):
        out.backward()


def test_captured_non_leaf_tensor():
    p, x = leaf(3, 3, seed=34), leaf(2, 3, seed=35)
    plain = grads_of(lambda: (x @ (p * 2)).exp().sum(), p, x)
    w = p * 2  # read from outside and used only inside: its history is walked by the inner backward
    assert_same(plain, grads_of(lambda: checkpoint(lambda h: (h @ w).exp(), x).sum(), p, x))
    w = p.exp()  # also used outside: the outer backward walks the same history again
    loss = checkpoint(lambda h: (h @ w).exp(), x).sum() + w.sum()
    with pytest.raises(tensora.AutogradError, match="backward through the graph a second time"):
        loss.backward()

    def as_argument():  # the fix: pass it in, so the outer graph carries its gradient
        v = p.exp()
        return checkpoint(lambda t, u: (t @ u).exp(), x, v).sum() + v.sum()

    assert_same(grads_of(lambda: (x @ p.exp()).exp().sum() + p.exp().sum(), p, x), grads_of(as_argument, p, x))


def test_no_graph_when_grad_is_disabled():
    w = leaf(3, 3, seed=33)
    with tensora.no_grad():
        out = checkpoint(lambda h: h @ w, tensora.randn(2, 3))
    assert not out.requires_grad


def mlp_saved_bytes(n_layers, rows, width, use_checkpoint):
    ws = [tensora.randn(width, width, requires_grad=True) * (1 / width ** 0.5) for _ in range(n_layers)]
    ws = [w.detach().requires_grad_(True) for w in ws]
    h = tensora.randn(rows, width, requires_grad=True)

    def layer(t, w):
        return relu(t @ w)

    for w in ws:
        h = checkpoint(layer, h, w) if use_checkpoint else layer(h, w)
    loss = h.sum()
    size = saved_bytes(loss)
    loss.backward()
    return size, [w.grad.numpy().copy() for w in ws]


def test_saved_activation_memory_of_a_16_layer_mlp(capsys):
    rows, width = 512, 128
    tensora.manual_seed(0)
    plain, plain_grads = mlp_saved_bytes(16, rows, width, False)
    tensora.manual_seed(0)
    ckpt, ckpt_grads = mlp_saved_bytes(16, rows, width, True)
    for a, b in zip(plain_grads, ckpt_grads):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    act = rows * width * 4
    with capsys.disabled():
        print(f"\n16-layer MLP, ({rows}, {width}) float32 activations ({act / 2**20:.2f} MiB each): saved for "
              f"backward {plain / 2**20:.2f} MiB plain, {ckpt / 2**20:.2f} MiB checkpointed "
              f"({plain / ckpt:.1f}x less)")
    # Plain keeps per layer: the input, the weight and the (float) relu mask (h * mask saves only the mask, as
    # torch's mul does: h itself is not needed for the gradient); checkpointed: the input and weight.
    assert ckpt <= 16 * (act + width * width * 4) + act
    assert plain == 16 * (2 * act + width * width * 4)
    assert plain / ckpt >= 1.8
