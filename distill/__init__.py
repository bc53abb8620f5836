"""kdweb's distillation engine: feature-alignment knowledge distillation of transformer models.

A library (``distill.trainer.train``) and a CLI (``python -m distill``); it never imports Django.
"""
