"""The user's own models and data, named by import strings, and when they may be imported.

Besides the built-in names (``resnet20s``, ``mnist5k``, ...), a model or a dataset can be
``package.module:factory``, optionally followed by JSON keyword arguments
(``'mypkg.nets:mobilenet {"width": 0.5}'``), the convention of uvicorn's ``app`` strings and
Lightning's ``class_path``. A ticket's sidecar records that string so the ticket can be
rebuilt later.

**Security.** A sidecar or a claim is input a thief controls, and importing a module runs
its code. So a string read from a file is imported only when the user has named it: on the
command line (``--model``, ``--dataset``: ``trust_from_argv``), in Python
(``ticketmark.trust_model_code``, or by passing the string or a callable to an API
function), or by ``--trust-model-code`` for everything. Otherwise loading such a ticket
stops with one line saying which code it names and how to allow it (docs/security.md).
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from ticketmark.errors import TicketmarkError

_TRUSTED: set[str] = set()
_TRUST_ALL = False
_FLAGS = ("--model", "--dataset", "--data")


def is_spec(name: str) -> bool:
    """An import string rather than a built-in name."""
    return ":" in name.split(" ", 1)[0]


def split_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """``'pkg.mod:attr {json}'`` -> (``'pkg.mod:attr'``, kwargs)."""
    target, _, rest = spec.strip().partition(" ")
    module, _, attr = target.partition(":")
    if not module or not attr or not all(p.isidentifier() for p in module.split("."))  \
            or not all(p.isidentifier() for p in attr.split(".")):
        raise TicketmarkError(f"{spec!r} is not an import string 'package.module:factory' "
                              "(optionally followed by JSON keyword arguments)")
    kwargs: dict[str, Any] = {}
    if rest.strip():
        try:
            kwargs = json.loads(rest)
        except json.JSONDecodeError:
            raise TicketmarkError(f"the keyword arguments of {target} are not JSON: "
                                  f"{rest.strip()[:80]!r}") from None
        if not isinstance(kwargs, dict):
            raise TicketmarkError(f"the keyword arguments of {target} must be a JSON object")
    return target, kwargs


def trust(spec: str) -> None:
    """Allow ``spec``'s module to be imported in this process (the user named it)."""
    _TRUSTED.add(split_spec(spec)[0])


def trust_all(on: bool = True) -> None:
    """``--trust-model-code``: import whatever a ticket names."""
    global _TRUST_ALL
    _TRUST_ALL = on


def trust_from_argv(argv: Sequence[str]) -> None:
    """Trust the import strings given to ``--model`` / ``--dataset`` / ``--data``."""
    for i, arg in enumerate(argv):
        value = None
        if arg in _FLAGS and i + 1 < len(argv):
            value = argv[i + 1]
        elif "=" in arg and arg.split("=", 1)[0] in _FLAGS:
            value = arg.split("=", 1)[1]
        if value is not None and is_spec(value):
            # A malformed string is reported by the command that reads it.
            with contextlib.suppress(TicketmarkError):
                trust(value)


def spec_of(factory: Callable[..., Any]) -> str:
    """The import string of a module-level callable (and trust it: the user passed it)."""
    module, name = getattr(factory, "__module__", None), getattr(factory, "__qualname__", "")
    if not module or "<" in name or module == "__main__":
        raise TicketmarkError(f"{factory!r} cannot be named by an import string (define it "
                              "at module level in an importable module)")
    spec = f"{module}:{name}"
    trust(spec)
    return spec


def allowed(spec: str) -> bool:
    """Whether ``spec``'s code may be imported now (named by the user, or trust-all)."""
    try:
        return _TRUST_ALL or split_spec(spec)[0] in _TRUSTED
    except TicketmarkError:
        return False


def load(spec: str, what: str) -> tuple[Callable[..., Any], dict[str, Any]]:
    """The factory ``spec`` names and its keyword arguments, if the user allowed it."""
    target, kwargs = split_spec(spec)
    if not _TRUST_ALL and target not in _TRUSTED:
        raise TicketmarkError(
            f"the ticket names {what} code {target!r}; ticketmark imports code only when you "
            f"name it: pass --{'dataset' if what == 'data' else 'model'} '{target}' "
            "(or --trust-model-code), or in Python ticketmark.trust_model_code("
            f"'{target}')")
    module_name, _, attr = target.partition(":")
    # Like uvicorn's app strings: a module in the current folder imports without
    # PYTHONPATH (the console script's sys.path starts at its own folder, not here).
    here = os.getcwd()
    if here not in sys.path:
        sys.path.insert(0, here)
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except ImportError as exc:
        raise TicketmarkError(f"cannot import {module_name} for {target}: {exc}") from None
    except AttributeError:
        raise TicketmarkError(f"{module_name} has no {attr} (from {target})") from None
    if not callable(obj):
        raise TicketmarkError(f"{target} is not callable")
    return obj, kwargs


def call_with(factory: Callable[..., Any], kwargs: dict[str, Any], **offered: Any) -> Any:
    """Call ``factory(**kwargs)`` plus whichever ``offered`` arguments it accepts."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        params = {}
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    extra = {k: v for k, v in offered.items()
             if (takes_any or k in params) and k not in kwargs}
    try:
        return factory(**kwargs, **extra)
    except TypeError as exc:
        raise TicketmarkError(f"calling {getattr(factory, '__qualname__', factory)}: "
                              f"{exc}") from None
