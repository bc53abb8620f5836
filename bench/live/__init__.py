"""The live-view benchmark (``python -m bench.live``): setup, its four parts, and the page of results.

May import ``bench.output``, ``distill`` and ``kdweb``; Django and ``jobs`` only inside functions, never at import.
"""
