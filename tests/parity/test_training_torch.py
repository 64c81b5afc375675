"""Training parity with PyTorch: same initial weights, same batches -> the same loss trajectory.

Each case builds a tensora model, copies its state_dict into the torch twin, and trains both
for 100 steps on identical batches with a hand-written loop. The losses must agree within
1e-5 relative in float64 and 1e-3 in float32 at every step (issue [C]), and so must the
final weights. Also checked: tensora.train.fit against the same loop in torch, and a tiny
causal transformer LM (the char_transformer example's architecture) trained with AdamW.
"""

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

import tensora
from tensora.data import DataLoader, TensorDataset
from tensora.train import fit

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch

STEPS, BATCH, CLASSES = 100, 32, 10
RTOL = {"float64": 1e-5, "float32": 1e-3}


@pytest.fixture(autouse=True)
def _single_threaded():
    """Tiny models gain nothing from threads, and while other processes keep the cores busy the
    thread pools (NumPy's OpenBLAS, torch's own) spin: these tests then ran 10-25x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(limits=1, user_api="blas"):
        yield
    torch.set_num_threads(threads)


def _mlp(lib):
    return lib.nn.Sequential(lib.nn.Linear(64, 32), lib.nn.ReLU(), lib.nn.Linear(32, CLASSES))


def _cnn(lib):
    return lib.nn.Sequential(
        lib.nn.Conv2d(1, 8, 3, padding=1), lib.nn.ReLU(), lib.nn.MaxPool2d(2),  # (B, 8, 4, 4)
        lib.nn.Conv2d(8, 16, 3, padding=1), lib.nn.ReLU(), lib.nn.MaxPool2d(2),  # (B, 16, 2, 2)
        lib.nn.Flatten(), lib.nn.Linear(64, CLASSES))


MODELS = {"mlp": (_mlp, (64,)), "cnn": (_cnn, (1, 8, 8))}


def _sgd(lib, params):
    return lib.optim.SGD(params, lr=0.05, momentum=0.9), None


def _adamw_cosine(lib, params):
    opt = lib.optim.AdamW(params, lr=1e-2, weight_decay=0.05)
    return opt, lib.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=STEPS, eta_min=1e-4)


OPTIMIZERS = {"sgd_momentum": _sgd, "adamw_cosine": _adamw_cosine}


def _data(sample_shape):
    """A learnable synthetic task and 100 batches of indices: the label is the argmax of a fixed random
    linear map of the sample's 16 2x2-block means, which both a dense and a convolutional model pick up."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((512, *sample_shape))
    blocks = x.reshape(512, 4, 2, 4, 2).mean(axis=(2, 4)).reshape(512, 16)
    y = (blocks @ rng.standard_normal((16, CLASSES))).argmax(1)
    batches = [rng.choice(512, BATCH, replace=False) for _ in range(STEPS)]
    return x, y, batches


def _train(lib, model, opt, sched, x, y, batches):
    """The loop a user writes, identical for both libraries."""
    losses = []
    for idx in batches:
        loss = lib.nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()
        losses.append(loss.item())
    return np.array(losses)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("opt_name", OPTIMIZERS)
@pytest.mark.parametrize("model_name", MODELS)
def test_loss_trajectory_matches_torch(model_name, opt_name, dtype):
    build, sample_shape = MODELS[model_name]
    x_np, y_np, batches = _data(sample_shape)

    tensora.manual_seed(0)
    t_model = build(tensora).to(getattr(tensora, dtype))
    ref_model = build(torch).to(getattr(torch, dtype))
    ref_model.load_state_dict({k: torch.from_numpy(v.numpy().copy()) for k, v in t_model.state_dict().items()})

    t_opt, t_sched = OPTIMIZERS[opt_name](tensora, t_model.parameters())
    ref_opt, ref_sched = OPTIMIZERS[opt_name](torch, ref_model.parameters())
    x, y = tensora.tensor(x_np.astype(dtype)), tensora.tensor(y_np)
    ours = _train(tensora, t_model, t_opt, t_sched, x, y, batches)
    theirs = _train(torch, ref_model, ref_opt, ref_sched, torch.from_numpy(x_np.astype(dtype)),
                    torch.from_numpy(y_np), [torch.from_numpy(b) for b in batches])

    assert theirs[-10:].mean() < 0.7 * theirs[:10].mean()  # the task is learnt: the trajectory is not flat
    np.testing.assert_allclose(ours, theirs, rtol=RTOL[dtype], atol=0)
    ref_state = ref_model.state_dict()
    for name, value in t_model.state_dict().items():
        np.testing.assert_allclose(value.numpy(), ref_state[name].numpy(), rtol=RTOL[dtype] * 10,
                                   atol=RTOL[dtype] * 1e-1, err_msg=name)


def test_fit_matches_a_torch_loop():
    """tensora.train.fit over a DataLoader (3 epochs, per-epoch StepLR) against the same loop in torch:
    the epoch means of loss and accuracy in fit's history equal torch's, batch-size weighted."""
    x_np, y_np, _ = _data((64,))
    x_np, y_np = x_np[:200], y_np[:200]  # batches of 32: six full ones and a last one of 8
    tensora.manual_seed(0)
    model = _mlp(tensora).double()
    ref = _mlp(torch).double()
    ref.load_state_dict({k: torch.from_numpy(v.numpy().copy()) for k, v in model.state_dict().items()})

    opt = tensora.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    loader = DataLoader(TensorDataset(tensora.tensor(x_np), tensora.tensor(y_np)), batch_size=32)
    history = fit(model, loader, opt, epochs=3, scheduler=tensora.optim.lr_scheduler.StepLR(opt, 1, 0.5),
                  progress=False)

    ref_opt = torch.optim.SGD(ref.parameters(), lr=0.05, momentum=0.9)
    ref_sched = torch.optim.lr_scheduler.StepLR(ref_opt, 1, 0.5)
    x, y = torch.from_numpy(x_np), torch.from_numpy(y_np)
    for epoch in range(3):
        losses, correct = [], 0
        for start in range(0, 200, 32):
            xb, yb = x[start:start + 32], y[start:start + 32]
            out = ref(xb)
            loss = torch.nn.functional.cross_entropy(out, yb)
            ref_opt.zero_grad()
            loss.backward()
            ref_opt.step()
            losses.append(loss.item() * len(yb))
            correct += (out.argmax(1) == yb).sum().item()
        ref_sched.step()
        assert history[epoch]["loss"] == pytest.approx(sum(losses) / 200, rel=1e-12)
        assert history[epoch]["accuracy"] == correct / 200


class _TinyLM:
    """The char LM of examples/char_transformer.py in miniature (dropout off: the two RNGs differ)."""

    def __init__(self, lib, vocab=12, d=16, seq=10):
        nn = lib.nn
        self.tok, self.pos, self.head = nn.Embedding(vocab, d), nn.Embedding(seq, d), nn.Linear(d, vocab)
        self.block = nn.TransformerEncoderLayer(d, 2, 4 * d, dropout=0.0, activation="gelu", batch_first=True,
                                                norm_first=True)
        self.model = nn.ModuleList([self.tok, self.pos, self.block, self.head])
        self.mask = nn.Transformer.generate_square_subsequent_mask(seq)
        self.positions = lib.arange(seq)

    def __call__(self, idx):
        x = self.block(self.tok(idx) + self.pos(self.positions), src_mask=self.mask, is_causal=True)
        return self.head(x).flatten(0, 1)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_causal_transformer_lm_matches_torch(dtype):
    rng = np.random.default_rng(0)
    text = rng.integers(0, 12, 400)
    starts = [rng.integers(0, 400 - 11, 8) for _ in range(30)]
    tensora.manual_seed(0)
    ours, ref = _TinyLM(tensora), _TinyLM(torch)
    ours.model.to(getattr(tensora, dtype))
    ref.model.to(getattr(torch, dtype))
    ref.model.load_state_dict({k: torch.from_numpy(v.numpy().copy()) for k, v in ours.model.state_dict().items()})
    ours.mask, ref.mask = ours.mask.to(getattr(tensora, dtype)), ref.mask.to(getattr(torch, dtype))

    def run(lib, lm):
        opt = lib.optim.AdamW(lm.model.parameters(), lr=1e-2)
        losses = []
        for s in starts:
            window = np.stack([text[i:i + 11] for i in s])
            x, y = lib.tensor(window[:, :-1]), lib.tensor(window[:, 1:])
            loss = lib.nn.functional.cross_entropy(lm(x), y.flatten())
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        return np.array(losses)

    theirs = run(torch, ref)
    assert theirs[-5:].mean() < 0.9 * theirs[:5].mean()
    np.testing.assert_allclose(run(tensora, ours), theirs, rtol=RTOL[dtype], atol=0)
