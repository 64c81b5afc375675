"""Chat templates: the sandbox a model's (untrusted) jinja2 chat template renders in.

transformers renders chat templates in jinja2's ImmutableSandboxedEnvironment with a few extra
globals (`raise_exception`, `strftime_now`, a `tojson` that does not escape HTML, `{% generation %}`);
tensora reproduces that environment, hands the template only plain JSON-like data, and bounds what a
template can cost in memory and time (see TEMPLATE_MAX_SIZE and TEMPLATE_TIME_LIMIT). Tokenizer's
`apply_chat_template` is the user-facing entry; this module is the engine.
"""

from __future__ import annotations

import ctypes
import dataclasses
import functools
import json
import re
import threading
import time
import types
from datetime import datetime
from functools import lru_cache
from typing import Any, Callable, Mapping

import jinja2
import jinja2.compiler
import jinja2.ext
import jinja2.nodes
import jinja2.runtime
import jinja2.utils
import numpy as np
from jinja2.sandbox import ImmutableSandboxedEnvironment

from ..errors import TensoraError


class ChatTemplateError(TensoraError, jinja2.TemplateError):
    """Raised by a chat template's `raise_exception(...)`; a jinja2.TemplateError, as in transformers."""


# -- chat template environment (transformers.utils.chat_template_utils._cached_compile_jinja_template) ----
#
# A chat template comes from a model file, so it is untrusted code. transformers renders it in jinja2's
# ImmutableSandboxedEnvironment, which keeps it away from Python internals; tensora does the same and
# also bounds what a template can cost: every string, list or output it builds holds at most
# TEMPLATE_MAX_SIZE characters/elements (checked *before* the allocation, at each operator, call,
# filter, `~` and namespace assignment), integer powers stay below TEMPLATE_MAX_POW_BITS bits, and a
# render that runs longer than TEMPLATE_TIME_LIMIT seconds is interrupted (ChatTemplateTimeout).

TEMPLATE_MAX_SIZE = 1 << 24        # characters of any string, elements of any list, the rendered text
TEMPLATE_MAX_POW_BITS = 1 << 16    # bits of an integer `a ** b`
TEMPLATE_TIME_LIMIT = 10.0         # seconds one render may take
_RESEND_INTERVAL = 0.25            # seconds between interrupts, once the time limit has passed


class ChatTemplateLimitError(ChatTemplateError):
    """A chat template that would build an oversized string, list or number (a broken or hostile template)."""


class ChatTemplateTimeout(ChatTemplateError):
    """A chat template that ran longer than TEMPLATE_TIME_LIMIT seconds (an endless or huge loop)."""

    def __init__(self, *args: Any) -> None:  # raised asynchronously, as the bare class: the message is made here
        super().__init__(*(args or (f"the chat template ran longer than {TEMPLATE_TIME_LIMIT:g} s and was stopped",)))


class _GenerationBlock(jinja2.ext.Extension):
    """`{% generation %}...{% endgeneration %}` marks assistant text for training masks; rendering keeps the body."""

    tags = {"generation"}

    def parse(self, parser: Any) -> jinja2.nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_render"), [], [], body).set_lineno(lineno)

    def _render(self, caller: Any) -> str:
        return caller()


class _TemplateNamespace(jinja2.utils.Namespace):
    """`namespace()` that refuses underscore attributes, so a template cannot reach Python internals,
    and oversized values, so a loop cannot double a string held in it without bound."""

    def __init__(*args: Any, **kwargs: Any) -> None:
        self, args = args[0], args[1:]
        attrs = dict(*args, **kwargs)
        for name, value in attrs.items():
            _check_attribute(name)
            _check_size(value, "a namespace attribute")
        jinja2.utils.Namespace.__init__(self, attrs)

    def __setitem__(self, name: str, value: Any) -> None:
        _check_attribute(name)
        _check_size(value, "a namespace attribute")
        jinja2.utils.Namespace.__setitem__(self, name, value)


class _TemplateDict:
    """`dict(...)` and `dict.fromkeys(...)` for templates, without exposing the dict type itself."""

    def __call__(self, *args: Any, **kwargs: Any) -> dict:
        return dict(*args, **kwargs)

    def fromkeys(self, *args: Any) -> dict:
        return dict.fromkeys(*args)


def _check_attribute(name: Any) -> None:
    if isinstance(name, str) and name.startswith("_"):
        raise jinja2.exceptions.SecurityError(f"chat templates cannot set underscore attributes ({name!r})")


def _raise_exception(message: str) -> None:
    raise ChatTemplateError(message)


def _tojson(x: Any, ensure_ascii: bool = False, indent: int | str | None = None, separators: Any = None,
            sort_keys: bool = False) -> str:
    # jinja's own tojson escapes <, >, & for HTML; templates expect plain JSON
    step = indent if isinstance(indent, int) else _size(indent)
    _check_size(None, "tojson's output", size=_size(x) * (1 + max(step or 0, 0)))
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


_CONTAINERS = (list, tuple, dict, set, frozenset)


def _size(value: Any, limit: int = TEMPLATE_MAX_SIZE) -> int:
    """How big `value` is once printed: characters of a string, elements of a container plus their
    sizes, a shared element counted each time it is reached (as str() would spell it out). Stops
    counting once past `limit`, so it costs at most the objects it visits, never the expanded size."""
    seen: dict[int, int] = {}

    def walk(x: Any, depth: int) -> int:
        if isinstance(x, (str, bytes)):
            return len(x)
        if not isinstance(x, _CONTAINERS):
            return 1
        key = id(x)
        if key in seen:
            return seen[key]
        if depth > 64:
            return limit + 1
        total = len(x)
        for item in (x.items() if isinstance(x, dict) else x):
            if total > limit:
                break
            total += walk(item, depth + 1)
        seen[key] = total
        return total

    return walk(value, 0)


_render_deadline = threading.local()  # .end: time.monotonic() past which this thread's render must stop


def _check_deadline() -> None:
    """Stop a render that is past its time limit, at the next operator, call, filter or output: the
    synchronous half of the time limit (render's timer thread is the other, for loops that call nothing)."""
    end = getattr(_render_deadline, "end", None)
    if end is not None and time.monotonic() > end:
        raise ChatTemplateTimeout()


def _check_size(value: Any, what: str, *, size: int | None = None) -> None:
    n = _size(value) if size is None else size
    if n > TEMPLATE_MAX_SIZE:
        raise ChatTemplateLimitError(f"the chat template builds {what} larger than {TEMPLATE_MAX_SIZE} "
                                     "characters/elements (a broken or hostile template)")


def _check_count(n: Any, what: str) -> None:
    """An int argument that sets an output size (a width, a repeat count): at most TEMPLATE_MAX_SIZE."""
    if isinstance(n, int) and n > TEMPLATE_MAX_SIZE:
        raise ChatTemplateLimitError(f"the chat template asks for {what} of {n}, more than {TEMPLATE_MAX_SIZE}")


_DIGITS = re.compile(r"\d+")
_MAX_DIGITS = len(str(TEMPLATE_MAX_SIZE))
_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[^a-zA-Z%(]*")  # flags, width and precision of each %-conversion
_FORMAT_SPEC = re.compile(r"\{[^{}]*?:([^{}]*)\}")           # the spec after ':' in each {field:spec}
_NESTED_FIELD = re.compile(r"\{[^{}]*?:[^{}]*\{")             # {field:{width}}: a width from an argument


def _check_format(fmt: Any, args: Any, what: str, spec: re.Pattern = _PERCENT_SPEC) -> None:
    """%-formatting and str.format: no field width or precision past the limit, written in the format or
    (`%*d`, `{:{w}}`) taken from an argument."""
    if not isinstance(fmt, str):
        return
    fields = spec.findall(fmt)
    for field in fields:
        for digits in _DIGITS.findall(field):
            digits = digits.lstrip("0") or "0"  # (the count is cut short, so "%0100000000000d" stays cheap)
            _check_count(int(digits[:_MAX_DIGITS + 1]), f"a {what} field width")
    if any("*" in f for f in fields) or (spec is _FORMAT_SPEC and _NESTED_FIELD.search(fmt)):
        values = args.values() if isinstance(args, dict) else args if isinstance(args, tuple) else (args,)
        for value in values:
            _check_count(value, f"a {what} field width")


def _check_binop(operator: str, left: Any, right: Any) -> None:
    sized = (str, list, tuple)
    if operator == "*":
        for seq, n in ((left, right), (right, left)):
            if isinstance(seq, sized) and isinstance(n, int) and n > 0:
                _check_size(None, "a repeated string or list", size=_size(seq) * n)
    elif operator == "+" and isinstance(left, sized) and isinstance(right, sized):
        _check_size(None, "a concatenation", size=_size(left) + _size(right))
    elif operator == "**" and isinstance(left, int) and isinstance(right, int) and right > 0:
        if max(abs(left).bit_length() - 1, 0) * right > TEMPLATE_MAX_POW_BITS:
            raise ChatTemplateLimitError(f"the chat template computes an integer power past "
                                         f"{TEMPLATE_MAX_POW_BITS} bits (a broken or hostile template)")
    elif operator == "%" and isinstance(left, str):
        _check_format(left, right, "%-format")


def _check_str_method(method: Any, args: tuple, kwargs: dict) -> None:
    """Bound str methods whose result can be far longer than their inputs."""
    s, name = method.__self__, method.__name__
    values = list(args) + list(kwargs.values())
    if name in ("center", "ljust", "rjust", "zfill"):
        for n in values[:1]:
            _check_count(n, f"str.{name} width")
    elif name == "expandtabs" and values and isinstance(values[0], int):
        _check_size(None, "str.expandtabs' result", size=len(s) + s.count("\t") * max(values[0], 0))
    elif name == "replace" and len(values) >= 2:
        _check_replace(s, values[0], values[1])
    elif name == "join" and values:
        items = values[0]
        if isinstance(items, _CONTAINERS):
            _check_size(None, "str.join's result", size=_size(items) + len(s) * len(items))
    elif name == "translate" and values and isinstance(values[0], dict):
        longest = max((_size(v) for v in values[0].values()), default=1)
        _check_size(None, "str.translate's result", size=len(s) * max(longest, 1))


def _check_replace(s: Any, old: Any, new: Any) -> None:
    if isinstance(s, str) and isinstance(old, str) and isinstance(new, str):
        hits = len(s) + 1 if not old else len(s) // len(old)
        _check_size(None, "a replace's result", size=len(s) + hits * len(new))


# Filters whose result can be far longer than their inputs: the extra check each one gets.
def _filter_limits(name: str, args: tuple, kwargs: dict) -> None:
    value, rest = (args[0] if args else None), list(args[1:]) + list(kwargs.values())
    if name == "center":
        for n in rest[:1]:
            _check_count(n, "a center width")
    elif name == "indent" and isinstance(value, str):
        width = rest[0] if rest else 4
        step = width if isinstance(width, int) else _size(width)
        _check_size(None, "an indented text", size=len(value) + (value.count("\n") + 1) * max(step, 0))
    elif name == "wordwrap" and isinstance(value, str):
        width = args[1] if len(args) > 1 and isinstance(args[1], int) else kwargs.get("width", 79)
        wrap = kwargs.get("wrapstring") or (args[3] if len(args) > 3 and isinstance(args[3], str) else "\n")
        lines = len(value) // max(width if isinstance(width, int) else 1, 1) + 1
        _check_size(None, "a wrapped text", size=len(value) + lines * _size(wrap))
    elif name == "format":
        _check_format(value, tuple(args[1:]) if args[1:] else dict(kwargs), "format filter")
    elif name == "batch" and len(rest) >= 2 and rest[1] is not None:
        _check_count(rest[0], "a batch size with fill_with")
    elif name == "replace" and len(rest) >= 2:
        _check_replace(value, rest[0], rest[1])
    elif name == "join" and isinstance(value, _CONTAINERS):
        sep = rest[0] if rest and isinstance(rest[0], str) else ""
        _check_size(None, "a join's result", size=_size(value) + len(sep) * len(value))
    elif name == "sum" and isinstance(value, _CONTAINERS):
        start = kwargs.get("start", rest[1] if len(rest) > 1 else 0)
        if isinstance(start, (str, list, tuple)):  # sequences add up in quadratic time
            _check_size(None, "a sum of sequences", size=_size(value) * max(len(value), 1))


def _checked_filter(name: str, fn: Callable) -> Callable:
    @functools.wraps(fn)  # keeps jinja's pass_context / pass_environment marks
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        _check_deadline()
        plain = [a for a in args if not isinstance(a, (jinja2.runtime.Context, jinja2.nodes.EvalContext,
                                                       jinja2.Environment))]
        for a in plain + list(kwargs.values()):
            _check_size(a, f"an argument of the {name!r} filter")
        _filter_limits(name, tuple(plain), kwargs)
        return fn(*args, **kwargs)
    return wrapper


def _checked_concat(items: tuple) -> str:
    """`a ~ b`: jinja's str_join, after checking the pieces' total size."""
    _check_size(None, "a `~` concatenation", size=sum(_size(x) for x in items))
    return "".join(map(str, items))


def _finalize(value: Any) -> Any:
    """Each `{{ expression }}` before it is turned into text: a bounded size."""
    _check_deadline()
    _check_size(value, "an output value")
    return value


class _TemplateCodeGenerator(jinja2.compiler.CodeGenerator):
    """jinja's code generator with `~` routed through the environment's size check."""

    def visit_Concat(self, node: jinja2.nodes.Concat, frame: Any) -> None:
        self.write("environment.checked_concat((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


class _TemplateSandbox(ImmutableSandboxedEnvironment):
    """transformers' sandbox plus the size checks above on operators, calls, filters, `~` and output."""

    code_generator_class = _TemplateCodeGenerator
    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(self, **options: Any) -> None:
        super().__init__(finalize=_finalize, **options)
        self.checked_concat = _checked_concat

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        _check_deadline()
        _check_binop(operator, left, right)
        return super().call_binop(context, operator, left, right)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        _check_deadline()
        for a in list(args) + list(kwargs.values()):
            _check_size(a, "a function argument")
        if isinstance(__obj, types.BuiltinMethodType) and isinstance(getattr(__obj, "__self__", None), str):
            _check_str_method(__obj, args, kwargs)
        return super().call(__context, __obj, *args, **kwargs)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None
        fmt = value.__self__

        def checked(*args: Any, **kwargs: Any) -> str:
            mapping = args[0] if value.__name__ == "format_map" and args and isinstance(args[0], dict) else {}
            _check_format(fmt, tuple(args) + tuple(kwargs.values()) + tuple(mapping.values()), "str.format",
                          _FORMAT_SPEC)
            return wrapped(*args, **kwargs)
        return functools.update_wrapper(checked, value)


@lru_cache(maxsize=16)
def compile_template(template: str) -> jinja2.Template:
    """`template` compiled in the sandbox; ChatTemplateError if it is not valid Jinja."""
    env = _TemplateSandbox(trim_blocks=True, lstrip_blocks=True,
                           extensions=[_GenerationBlock, jinja2.ext.loopcontrols])
    env.filters["tojson"] = _tojson
    for name, fn in list(env.filters.items()):
        env.filters[name] = _checked_filter(name, fn)
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    env.globals["dict"] = _TemplateDict()
    env.globals["namespace"] = _TemplateNamespace
    try:
        return env.from_string(template)
    except jinja2.TemplateSyntaxError as exc:  # the model's file is broken, not the messages: say which part
        raise ChatTemplateError(f"the model's chat template does not compile: {exc.message} (its line "
                                f"{exc.lineno})") from None


def render(template: jinja2.Template, variables: dict[str, Any]) -> str:
    """template.render(**variables) within TEMPLATE_MAX_SIZE characters and TEMPLATE_TIME_LIMIT seconds.

    The time limit is enforced twice. Every operator, call, filter and output checks the deadline; and a
    timer thread raises ChatTemplateTimeout in this thread (PyThreadState_SetAsyncExc: it lands at the
    next bytecode boundary, so it also stops a loop that calls nothing). An asynchronous exception can
    land where it is swallowed (a gc callback, a __del__), so the timer repeats it every
    _RESEND_INTERVAL until the render has ended. Nothing else is ever sent: clearing a pending
    exception with PyThreadState_SetAsyncExc(id, NULL) leaves CPython 3.11's eval breaker set, after
    which enabling cProfile (or a tracer such as coverage) spins forever at the next function entry.
    So an interrupt that arrives just as the render ends is taken here, by a short loop that catches it.
    """
    thread, lock, stopped = threading.get_ident(), threading.Lock(), threading.Event()
    state = {"done": False, "fired": False}

    def interrupt() -> None:
        wait = TEMPLATE_TIME_LIMIT
        while not stopped.wait(wait):
            with lock:
                if state["done"]:
                    return
                state["fired"] = True
                _send_timeout(thread)
            wait = _RESEND_INTERVAL

    _render_deadline.end = time.monotonic() + TEMPLATE_TIME_LIMIT
    timer = threading.Thread(target=interrupt, name="chat-template-timer", daemon=True)
    timer.start()
    try:
        pieces, total = [], 0
        for piece in template.generate(**variables):
            _check_deadline()
            total += len(piece)
            _check_size(None, "a rendered text", size=total)
            pieces.append(piece)
        return "".join(pieces)
    finally:
        _render_deadline.end = None
        _end_interrupts(lock, state)
        stopped.set()
        if state["fired"]:
            _take_pending_interrupt()


def _send_timeout(thread: int) -> None:
    """Raise ChatTemplateTimeout in `thread` at its next bytecode boundary."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread), ctypes.py_object(ChatTemplateTimeout))


def _end_interrupts(lock: threading.Lock, state: dict) -> None:
    """Mark the render done under the timer's lock, so that no interrupt is sent after it; a repeated
    interrupt landing here (the render is already unwinding from the first) is caught and ignored."""
    while True:
        try:
            with lock:
                state["done"] = True
            return
        except ChatTemplateTimeout:
            pass


def _take_pending_interrupt() -> None:
    """Receive a ChatTemplateTimeout sent to this thread and not yet delivered (if there is one): the
    loop's backward jumps are where CPython delivers it."""
    try:
        for _ in range(1000):
            pass
    except ChatTemplateTimeout:
        pass


def plain_template_data(value: Any, depth: int = 0) -> Any:
    """value rebuilt from plain JSON types (str, int, float, bool, None, dict, list, tuple), as transformers
    does before rendering: an object's methods could do harm the sandbox does not know of, and a str/int
    subclass could carry extra methods. Anything else becomes an inert placeholder such as "<Path>"."""
    if value is None or type(value) in (str, int, float, bool):
        return value
    if depth > 64:
        raise ChatTemplateLimitError("chat template data nested more than 64 levels deep")
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, Mapping):
        return {plain_template_data(k, depth + 1): plain_template_data(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [plain_template_data(v, depth + 1) for v in value]
    if isinstance(value, tuple):
        return tuple(plain_template_data(v, depth + 1) for v in value)
    if isinstance(value, np.generic):
        return plain_template_data(value.item(), depth + 1)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain_template_data(getattr(value, f.name), depth + 1) for f in dataclasses.fields(value)}
    if callable(getattr(value, "model_dump", None)):
        return plain_template_data(value.model_dump(), depth + 1)
    return f"<{type(value).__name__}>"
