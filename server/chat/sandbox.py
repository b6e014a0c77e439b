"""A Jinja sandbox with a budget: chat templates are code from model files and from requests.

Jinja's sandbox stops a template from reaching Python internals, not from running for ever or
building a gigabyte string: nested `range` loops, a recursive macro, `'x' * 10**9`, a string
doubled in a loop or `'x' | center(10**9)` all pass it. Here every operation that can loop or
grow checks a per-render budget (a deadline and a size bound, held in a context variable so one
environment serves renders on many threads): every step of every `for` loop, calls, attribute
and item lookups, the arithmetic and concatenation operators, filters and each chunk of output. Sizes are checked
before a string or list is built where the arguments tell (`*`, `**`, `%`, large counts), after
otherwise. Callers render off the event loop (asyncio.to_thread), so a slow template costs a
worker thread until its deadline, never the server's responsiveness.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import re
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.nodes import Concat
from jinja2.runtime import Context
from jinja2.sandbox import MAX_RANGE, ImmutableSandboxedEnvironment


@dataclass(frozen=True, slots=True)
class RenderLimits:
    """How long one render may take and how many characters it may produce (or build)."""

    seconds: float = 2.0
    max_chars: int = 8 * 1024 * 1024


class TemplateLimitExceeded(Exception):
    """A render passed its time or size budget (or recursed too deep)."""


@dataclass(slots=True)
class _Budget:
    deadline: float
    limits: RenderLimits


_budget: contextvars.ContextVar[_Budget | None] = contextvars.ContextVar(
    "gguf_serve_template_budget", default=None
)
_TICKING = "_gguf_serve_ticking"
_PERCENT_WIDTH = re.compile(r"%[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")


def _tick() -> _Budget | None:
    budget = _budget.get()
    if budget is not None and time.monotonic() > budget.deadline:
        raise TemplateLimitExceeded(
            f"the template ran longer than {budget.limits.seconds:g} seconds"
        )
    return budget


def _check_size(value: Any) -> Any:
    budget = _tick()
    if budget is not None and isinstance(value, str | list | tuple | dict | bytes):
        limit = budget.limits.max_chars
        if len(value) > limit:
            raise TemplateLimitExceeded(f"the template built a value longer than {limit}")
    return value


def _check_counts(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
    """A count or width argument past the size limit (ljust, center, indent, ...) is refused
    before the call builds its result."""
    budget = _tick()
    if budget is None:
        return
    limit = budget.limits.max_chars
    for value in (*args, *kwargs.values()):
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > limit:
            raise TemplateLimitExceeded(f"the template asked for a size past {limit}")


def _predict(op: str, left: Any, right: Any, limit: int) -> None:
    """Refuse `left op right` when its result would pass `limit`, before computing it."""
    sized = (str, list, tuple, bytes)
    if op == "*":
        for seq, n in ((left, right), (right, left)):
            if isinstance(seq, sized) and isinstance(n, int) and len(seq) * n > limit:
                raise TemplateLimitExceeded(f"the template built a value longer than {limit}")
    elif op == "**":
        if isinstance(left, int | float) and isinstance(right, int | float):
            magnitude = abs(float(left)) if left else 0.0
            if magnitude > 1 and float(right) > 64:
                raise TemplateLimitExceeded("the template raised a number to a huge power")
    elif op == "+":
        if isinstance(left, sized) and isinstance(right, sized) and len(left) + len(right) > limit:
            raise TemplateLimitExceeded(f"the template built a value longer than {limit}")
    elif op == "%" and isinstance(left, str):
        for width, precision in _PERCENT_WIDTH.findall(left):
            for number in (width, precision):
                if number == "*" or (number and int(number) > limit):
                    raise TemplateLimitExceeded("the template formats with a huge width")


def _checked_range(*args: int) -> Iterator[int]:
    _check_counts(args, {})
    rng = range(*args)
    if len(rng) > MAX_RANGE:
        raise TemplateLimitExceeded(f"range() longer than {MAX_RANGE} in a template")
    for i in rng:
        _tick()
        yield i


def _ticking(items: Any) -> Iterator[Any]:
    """What every `{% for %}` iterates: its items, each charged to the budget (a loop over a
    plain list, nested a few deep, runs long without calling anything else that checks)."""
    for item in items:
        _tick()
        yield item


def _checked_filter(func: Callable[..., Any]) -> Callable[..., Any]:
    # The filtered value comes first, after the context or environment for those that take one.
    skip = 2 if getattr(func, "jinja_pass_arg", None) is not None else 1

    @functools.wraps(func)  # keeps jinja_pass_arg (pass_context and friends)
    def run(*args: Any, **kwargs: Any) -> Any:
        _check_counts(args[skip:], kwargs)
        return _check_size(func(*args, **kwargs))

    return run


class _CheckedCodeGenerator(CodeGenerator):
    """Routes `a ~ b` through the size check (Jinja joins it without asking the sandbox)."""

    def visit_Concat(self, node: Concat, frame: Frame) -> None:
        self.write("environment.checked_value(")
        super().visit_Concat(node, frame)
        self.write(")")


class BudgetedSandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox, with every looping or growing operation charged to the budget."""

    code_generator_class = _CheckedCodeGenerator
    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.globals["range"] = _checked_range
        self.globals.pop("lipsum", None)  # lipsum(n) builds n paragraphs: nothing a chat needs
        self.filters = {name: _checked_filter(f) for name, f in self.filters.items()}
        self.filters[_TICKING] = _ticking

    def _generate(
        self,
        source: nodes.Template,
        name: str | None,
        filename: str | None,
        defer_init: bool = False,
    ) -> str:
        for loop in source.find_all(nodes.For):  # for x in ITEMS -> for x in ITEMS | _ticking
            loop.iter = nodes.Filter(loop.iter, _TICKING, [], [], None, None, lineno=loop.lineno)
        return super()._generate(source, name, filename, defer_init)

    def checked_value(self, value: Any) -> Any:
        return _check_size(value)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        budget = _tick()
        if budget is not None:
            _predict(operator, left, right, budget.limits.max_chars)
        return _check_size(super().call_binop(context, operator, left, right))

    def call(
        __self,
        __context: Context,
        __obj: Any,
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        if isinstance(getattr(__obj, "__self__", None), str | list | bytes):
            _check_counts(args, kwargs)  # 'x'.ljust(10**9), 'x'.zfill(...), ...
        else:
            _tick()
        return _check_size(super().call(__context, __obj, *args, **kwargs))

    def getattr(self, obj: Any, attribute: str) -> Any:
        _tick()
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        _tick()
        return super().getitem(obj, argument)


@contextlib.contextmanager
def _within(limits: RenderLimits) -> Iterator[None]:
    token = _budget.set(_Budget(time.monotonic() + limits.seconds, limits))
    try:
        yield
    finally:
        _budget.reset(token)


def compile_budgeted(
    env: BudgetedSandbox,
    source: str,
    limits: RenderLimits,
    globals: Mapping[str, Any] | None = None,
) -> jinja2.Template:
    """Compile `source` with its constant folding inside `limits` (Jinja evaluates constant
    expressions such as `'x' | center(10**9)` while compiling; one that passes the budget is
    left to run, and fail, at render time).

    Raises jinja2.TemplateSyntaxError, TemplateLimitExceeded (blocks nested past what Python
    compiles).
    """
    try:
        with _within(limits):
            return env.from_string(source, globals=dict(globals or {}))
    except (SyntaxError, RecursionError, MemoryError) as exc:  # Python's own nesting limits
        raise TemplateLimitExceeded(f"the template nests too deep to compile ({exc})") from None


def render_budgeted(
    template: jinja2.Template, limits: RenderLimits, values: Mapping[str, Any]
) -> str:
    """Render `template` with `values` inside `limits`.

    Raises TemplateLimitExceeded past the time or size budget or on runaway recursion; the
    template's own errors (jinja2.TemplateError, TypeError, ...) pass through.
    """
    try:
        with _within(limits):
            parts: list[str] = []
            size = 0
            for chunk in template.generate(values):
                size += len(chunk)
                if size > limits.max_chars:
                    raise TemplateLimitExceeded(
                        f"the template's output passed {limits.max_chars} characters"
                    )
                parts.append(chunk)
                _tick()
            return "".join(parts)
    except RecursionError:
        raise TemplateLimitExceeded("the template recursed too deep") from None
    except MemoryError:
        raise TemplateLimitExceeded("the template ran out of memory") from None
