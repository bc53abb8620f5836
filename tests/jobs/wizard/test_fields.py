"""The wizard's form fields, built from the engine's pydantic models (``jobs.wizard.fields``): a ``Literal``
becomes choices, bounds become validators with pydantic's messages (and the input's min/max), the
description becomes help text; and a loss term added to the engine's per-kind table shows in the training form.
"""

from __future__ import annotations

from typing import Annotated, Literal

import pytest
from django import forms
from pydantic import BaseModel, Field

from distill.config import KIND_TERMS, LM_METRICS, GenerationConfig, LossConfig, OptimConfig, StudentConfig
from jobs.models import Teacher
from jobs.wizard.fields import config_field, config_fields
from jobs.wizard.forms import TrainingStepForm


class Toy(BaseModel):
    mode: Literal["fast", "slow"] = Field("fast", description="How it runs.")
    size: Annotated[int, Field(gt=0, le=10)] = Field(3, description="How big.")
    ratio: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.5
    limit: Annotated[int, Field(gt=0)] | None = None


def bound_form(model: type[BaseModel], *names: str, **data: str) -> forms.Form:
    form_class = type("ToyForm", (forms.Form,), config_fields(model, names, {}))
    form = form_class(data=data)
    form.is_valid()
    return form


def test_a_literal_becomes_its_choices_with_labels_where_given():
    field = config_field(Toy, "mode", label="Mode", choice_labels={"slow": "Slowly"})
    assert isinstance(field, forms.ChoiceField) and isinstance(field.widget, forms.RadioSelect)
    assert field.choices == [("fast", "fast"), ("slow", "Slowly")]
    assert field.initial == "fast" and field.label == "Mode"
    scheduler = config_field(OptimConfig, "scheduler")
    assert [value for value, _ in scheduler.choices] == ["linear", "cosine", "constant"]
    assert bound_form(Toy, "mode", mode="medium").errors["mode"][0].startswith("Select a valid choice")


def test_a_tuple_of_literals_becomes_a_multiple_choice():
    field = config_field(GenerationConfig, "metrics")
    assert isinstance(field, forms.MultipleChoiceField)
    assert [value for value, _ in field.choices] == list(LM_METRICS)


@pytest.mark.parametrize(
    ("name", "value", "error"),
    [
        ("size", "0", "Input should be greater than 0"),
        ("size", "11", "Input should be less than or equal to 10"),
        ("ratio", "1", "Input should be less than 1"),
        ("ratio", "-0.5", "Input should be greater than or equal to 0"),
        ("limit", "-3", "Input should be greater than 0"),
    ],
)
def test_bounds_reject_out_of_range_values_at_the_field(name, value, error):
    assert bound_form(Toy, name, **{name: value}).errors[name] == [error]


def test_bounds_accept_values_in_range_and_set_the_inputs_limits():
    form = bound_form(Toy, "size", "ratio", "limit", size="10", ratio="0", limit="")
    assert form.is_valid(), form.errors
    assert form.cleaned_data == {"size": 10, "ratio": 0.0, "limit": None}
    attrs = config_field(Toy, "size").widget.attrs
    assert (attrs["min"], attrs["max"], attrs["step"]) == ("0", "10", "1")
    assert config_field(Toy, "ratio").widget.attrs["step"] == "any"


def test_the_description_becomes_help_text_and_none_makes_a_field_optional():
    assert config_field(Toy, "size").help_text == "How big."
    assert config_field(LossConfig, "attention").help_text == LossConfig.model_fields["attention"].description
    assert config_field(Toy, "limit").required is False and config_field(Toy, "size").required is True
    assert config_field(StudentConfig, "hidden_size").required is False
    assert config_field(StudentConfig, "layers").required is True
    assert config_field(Toy, "size", help_text="Mine.").help_text == "Mine."


class ContrastiveLoss(LossConfig):
    contrastive: Annotated[float, Field(ge=0.0, le=5.0)] = Field(0.5, description="InfoNCE between pooled states.")


class ContrastiveTrainingForm(TrainingStepForm):
    loss_model = ContrastiveLoss


def training_form(**data: str) -> TrainingStepForm:
    teacher = Teacher(task=Teacher.Task.CLASSIFICATION)
    return ContrastiveTrainingForm(data or None, kind="kd_feature", teacher=teacher, arch=None)


def test_a_loss_term_added_to_the_engines_table_appears_in_the_training_form(monkeypatch):
    assert "contrastive" not in training_form().fields
    monkeypatch.setitem(KIND_TERMS, "kd_feature", (*KIND_TERMS["kd_feature"], "contrastive"))
    field = training_form().fields["contrastive"]
    assert isinstance(field, forms.FloatField)
    assert field.help_text == "InfoNCE between pooled states." and field.initial == 0.5
    assert field.label == "Contrastive"  # no label written for it: its name
    form = training_form(contrastive="7")
    form.is_valid()
    assert form.errors["contrastive"] == ["Input should be less than or equal to 5"]
    # the other kinds do not train with it
    assert "contrastive" not in ContrastiveTrainingForm(kind="kd_logits", teacher=Teacher(), arch=None).fields
