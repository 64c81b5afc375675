"""Errors of distributed runs: a failed or stuck collective must say which one and where."""

from __future__ import annotations

from ..errors import TensoraError


class DistributedError(TensoraError, RuntimeError):
    """Misuse of the process group (not initialised, wrong backend, mismatched tensors) or a failed peer."""


class DistributedTimeoutError(DistributedError, TimeoutError):
    """A collective or point-to-point op that did not finish before its deadline: a peer died or diverged."""
