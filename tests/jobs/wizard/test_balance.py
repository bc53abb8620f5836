"""The review's first-steps preview (loss balance and step time), computed by a real Celery worker of the chosen
queue, and the estimate it calibrates; and the message when no worker answers in time. The worker reads the
test database, so the data are committed (``transaction=True``).
"""

from __future__ import annotations

import pytest
import yaml
from django.urls import reverse

from distill.balance import first_batch_terms
from distill.config import parse_config
from jobs.models import Membership
from tests.jobs.wizard.test_wizard import STUDENT, TRAINING, url, walk

pytestmark = pytest.mark.django_db(transaction=True)

TERMS = ("task", "output", "feature", "attention")
# a random student: its hidden states are far from the tiny random teacher's
RANDOM_STUDENT = {**STUDENT, "init": "random"}


def check(client) -> str:
    """Press "Try the first steps"; the review it leads to, as text."""
    response = client.post(reverse("wizard_balance"))
    assert response.status_code == 302 and response["Location"] == url("review")
    review = client.get(url("review"))
    assert review.status_code == 200
    return review.content.decode()


def basis(page: str) -> str:
    """What the review says its time estimate rests on."""
    return page[page.index('data-estimate="basis"') :].split("</p>")[0]


def choose_queue(client, queue: str) -> None:
    response = client.post(url("queue"), {"queue": queue})
    assert response.status_code == 302, response.context["form"].errors


def test_the_review_shows_each_terms_share_from_the_queues_worker(
    celery_worker_process, login, owner, tiny_teacher, tiny_dataset
):
    client = login(owner)
    walk(client, tiny_teacher, tiny_dataset)
    choose_queue(client, celery_worker_process.queue)
    before = client.get(url("review"))
    assert "Try the first steps" in before.content.decode() and "term-task" not in before.content.decode()
    assert "Try the first steps below" in basis(before.content.decode())

    page = check(client)
    assert "Preview unavailable" not in page, page[page.find("loss-balance") :][:2000]
    assert "Try again" in page
    # the worker's numbers are the engine's for the config the review shows
    expected = first_batch_terms(parse_config(yaml.safe_load(before.context["config_yaml"])))
    assert set(expected) == set(TERMS)
    for term, values in expected.items():
        row = page[page.index(f'class="term-{term}"') :].split("</tr>")[0]
        assert f"{values['value']:.4g}" in row and f"{values['share']:.1%}" in row, (row, values)
    # the steps it timed calibrate the estimate's time per step (no run of this teacher has finished)
    assert "A training step took" in page and "first steps took on a worker" in basis(page)
    # and the study's other runs (kd_logits, no_kd) on the same worker: the study's time moves with them
    study = client.get(url("review")).context["study_time"]
    assert study["runs"] == 3 and study["work_s"] != before.context["study_time"]["work_s"]

    # any change of choice makes the preview stale: the review offers the check again
    client.post(url("training"), {**TRAINING, "temperature": 3})
    choose_queue(client, celery_worker_process.queue)
    assert "term-task" not in client.get(url("review")).content.decode()


def test_a_fine_tune_gets_its_step_time_without_terms(celery_worker_process, login, owner, tiny_backbone, tiny_dataset):
    client = login(owner)
    walk(client, tiny_backbone, tiny_dataset, kind="teacher_finetune")
    choose_queue(client, celery_worker_process.queue)
    before = client.get(url("review"))
    step_before = before.context["estimate"].seconds_per_step
    page = check(client)
    assert "Preview unavailable" not in page and "term-task" not in page
    after = client.get(url("review"))
    timed = after.context["balance"]["step_s"]
    assert timed > 0 and "first steps took on a worker" in basis(page)
    # the estimate's step is the measured one, the validations' share aside
    assert after.context["estimate"].seconds_per_step >= timed != step_before


def test_it_warns_when_one_term_dominates(celery_worker_process, login, owner, tiny_teacher, tiny_dataset):
    client = login(owner)
    training = {**TRAINING, "feature": 10_000, "feature_variant": "mse"}
    walk(client, tiny_teacher, tiny_dataset, student=RANDOM_STUDENT, training=training)
    choose_queue(client, celery_worker_process.queue)
    page = check(client)
    assert "This objective is unbalanced" in page
    assert "the feature term is" in page and "dominates" in page


def test_no_worker_on_the_queue_is_a_clear_message_not_an_error(login, owner, tiny_teacher, tiny_dataset, settings):
    settings.KDWEB_PREVIEW_TIMEOUT_S = 2.0
    client = login(owner)
    walk(client, tiny_teacher, tiny_dataset)  # any worker: the default queue, which no test worker consumes
    page = check(client)
    assert (
        f"Preview unavailable (no worker of the queue “{settings.CELERY_TASK_DEFAULT_QUEUE}” answered within 2 s"
        in (page)
    )
    assert "term-task" not in page


def test_viewers_cannot_use_a_worker_for_it(login, owner, team, tiny_teacher, tiny_dataset):
    client = login(owner)
    walk(client, tiny_teacher, tiny_dataset)
    Membership.objects.filter(user=owner, team=team).update(role=Membership.Role.VIEWER)
    assert client.post(reverse("wizard_balance")).status_code == 403
