"""Optimizers, learning-rate schedulers and gradient clipping, with torch.optim's API.

    >>> import tensora
    >>> model_params = [tensora.randn(3, 3, requires_grad=True)]
    >>> opt = tensora.optim.AdamW(model_params, lr=1e-3)
    >>> sched = tensora.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=100)
    >>> # loss.backward(); opt.step(); sched.step(); opt.zero_grad()
"""

from __future__ import annotations

from . import lr_scheduler
from .adagrad import Adagrad
from .adam import Adam, AdamW
from .adam8bit import Adam8bit, AdamW8bit
from .clip_grad import clip_grad_norm_, clip_grad_value_, clip_grads_with_norm_, get_total_norm
from .lion import Lion
from .optimizer import Optimizer
from .rmsprop import RMSprop
from .sgd import SGD

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "Adam8bit", "AdamW8bit", "RMSprop", "Adagrad", "Lion",
           "lr_scheduler", "clip_grad_norm_", "clip_grad_value_", "get_total_norm", "clip_grads_with_norm_"]
