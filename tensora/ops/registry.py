"""The public-API table: every op function registers here once.

`@register()` puts a function into `FUNCTIONS` (exported as `tensora.<name>`)
and, unless `method=False`, installs it as a Tensor method too. Backward rules
live in the `Op` classes (tensora/autograd/function.py, table `OPS`); this table
holds the user-facing signatures that parse arguments and call them.
"""

from __future__ import annotations

from typing import Any, Callable

from ..tensor import Tensor

FUNCTIONS: dict[str, Callable] = {}


def register(name: str | None = None, *, method: bool | str | tuple = True,
             function: bool = True) -> Callable[[Callable], Callable]:
    """Decorator: export `fn` as tensora.<name> and (optionally) as Tensor.<method>."""

    def deco(fn: Callable) -> Callable:
        key = name or fn.__name__
        if function:
            if key in FUNCTIONS:
                raise ValueError(f"function {key!r} registered twice")
            FUNCTIONS[key] = fn
        names = (key,) if method is True else (method,) if isinstance(method, str) else (method or ())
        for m in names:
            setattr(Tensor, m, fn)
        return fn

    return deco


def shape_arg(args: tuple[Any, ...]) -> tuple[int, ...]:
    """Accept f(2, 3), f((2, 3)), f([2, 3]) and f(Size) alike."""
    if len(args) == 1 and isinstance(args[0], (tuple, list)):
        args = tuple(args[0])
    for a in args:
        if a.__class__ is not int:
            break
    else:
        return args  # already a tuple of ints, the common case: no conversion to pay for
    try:
        return tuple(int(a) for a in args)
    except TypeError as exc:
        raise TypeError(f"shape must be ints, got {args!r}") from exc


def export(op: Any, name: str | None = None, *, method: bool | str | tuple = True,
           function: bool = True) -> Callable:
    """Register `op.apply` under `name` (default: the op's name) as a function and/or method."""

    apply = op.apply

    def fn(input: Any, *args: Any, **kwargs: Any) -> Any:
        if args or kwargs:
            return apply(input, *args, **kwargs)
        return apply(input)  # x.exp(): a plain call is ~0.15 us cheaper than forwarding *args, **kwargs

    fn.__name__ = name or op.name
    fn.__qualname__ = fn.__name__
    fn.__doc__ = op.__doc__
    return register(fn.__name__, method=method, function=function)(fn)


def binary_operator(dunder: str, fn: Callable) -> None:
    """Install fn as Tensor.__<dunder>__ and its reflected form Tensor.__r<dunder>__ (other <op> self)."""

    def reflected(self: Tensor, other: Any) -> Any:
        return fn(other, self)

    reflected.__name__ = f"__r{dunder}__"
    setattr(Tensor, f"__{dunder}__", fn)
    setattr(Tensor, f"__r{dunder}__", reflected)
