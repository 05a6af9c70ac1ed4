"""Checks of the values that arrive in control messages.

Every value the pool accepts passes through here, so a malformed message is refused
with a reason naming the field instead of failing somewhere deeper.
"""
from __future__ import annotations

from typing import Any


class Invalid(ValueError):
    """A request that can never be served as asked: wrong type, out of range, unknown id."""


class NotFound(Invalid):
    """The request names something the controller does not hold (a node, lease, quota...)."""


def integer(name: str, value: Any, *, low: int | None = None, high: int | None = None) -> int:
    # bool is an int subclass in Python; JSON true/false is never a count.
    if not isinstance(value, int) or isinstance(value, bool):
        raise Invalid(f"{name} must be an integer, not {_shown(value)}")
    if low is not None and value < low:
        raise Invalid(f"{name} must be >= {low}, not {value}")
    if high is not None and value > high:
        raise Invalid(f"{name} must be <= {high}, not {value}")
    return value


def optional_integer(name: str, value: Any, *, low: int | None = None,
                     high: int | None = None) -> int | None:
    return None if value is None else integer(name, value, low=low, high=high)


def text(name: str, value: Any) -> str:
    """A non-empty string (names, ids, addresses)."""
    if not isinstance(value, str) or not value:
        raise Invalid(f"{name} must be a non-empty string, not {_shown(value)}")
    return value


def optional_text(name: str, value: Any) -> str | None:
    return None if value is None else text(name, value)


def boolean(name: str, value: Any) -> bool:
    # Strict: "0", 0 and "false" are all truthy or ambiguous somewhere; JSON has booleans.
    if not isinstance(value, bool):
        raise Invalid(f"{name} must be true or false, not {_shown(value)}")
    return value


def ratio_factor(name: str, value: Any) -> float:
    """An overcommit factor: a number >= 1 (1 = no overcommit)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not value >= 1:
        raise Invalid(f"{name} must be a number >= 1, not {_shown(value)}")
    return float(value)


def seconds(name: str, value: Any, *, high: float) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value <= high:
        raise Invalid(f"{name} must be a number of seconds in [0, {high:g}], not {_shown(value)}")
    return float(value)


def choice(name: str, value: Any, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise Invalid(f"{name} must be one of {', '.join(allowed)}, not {_shown(value)}")
    return value


def texts(name: str, value: Any) -> tuple[str, ...]:
    """A list of non-empty strings, kept in order."""
    return tuple(text(f"{name}[{i}]", item) for i, item in enumerate(listing(name, value)))


def listing(name: str, value: Any) -> list:
    if not isinstance(value, list):
        raise Invalid(f"{name} must be a list, not {_shown(value)}")
    return value


def mapping(name: str, value: Any) -> dict:
    if not isinstance(value, dict):
        raise Invalid(f"{name} must be an object, not {_shown(value)}")
    return value


def _shown(value: Any) -> str:
    """The value as the sender wrote it, cut short so that a huge one cannot flood logs."""
    shown = repr(value)
    return shown if len(shown) <= 40 else shown[:37] + "..."
