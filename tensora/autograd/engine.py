"""The backward engine: walk the graph in dependency order and sum gradients.

`backward` accumulates into leaves' .grad; `grad` returns the gradients of the
given inputs instead and touches no .grad. Both run only the nodes that lie on a
path from the outputs to what is asked for.
"""

from __future__ import annotations

from typing import Any

from ..errors import AutogradError, fmt_shape
from ..tensor import Tensor
from .grad_mode import STATE, enable_grad, no_grad
from .graph import AccumulateGrad, check_view_current, grad_accumulator


def _as_list(x: Any) -> list:
    if x is None:
        return []
    if isinstance(x, Tensor):
        return [x]
    return list(x)


def _root_grads(outputs: list[Tensor], grads: list) -> list[Tensor]:
    from ..creation import ones_like
    result = []
    for i, out in enumerate(outputs):
        if not out.requires_grad:
            raise AutogradError(f"element {i} of tensors does not require grad and does not have a grad_fn")
        g = grads[i] if i < len(grads) else None
        if g is None:
            if out.numel() != 1:
                raise AutogradError(f"grad can be implicitly created only for scalar outputs; output {i} "
                                    f"has shape {fmt_shape(out.shape)}")
            g = ones_like(out)
        elif not isinstance(g, Tensor):
            from ..creation import tensor
            g = tensor(g, dtype=out.dtype)
        if g.shape != out.shape:
            raise AutogradError(f"mismatch in shape: grad_output[{i}] has a shape of {fmt_shape(g.shape)} "
                                f"and output[{i}] has a shape of {fmt_shape(out.shape)}")
        result.append(g)
    return result


def _edge(t: Tensor) -> tuple:
    if t.grad_fn is None:
        return (grad_accumulator(t), 0)
    if t._base is not None:
        check_view_current(t)
    return (t.grad_fn, t._output_nr)


def _execute(roots: list[tuple], retain_graph: bool, create_graph: bool,
             targets: dict | None, accumulate: bool) -> dict:
    """Run backward from `roots` [(edge, grad)]; return captured grads for `targets` {(node id, idx): slot}."""
    # Dependency counts and the set of nodes that lead to something we need.
    deps: dict[int, int] = {}
    stack = [e[0] for e, _ in roots]
    seen = set()
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        for nxt, _ in node.next_edges:
            if nxt is not None:
                deps[id(nxt)] = deps.get(id(nxt), 0) + 1
                if id(nxt) not in seen:
                    stack.append(nxt)
    needed = None
    if targets is not None:
        needed = _nodes_leading_to({k[0] for k in targets}, [e[0] for e, _ in roots])

    buffers: dict[int, list] = {}
    for (node, idx), g in roots:
        buf = buffers.setdefault(id(node), [None] * node.n_outputs)
        buf[idx] = g if buf[idx] is None else buf[idx] + g
    ready = [node for node in {id(e[0]): e[0] for e, _ in roots}.values() if deps.get(id(node), 0) == 0]
    captured: dict = {}
    mode = enable_grad() if create_graph else no_grad()
    with mode:
        while ready:
            node = ready.pop()
            grads = buffers.pop(id(node), None) or [None] * node.n_outputs
            if node.pre_hooks:
                for idx, hooks in node.pre_hooks.items():
                    for hook in list(hooks):
                        if grads[idx] is not None:
                            new = hook(grads[idx])
                            if new is not None:
                                grads[idx] = _checked_hook_result(hook, new, grads[idx])
            if targets is not None:
                for idx, g in enumerate(grads):
                    slot = targets.get((id(node), idx))
                    if slot is not None:
                        captured[slot] = g
            if isinstance(node, AccumulateGrad):
                if accumulate and grads[0] is not None:
                    node.accumulate(grads[0], create_graph)
                continue
            skip = all(g is None for g in grads) or (needed is not None and id(node) not in needed)
            in_grads = (None,) * len(node.next_edges) if skip else node.apply(grads, retain_graph)
            for (nxt, idx), g in zip(node.next_edges, in_grads):
                if nxt is None:
                    continue
                if g is not None:
                    buf = buffers.setdefault(id(nxt), [None] * nxt.n_outputs)
                    buf[idx] = g if buf[idx] is None else buf[idx] + g
                deps[id(nxt)] -= 1
                if deps[id(nxt)] == 0:
                    ready.append(nxt)
    return captured


def _checked_hook_result(hook: Any, new: Any, old: Tensor) -> Tensor:
    """A hook may replace a gradient, but not with one of another shape (torch refuses too)."""
    if not isinstance(new, Tensor):
        raise AutogradError(f"hook {getattr(hook, '__name__', hook)!r} returned {type(new).__name__}, not a Tensor")
    if new._data.shape != old._data.shape:
        raise AutogradError(f"hook {getattr(hook, '__name__', hook)!r} changed the gradient's shape from "
                            f"{fmt_shape(old.shape)} to {fmt_shape(new.shape)}")
    return new


def _nodes_leading_to(target_ids: set, starts: list) -> set:
    """ids of the nodes from which some target node can be reached (post-order DFS)."""
    needed: set = set()
    visited: set = set()
    for start in starts:
        if id(start) in visited:
            continue
        visited.add(id(start))
        stack = [(start, iter(start.next_edges))]
        while stack:
            node, edges = stack[-1]
            for nxt, _ in edges:
                if nxt is not None and id(nxt) not in visited:
                    visited.add(id(nxt))
                    stack.append((nxt, iter(nxt.next_edges)))
                    break
            else:
                stack.pop()
                # A target itself only needs its incoming gradient, not its own backward.
                if any(n is not None and (id(n) in needed or id(n) in target_ids) for n, _ in node.next_edges):
                    needed.add(id(node))
    return needed


def backward(tensors: Any, grad_tensors: Any = None, retain_graph: bool | None = None,
             create_graph: bool = False, inputs: Any = None) -> None:
    """Accumulate gradients of `tensors` into the .grad of the leaves (or only of `inputs`)."""
    outs = _as_list(tensors)
    grads = _root_grads(outs, _as_list(grad_tensors))
    retain = create_graph if retain_graph is None else retain_graph
    roots = [(_edge(o), g) for o, g in zip(outs, grads)]
    if inputs is None:
        _execute(roots, retain, create_graph, None, accumulate=True)
        return
    ins = _as_list(inputs)
    targets = {}
    for i, t in enumerate(ins):
        node, idx = _edge(t)
        targets[(id(node), idx)] = i
    captured = _execute(roots, retain, create_graph, targets, accumulate=False)
    for i, t in enumerate(ins):
        g = captured.get(i)
        if g is not None:
            grad_accumulator(t).accumulate(g, create_graph) if t.grad_fn is None else _store_nonleaf(t, g)


def _store_nonleaf(t: Tensor, g: Tensor) -> None:
    t.grad = g.detach() if t.grad is None else t.grad + g.detach()


def grad(outputs: Any, inputs: Any, grad_outputs: Any = None, retain_graph: bool | None = None,
         create_graph: bool = False, allow_unused: bool = False,
         materialize_grads: bool = False) -> tuple[Tensor | None, ...]:
    """Return d(outputs)/d(inputs) without touching any .grad (torch.autograd.grad)."""
    outs = _as_list(outputs)
    ins = _as_list(inputs)
    for i, t in enumerate(ins):
        if not t.requires_grad:
            raise AutogradError(f"input {i} of shape {fmt_shape(t.shape)} does not require grad")
    grads = _root_grads(outs, _as_list(grad_outputs))
    retain = create_graph if retain_graph is None else retain_graph
    targets = {}
    for i, t in enumerate(ins):
        node, idx = _edge(t)
        targets.setdefault((id(node), idx), i)
    captured = _execute([(_edge(o), g) for o, g in zip(outs, grads)], retain, create_graph, targets,
                        accumulate=False)
    result = []
    for i, t in enumerate(ins):
        key = targets[(id(_edge(t)[0]), _edge(t)[1])]
        g = captured.get(key)
        if g is None:
            if materialize_grads:
                from ..creation import zeros_like
                g = zeros_like(t)
            elif not allow_unused:
                raise AutogradError(f"input {i} of shape {fmt_shape(t.shape)} was not used in the graph; "
                                    "set allow_unused=True if this is intended")
        elif not create_graph:
            g = g.detach()
        result.append(g)
    return tuple(result)


def is_recording() -> bool:
    return STATE.enabled
