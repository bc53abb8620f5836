"""The Content-Security-Policy header (``settings.KDWEB_CSP``) on every HTTP answer that has none of its own.

Django 5.2 has no CSP support of its own; the pages need none of django-csp's nonces either: every script is a
file of this site (the data a page embeds is ``json_script``, a JSON block that never runs).
"""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse


class ContentSecurityPolicyMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if settings.KDWEB_CSP:
            response.headers.setdefault("Content-Security-Policy", settings.KDWEB_CSP)
        return response
