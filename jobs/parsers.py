"""The REST API's body parser: JSON of bounded size (413 beyond) and depth (400), never a 500.

DRF's ``JSONParser`` reads a body of any length, and one nested a few thousand levels deep makes ``json.load``
raise ``RecursionError``. The limit is ``KDWEB_API_MAX_BODY_BYTES`` (1 MiB: names, ids and a run's sections
take a few kB); the depth is ``jobs.safejson.MAX_DEPTH``.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from rest_framework import status
from rest_framework.exceptions import APIException, ParseError
from rest_framework.parsers import JSONParser
from rest_framework.utils.json import strict_constant

from jobs import safejson


class BodyTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "The request body is too large."
    default_code = "too_large"


class BoundedJSONParser(JSONParser):
    """DRF's JSON parser with the size and depth limits of this module."""

    def parse(self, stream, media_type=None, parser_context=None) -> Any:
        limit = settings.KDWEB_API_MAX_BODY_BYTES
        body = stream.read(limit + 1) if stream is not None else b""
        if len(body) > limit:
            raise BodyTooLarge(f"The request body is larger than {limit:,} bytes.")
        try:
            parse_constant = strict_constant if self.strict else None  # NaN, Infinity: not JSON
            return safejson.loads(body.decode("utf-8"), parse_constant=parse_constant)
        except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError is a ValueError
            raise ParseError(f"JSON parse error - {exc}") from None
