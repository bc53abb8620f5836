"""The REST API (``/api/v1/``): serializers, viewsets, the OpenAPI schema's hand-written parts, and URLs.

May import the engine (``distill``) and the core (``jobs.models``, ``permissions``, ``selectors``, ``services``).
"""
