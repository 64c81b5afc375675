"""Every `>>>` example in tensora's docstrings runs and shows what it claims (stdlib doctest).

One case per module that has examples, run as `python -m doctest` would (the module's
globals, each docstring on its own copy) with ELLIPSIS and NORMALIZE_WHITESPACE, after
seeding tensora and NumPy so printed values are stable. Examples that need a network, a GPU,
MPI ranks, worker processes or more than about a second carry ``# doctest: +SKIP``; examples
that need files write them under a temporary directory. A module whose optional dependency
is missing (a package outside tensora, or the default model's wheel) is skipped, saying which.
"""

from __future__ import annotations

import doctest
import importlib
import io
import pkgutil
import random
from types import ModuleType

import numpy as np
import pytest

import tensora
from tensora.models.default import DefaultModelMissing

FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE

# Modules whose examples are wrong but which other work owns right now; each reason says
# what is wrong, so whoever fixes the example also deletes the entry (strict xfail).
KNOWN_FALSE: dict[str, str] = {}  # module -> why its examples are known to fail (xfail, strict)


def _missing_dependency(exc: BaseException) -> str | None:
    """Why `exc` means an optional dependency is absent, or None when it is a real failure."""
    if isinstance(exc, ModuleNotFoundError) and exc.name and exc.name.split(".")[0] != "tensora":
        return f"optional dependency {exc.name!r} is not installed"
    if isinstance(exc, DefaultModelMissing):
        return str(exc)
    return None


def _import(name: str) -> ModuleType | str:
    """The module, or why it cannot be imported here (a missing optional dependency)."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        reason = _missing_dependency(exc)
        if reason is None:
            raise
        return reason


def _cases() -> list:
    """A pytest param per module with examples (or one that skips, naming a missing dependency)."""
    names = ["tensora"]  # walk_packages yields what is inside the package, not the package
    names += [info.name for info in pkgutil.walk_packages(tensora.__path__, "tensora.", onerror=_import)
              if info.name.rsplit(".", 1)[-1] != "__main__"]  # importing __main__ runs the command line
    cases = []
    for name in names:
        mod = _import(name)
        marks = []
        if isinstance(mod, str):
            marks.append(pytest.mark.skip(reason=mod))
        elif not any(t.examples for t in doctest.DocTestFinder().find(mod)):
            continue
        if name in KNOWN_FALSE:
            marks.append(pytest.mark.xfail(reason=KNOWN_FALSE[name], strict=True))
        cases.append(pytest.param(name, id=name, marks=marks))
    return cases


class _Runner(doctest.DocTestRunner):
    """A DocTestRunner that notes an example failing only because a dependency is missing."""

    missing: str | None = None

    def report_unexpected_exception(self, out, test, example, exc_info):
        self.missing = self.missing or _missing_dependency(exc_info[1])
        super().report_unexpected_exception(out, test, example, exc_info)


@pytest.mark.parametrize("name", _cases())
def test_docstring_examples(name):
    mod = importlib.import_module(name)
    tensora.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
    runner = _Runner(verbose=False, optionflags=FLAGS)
    report = io.StringIO()
    for test in doctest.DocTestFinder().find(mod):
        try:
            runner.run(test, out=report.write)
        finally:
            test.globs.clear()  # examples' tensors must not outlive the case
    if runner.missing:
        pytest.skip(runner.missing)
    if runner.tries == 0:
        pytest.skip("every example is marked +SKIP")
    assert runner.failures == 0, f"{runner.failures} of {runner.tries} examples failed:\n{report.getvalue()}"
