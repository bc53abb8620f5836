"""Form fields built from the engine's pydantic models: one builder, so a field's type, choices, bounds and
help text are written once, in ``distill/config.py``.

``Literal`` becomes a choice (a tuple of ``Literal`` several), ``Field`` bounds become validators and the number
input's ``min``/``max``, ``description`` the help text, and an optional field (``| None``) a blank-allowed one.
The validators speak pydantic's words ("Input should be greater than 0"), the same as the engine's own check.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable
from typing import Annotated, Any, Literal

import annotated_types
import pydantic
from django import forms
from django.core.exceptions import ValidationError
from pydantic import BaseModel, TypeAdapter
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

# each bound -> its attribute, and the number input's attribute it sets (a strict bound names the end it excludes)
BOUNDS: dict[type, tuple[str, str]] = {
    annotated_types.Gt: ("gt", "min"),
    annotated_types.Ge: ("ge", "min"),
    annotated_types.Lt: ("lt", "max"),
    annotated_types.Le: ("le", "max"),
}


def _unwrap(annotation: Any, metadata: list[Any]) -> tuple[Any, list[Any], bool]:
    """The value's type without ``| None`` and ``Annotated``, its constraints, and whether None is allowed."""
    optional = False
    while True:
        origin = typing.get_origin(annotation)
        if origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            optional = optional or len(args) < len(typing.get_args(annotation))
            if len(args) != 1:
                return annotation, metadata, optional
            annotation = args[0]
        elif origin is Annotated:
            annotation, *extra = typing.get_args(annotation)
            for item in extra:
                metadata = [*metadata, *(item.metadata if isinstance(item, FieldInfo) else [item])]
        else:
            return annotation, metadata, optional


def choices_of(annotation: Any) -> tuple[Any, ...]:
    """The values of a ``Literal`` (``()`` for any other type)."""
    return typing.get_args(annotation) if typing.get_origin(annotation) is Literal else ()


def bound_validator(value_type: type, bound: Any) -> Callable[[Any], None]:
    """A form validator of one pydantic bound (``Gt(0)``), raising pydantic's own message."""
    adapter = TypeAdapter(Annotated[value_type, bound])

    def validate(value: Any) -> None:
        try:
            adapter.validate_python(value)
        except pydantic.ValidationError as exc:
            raise ValidationError(exc.errors()[0]["msg"], code="bound") from None

    return validate


def _number(value_type: type, bounds: list[Any], **kwargs: Any) -> forms.Field:
    integer = value_type is int
    attrs = {"step": "1" if integer else "any", "inputmode": "numeric" if integer else "decimal"}
    for bound in bounds:
        limit, attr = BOUNDS[type(bound)]
        attrs[attr] = str(getattr(bound, limit))
    field_class = forms.IntegerField if integer else forms.FloatField
    validators = [bound_validator(value_type, bound) for bound in bounds]
    return field_class(widget=forms.NumberInput(attrs=attrs), validators=validators, **kwargs)


def config_field(
    model: type[BaseModel],
    name: str,
    *,
    label: str | None = None,
    choice_labels: dict[str, str] | None = None,
    **overrides: Any,
) -> forms.Field:
    """The form field of ``model.name``: its type, choices, bounds and help from the model.

    ``label`` and ``choice_labels`` are the page's words (a choice without one shows its value);
    ``overrides`` (``required=False``, ``help_text=...``) win over what the model says.
    """
    info = model.model_fields[name]
    value_type, metadata, optional = _unwrap(info.annotation, list(info.metadata))
    kwargs: dict[str, Any] = {
        "label": label or name.replace("_", " ").capitalize(),
        "help_text": info.description or "",
        "required": not optional,
    }
    if info.default is not PydanticUndefined and info.default is not None:
        kwargs["initial"] = info.default
    kwargs.update(overrides)
    labelled = choice_labels or {}
    if values := choices_of(value_type):
        return forms.ChoiceField(choices=[(v, labelled.get(v, v)) for v in values], widget=forms.RadioSelect, **kwargs)
    if typing.get_origin(value_type) is tuple and (values := choices_of(typing.get_args(value_type)[0])):
        return forms.MultipleChoiceField(
            choices=[(v, labelled.get(v, v)) for v in values], widget=forms.CheckboxSelectMultiple, **kwargs
        )
    if value_type is bool:
        return forms.BooleanField(**{**kwargs, "required": False})
    if value_type in (int, float):
        return _number(value_type, [m for m in metadata if type(m) in BOUNDS], **kwargs)
    raise TypeError(f"{model.__name__}.{name}: no form field for {value_type!r}")


def config_fields(
    model: type[BaseModel],
    names: tuple[str, ...],
    labels: dict[str, str],
    choice_labels: dict[str, dict[str, str]] | None = None,
    prefix: str = "",
    **overrides: Any,
) -> dict[str, forms.Field]:
    """:func:`config_field` for each of ``names``, in that order, as form fields named ``prefix + name``."""
    choice_labels = choice_labels or {}
    return {
        prefix + name: config_field(
            model, name, label=labels.get(name), choice_labels=choice_labels.get(name), **overrides
        )
        for name in names
    }
