"""Neural-network building blocks with torch.nn's interface.

Module (parameters, buffers, state_dict, hooks, train/eval, to(...)), Parameter, containers
(Sequential, ModuleList, ModuleDict), the layers in nn.modules, the functional API
(`tensora.nn.functional`, imported as F) and weight initialisation (`tensora.nn.init`).

    >>> import tensora
    >>> from tensora import nn
    >>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    >>> loss = nn.CrossEntropyLoss()(model(tensora.randn(5, 4)), tensora.tensor([0, 1, 2, 0, 1]))
    >>> loss.backward()
    >>> model[0].weight.grad.shape
    tensora.Size([8, 4])
"""

from . import functional, init  # noqa: F401 - tensora.nn.functional, tensora.nn.init
from .containers import ModuleDict, ModuleList, Sequential
from .hooks import RemovableHandle
from .module import IncompatibleKeys, Module
from .modules import *  # noqa: F403 - the layers are the public API
from .modules import __all__ as _modules_all
from .parameter import Buffer, Parameter

__all__ = ["Module", "Parameter", "Buffer", "Sequential", "ModuleList", "ModuleDict", "RemovableHandle",
           "IncompatibleKeys", "functional", "init"] + list(_modules_all)
