"""Values read from JSON or YAML files, named as a message about a malformed field names them."""

from __future__ import annotations

from typing import Any

_KINDS: dict[type, str] = {list: "a list", dict: "an object", str: "text"}


def json_kind(value: Any, shown: bool = False) -> str:
    """A value's kind: ``null``, ``a boolean``, ``a number``, ``text``, ``a list``, ``an object``; with ``shown``, a
    boolean or number also gives its value (``a number (42)``, ``a boolean (true)``)."""
    if value is None:
        return "null"
    if isinstance(value, bool | int | float):
        kind = "a boolean" if isinstance(value, bool) else "a number"
        return f"{kind} ({str(value).lower() if isinstance(value, bool) else value})" if shown else kind
    return _KINDS.get(type(value), type(value).__name__)


def is_positive_int(value: Any) -> bool:
    """An integer above zero (a boolean is not one, though Python counts it as an int)."""
    return isinstance(value, int) and not isinstance(value, bool) and value > 0
