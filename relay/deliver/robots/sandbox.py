"""A robot's message template: Jinja in a sandbox bounded in time, in the size of what it builds and in its output.

Jinja's own sandbox keeps a template from Python's internals and from changing lists and dicts; it does not keep
one from building a value of gigabytes (``'x' * 10**9``, doubling a string twenty times, a list holding itself
many times over, then printed) or looping for hours (two nested ``range(100000)``). Here:

* every value a template builds (a literal list, tuple or dict, ``~``, ``+``, ``*``, a captured block, a macro's
  output, a ``join``) is measured as it is built, and one over `MAX_VALUE` is refused;
* ``%`` on text, ``str.format`` and every method of a built-in type but the few that cannot grow a value are out,
  and so are the filters that can (``center``, ``indent``, ``wordwrap``, ``format``, ``batch``, ...);
* a render stops at `MAX_OUTPUT` characters (the rest is cut), and fails after `RENDER_SECONDS` of CPU (a trace
  function checks the deadline at every line the template's code runs);
* the template itself is at most `MAX_TEMPLATE` characters.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping
from types import FrameType, TracebackType
from typing import Any

from jinja2 import ChainableUndefined, Template, TemplateError, TemplateSyntaxError, nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import SecurityError
from jinja2.filters import FILTERS
from jinja2.sandbox import ImmutableSandboxedEnvironment, safe_range
from jinja2.utils import Namespace

#: Characters of template text, at most.
MAX_TEMPLATE = 8192
#: Characters of a rendered message, at most: past it the message is cut (every platform takes this much).
MAX_OUTPUT = 4000
#: Size of any value a template builds, at most: characters of text, one per item of a list or dict (nested ones
#: counted in full, shared ones once per reference).
MAX_VALUE = 65536
#: Seconds one render may take.
RENDER_SECONDS = 0.2
#: The filters a template may use: the ones whose result is no larger than what they are given.
SAFE_FILTERS = (
    "abs",
    "attr",
    "capitalize",
    "count",
    "d",
    "default",
    "dictsort",
    "first",
    "float",
    "int",
    "items",
    "last",
    "length",
    "list",
    "lower",
    "map",
    "max",
    "min",
    "reject",
    "rejectattr",
    "reverse",
    "round",
    "select",
    "selectattr",
    "sort",
    "string",
    "title",
    "trim",
    "truncate",
    "unique",
    "upper",
    "wordcount",
)
#: Methods of built-in types a template may call: none of them makes a value larger than the one it is called on.
SAFE_METHODS = frozenset(
    {
        "capitalize",
        "casefold",
        "count",
        "endswith",
        "find",
        "get",
        "index",
        "isalnum",
        "isalpha",
        "isdigit",
        "islower",
        "isspace",
        "isupper",
        "items",
        "keys",
        "lower",
        "lstrip",
        "partition",
        "removeprefix",
        "removesuffix",
        "rfind",
        "rpartition",
        "rsplit",
        "rstrip",
        "split",
        "splitlines",
        "startswith",
        "strip",
        "swapcase",
        "title",
        "upper",
        "values",
    }
)
_BUILTIN = (str, bytes, int, float, bool, list, tuple, dict, set, frozenset, type(None))


class TemplateFailed(Exception):
    """A template that does not compile or render, said in one line (with the template's line when known)."""


class Raw(str):
    """Text the template prints as it is: already in the platform's markup (the default message)."""


def measure(value: object, times: int = 1) -> None:
    """SecurityError if ``value`` (repeated ``times``) is larger than `MAX_VALUE`; the walk stops as soon as it is,
    so it is bounded too."""
    limit = MAX_VALUE // max(times, 1)
    size, stack = 0, [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str | bytes):
            size += len(item)
        elif isinstance(item, Mapping):
            size += 1
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple | set | frozenset):
            size += 1
            stack.extend(item)
        else:
            size += 1
        if size > limit:
            raise SecurityError(f"the template builds a value larger than {MAX_VALUE} characters")


def _join(parts: Iterable[object]) -> str:
    """``str.join`` that stops before the result is too large, not after."""
    pieces: list[str] = []
    size = 0
    for part in parts:
        text = str(part)
        size += len(text)
        if size > MAX_VALUE:
            raise SecurityError(f"the template builds text longer than {MAX_VALUE} characters")
        pieces.append(text)
    return "".join(pieces)


def _join_filter(value: Iterable[object], separator: str = "", attribute: str | int | None = None) -> str:
    def parts() -> Iterator[object]:  # lazily: a join too large stops at the part that makes it so
        for index, item in enumerate(value):
            if index:
                yield separator
            yield item.get(attribute) if attribute is not None and isinstance(item, Mapping) else item

    return _join(parts())


def _tojson(value: object) -> str:
    measure(value)
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)


def _replace(value: str, old: str, new: str, count: int | None = None) -> str:
    text = str(value)
    found = text.count(old) if old else len(text) + 1
    if count is not None:
        found = min(found, max(count, 0))
    if len(text) + found * (len(new) - len(old)) > MAX_VALUE:
        raise SecurityError(f"the template builds text longer than {MAX_VALUE} characters")
    return text.replace(old, new, -1 if count is None else count)


class _Bounded(CodeGenerator):
    """Compiles literals and ``~`` so that what they build is measured (Jinja emits them as plain Python)."""

    def _measured(self, visit: Callable[[Any, Frame], None], node: Any, frame: Frame) -> None:
        self.write("environment.measured(")
        visit(node, frame)
        self.write(")")

    def visit_List(self, node: nodes.List, frame: Frame) -> None:
        self._measured(super().visit_List, node, frame)

    def visit_Dict(self, node: nodes.Dict, frame: Frame) -> None:
        self._measured(super().visit_Dict, node, frame)

    def visit_Tuple(self, node: nodes.Tuple, frame: Frame) -> None:
        if node.ctx == "store":  # an assignment's targets, not a value
            super().visit_Tuple(node, frame)
        else:
            self._measured(super().visit_Tuple, node, frame)

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self.write("environment.concat((")
        for argument in node.nodes:
            self.visit(argument, frame)
            self.write(", ")
        self.write("))")


class Sandbox(ImmutableSandboxedEnvironment):
    """The environment robot templates compile and render in; ``escape`` is applied to every value printed."""

    code_generator_class = _Bounded
    intercepted_binops = frozenset({"+", "*", "**", "%"})

    def __init__(self, escape: Callable[[str], str]) -> None:
        super().__init__(
            autoescape=False,
            undefined=ChainableUndefined,  # data.Input.Object of an event without Input prints nothing
            finalize=lambda value: value if isinstance(value, Raw) else escape("" if value is None else str(value)),
            keep_trailing_newline=True,
        )
        self.concat = _join  # type: ignore[method-assign]  # captured blocks, macro output
        self.filters = {name: FILTERS[name] for name in SAFE_FILTERS}
        self.filters |= {"join": _join_filter, "tojson": _tojson, "replace": _replace}
        self.globals = {"range": safe_range, "namespace": Namespace}

    @staticmethod
    def measured(value: Any) -> Any:
        """``value``, once measured (what the compiled literals call)."""
        measure(value)
        return value

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        if isinstance(obj, _BUILTIN) and attr not in SAFE_METHODS:
            return False
        return super().is_safe_attribute(obj, attr, value)

    def wrap_str_format(self, value: Any) -> None:
        return None  # str.format is not among SAFE_METHODS: refused like any other method

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "%" and isinstance(left, str):
            raise SecurityError("% formatting of text is not available: join values with ~")
        if operator == "*":
            sequence, times = (left, right) if isinstance(right, int) else (right, left)
            if isinstance(sequence, str | list | tuple) and isinstance(times, int):
                measure(sequence, times)
        numbers = isinstance(left, int) and isinstance(right, int)
        if operator == "**" and numbers and abs(left) > 1 and right * left.bit_length() > 4096:
            raise SecurityError("the template raises a number beyond 4096 bits")
        return self.measured(super().call_binop(context, operator, left, right))


class Deadline:
    """Fails the code running on this thread (the template's) once it has spent ``seconds`` of CPU, at its next line
    (``seconds`` is `RENDER_SECONDS`, or what is left of it).

    CPU, not wall time: a loaded machine stretches a cheap render's wall time, and the same template must not be
    accepted on a quiet host and refused on a busy one. The wall clock is the cheap test at every line (a thread's
    CPU clock is a system call); only once it has passed is the CPU actually spent looked at."""

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds
        self._cpu = 0.0
        self._at = 0.0
        self._previous: Any = None

    def _trace(self, frame: FrameType, event: str, arg: object) -> Any:
        if time.monotonic() > self._at:
            left = self._seconds - (time.thread_time() - self._cpu)
            if left <= 0:
                raise TemplateFailed(f"the template took longer than {RENDER_SECONDS:g} s")
            self._at = time.monotonic() + left
        return self._trace

    def __enter__(self) -> Deadline:
        self._cpu = time.thread_time()
        self._at = time.monotonic() + self._seconds
        self._previous = sys.gettrace()  # a debugger's or coverage's: given back after
        sys.settrace(self._trace)
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        sys.settrace(self._previous)


def _line_of(error: BaseException) -> int | None:
    """The template line an error was raised at (Jinja rewrites tracebacks to the template's lines)."""
    if isinstance(error, TemplateSyntaxError):
        return error.lineno
    line = None
    tb = error.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def _failed(error: BaseException) -> TemplateFailed:
    if isinstance(error, TemplateFailed):
        return error
    line = _line_of(error)
    said = error.message if isinstance(error, TemplateError) and error.message else str(error)
    message = " ".join((said or type(error).__name__).split())[:200]
    return TemplateFailed(f"line {line}: {message}" if line else message)


def compile_template(sandbox: Sandbox, text: str) -> Template:
    """The compiled template; `TemplateFailed` for one too long or not valid Jinja."""
    if len(text) > MAX_TEMPLATE:
        raise TemplateFailed(f"a template is at most {MAX_TEMPLATE} characters")
    try:
        return sandbox.from_string(text)
    except Exception as error:  # Jinja raises TemplateSyntaxError, and others for what it rejects while compiling
        raise _failed(error) from None


def render(template: Template, context: Mapping[str, Any], seconds: float = RENDER_SECONDS) -> str:
    """The template rendered with ``context``, cut at `MAX_OUTPUT` characters; `TemplateFailed` if it fails or
    overruns its time."""
    pieces: list[str] = []
    size = 0
    try:
        with Deadline(seconds):
            stream = template.generate(context)
            try:
                for piece in stream:
                    pieces.append(piece[: MAX_OUTPUT - size])
                    size += len(piece)
                    if size >= MAX_OUTPUT:
                        break
            finally:
                if isinstance(stream, Generator):
                    stream.close()
    except Exception as error:  # whatever a template raises, it is the template's failure, said in one line
        raise _failed(error) from None
    text = "".join(pieces)
    return text[: MAX_OUTPUT - 1] + "…" if size > MAX_OUTPUT else text
