"""``{{ value|number }}`` and ``{{ value|compact }}``: the filters of ``jobs.formatting``."""

from __future__ import annotations

from django import template

from jobs.formatting import compact, number

register = template.Library()
register.filter("number", number)
register.filter("compact", compact)
