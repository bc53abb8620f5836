"""The models' choices that name engine values: Django keeps them as literals (its migrations record them), so
this pins them to the engine's config, the one place they are defined."""

from typing import get_args

from distill.config import Kind, Task
from jobs.models import Run, Teacher


def test_run_kinds_are_the_engine_kinds():
    assert sorted(Run.Kind.values) == sorted(get_args(Kind))


def test_teacher_tasks_are_the_engine_tasks():
    assert sorted(Teacher.Task.values) == sorted(get_args(Task))
