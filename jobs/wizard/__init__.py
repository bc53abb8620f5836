"""The new-run wizard: teacher → student → layer map → data → losses & optimizer → queue → review.

May import the engine (``distill``) and the core (``jobs.models``, ``permissions``, ``selectors``, ``services``).
"""
