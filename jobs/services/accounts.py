"""Accounts: creating a user (from an invitation's link or the open sign-up) and sending mail that may fail."""

from __future__ import annotations

import logging

from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.core.mail import send_mail
from django.db import IntegrityError, transaction

logger = logging.getLogger(__name__)

USERNAME_TAKEN = "A user with that username already exists."


@transaction.atomic
def account_create(*, username: str, password: str, email: str = ""):
    """A new active user, checked as Django's own forms check one: the username by the user model's validators
    and unique whatever its case, the password by ``AUTH_PASSWORD_VALIDATORS`` (field errors ``username`` and
    ``password``). The forms of the pages check the same first; this holds for every caller, and against two
    sign-ups of one name at once (the unique index decides, and the loser gets the same field error)."""
    User = get_user_model()
    user = User(username=username.strip(), email=email)
    errors: dict[str, list[str]] = {}
    try:
        user.clean_fields(exclude=[f.name for f in User._meta.fields if f.name != User.USERNAME_FIELD])
    except ValidationError as exc:
        errors.update(exc.message_dict)
    if User.objects.filter(username__iexact=user.username).exists():
        errors.setdefault("username", []).append(USERNAME_TAKEN)
    try:
        validate_password(password, user=user)
    except ValidationError as exc:
        errors["password"] = exc.messages
    if errors:
        raise ValidationError(errors)
    user.set_password(password)
    try:
        with transaction.atomic():
            user.save()
    except IntegrityError as exc:  # the unique index: another sign-up took the name meanwhile
        raise ValidationError({"username": [USERNAME_TAKEN]}) from exc
    return user


def mail_send(subject: str, body: str, to: str) -> bool:
    """Send one mail through the configured backend; ``False`` (logged) when it could not leave.

    A mail is a courtesy around a request that has done its work (an invitation saved, its link shown): an
    unreachable SMTP server (``OSError``, which ``SMTPException`` is) or a mail folder that cannot be written
    must not turn that request into an error page.
    """
    try:
        send_mail(subject, body, None, [to])
    except (OSError, ImproperlyConfigured):
        logger.warning("could not send the mail %r to %s", subject, to, exc_info=True)
        return False
    return True
