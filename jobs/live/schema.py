"""The one check of a JSON payload against a TypedDict: keys required and optional, each field's type (scalars,
unions, ``Literal``, lists, ``[a, b]`` arrays, objects, nested records) and the rules ``Annotated`` adds to it
(``Range``, ``OneOf``, ``OnePer``). Errors name the field and say what it must be. Imports nothing of jobs.
"""

import functools
import types
import typing
from typing import Annotated, Any, Literal, NamedTuple, NotRequired, Union


class Range(NamedTuple):
    """A number from ``low`` to ``high``, both included."""

    low: float
    high: float

    def fits(self, value: Any, record: dict) -> bool:
        return self.low <= value <= self.high

    def says(self, expected: str) -> str:
        return f"{expected} from {self.low:g} to {self.high:g}"


class OneOf(NamedTuple):
    """One of ``values`` (choices that live elsewhere, so no ``Literal``)."""

    values: tuple[str, ...]

    def fits(self, value: Any, record: dict) -> bool:
        return value in self.values

    def says(self, expected: str) -> str:
        return f"one of {list(self.values)}"


class OnePer(NamedTuple):
    """A list with one item per item of the record's list ``key``."""

    key: str

    def fits(self, value: Any, record: dict) -> bool:
        return len(value) == len(record[self.key])

    def says(self, expected: str) -> str:
        return f"{expected}, one per {self.key.removesuffix('s')}"


_SCALARS: dict[type, tuple[str, str]] = {
    int: ("an integer", "integers"),
    float: ("a number", "numbers"),
    str: ("a string", "strings"),
    bool: ("a boolean", "booleans"),
    type(None): ("null", "nulls"),
}


@functools.cache
def _fields(schema: type) -> dict[str, Any]:
    """A TypedDict's field annotations, ``NotRequired`` unwrapped (its keys say what is optional)."""
    hints = typing.get_type_hints(schema, include_extras=True)
    return {k: typing.get_args(t)[0] if typing.get_origin(t) is NotRequired else t for k, t in hints.items()}


def _fits_scalar(value: Any, tp: type) -> bool:
    if tp is float:  # JSON numbers: an int is a float; a bool is neither
        return isinstance(value, int | float) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return value is None if tp is type(None) else isinstance(value, tp)


def _expected(tp: Any, plural: bool = False) -> str:
    """What ``tp`` asks for, in words: ``a list of integers``, ``a number from 0 to 1``..."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Annotated:
        words = _expected(args[0], plural)
        for rule in tp.__metadata__:
            words = rule.says(words)
        return words
    if origin in (Union, types.UnionType):
        return " or ".join(_expected(arm, plural) for arm in args)
    if origin is Literal:
        return f"one of {list(args)}"
    if origin is list:
        return f"{'lists' if plural else 'a list'} of {_expected(args[0], plural=True)}"
    if origin is tuple:
        return f"[{', '.join(_expected(arm) for arm in args)}]"
    if origin is dict or typing.is_typeddict(tp):
        return "objects" if plural else "an object"
    return _SCALARS[tp][plural]


def _fits(value: Any, tp: Any, record: dict) -> bool:
    """Whether ``value`` is of type ``tp`` (scalars, lists and tuples of them; not records)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Annotated:
        return _fits(value, args[0], record) and all(rule.fits(value, record) for rule in tp.__metadata__)
    if origin in (Union, types.UnionType):
        return any(_fits(value, arm, record) for arm in args)
    if origin is Literal:
        return value in args
    if origin is list:
        return isinstance(value, list) and all(_fits(item, args[0], record) for item in value)
    if origin is tuple:  # JSON has arrays only
        fit = zip(value, args, strict=True) if isinstance(value, list) and len(value) == len(args) else None
        return fit is not None and all(_fits(item, arm, record) for item, arm in fit)
    return _fits_scalar(value, tp)


def _mismatch(value: Any, tp: Any, name: str, record: dict) -> str | None:
    """Why ``value`` (the field ``name`` of ``record``) is not of type ``tp``; None when it is. Records
    (TypedDicts), lists of records and objects are checked item by item, to say which one is wrong."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if typing.is_typeddict(tp):
        return keys_mismatch(value, tp, name) or fields_mismatch(value, tp, f"{name}'s ")
    if origin is list and typing.is_typeddict(args[0]):
        if not isinstance(value, list):
            return f"{name} must be {_expected(tp)}"
        item = f"each {name.removesuffix('s')}"
        return next((e for e in (_mismatch(v, args[0], item, record) for v in value) if e), None)
    if origin is dict:
        if not isinstance(value, dict):
            return f"{name} must be {_expected(tp)}"
        for key, item in value.items():
            if not isinstance(key, str):
                return f"{name} must have string keys"
            if error := _mismatch(item, args[1], f"{name} {key!r}", record):
                return error
        return None
    if _fits(value, tp, record):
        return None
    boolean = isinstance(value, bool) and tp in (int, float)
    return f"{name} must be {_expected(tp)}" + (f" (booleans are not {_SCALARS[tp][1]})" if boolean else "")


def keys_mismatch(value: Any, schema: type, name: str) -> str | None:
    """Why ``value`` is not a ``schema`` record by its keys: not an object, a key missing or unknown."""
    if not isinstance(value, dict):
        return f"{name} must be an object"
    keys, required = set(value), schema.__required_keys__
    if missing := required - keys:
        return f"{name} lacks {sorted(missing)}"
    if extra := keys - required - schema.__optional_keys__:
        return f"{name} has unknown keys {sorted(extra)}"
    return None


def fields_mismatch(record: dict, schema: type, prefix: str) -> str | None:
    """The first field of ``record`` whose value is not of its type in ``schema``, named ``prefix + key``."""
    fields = _fields(schema).items()
    return next((e for k, tp in fields if k in record and (e := _mismatch(record[k], tp, prefix + k, record))), None)
