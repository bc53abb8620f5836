"""Pages of accounts: logging in, the open sign-up (``/signup/``, only with ``KDWEB_SIGNUP``), changing and
resetting a password (Django's views, kdweb's templates in ``registration/``). Joining by an invitation's link
is ``jobs.pages.teams.invitation_accept``, which uses the sign-up form and :func:`log_in` of this module.

Logins stay throttled by django-axes: a new account is logged in without a password check (it was just set),
and a password set from a reset mail lifts that username's lockout.
"""

from __future__ import annotations

from axes.utils import reset as axes_reset
from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth import views as auth_views
from django.contrib.auth.forms import UserCreationForm
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from jobs import services

# axes's backend only counts failures: the session names the one that knows the user
MODEL_BACKEND = "django.contrib.auth.backends.ModelBackend"
SIGNUP_CLOSED = "Sign-up is closed here: ask an owner of a team for an invitation."


class SignupForm(UserCreationForm):
    """Username and password twice, checked as Django checks them (taken names, the password validators);
    the account itself is made by ``services.account_create``."""

    class Meta(UserCreationForm.Meta):
        fields = ("username",)


def add_service_errors(form: SignupForm, exc: ValidationError) -> None:
    """A service's field errors onto the form's fields (the password's onto its confirmation, as Django's)."""
    for field, errors in exc.message_dict.items():
        form.add_error("password2" if field == "password" else field if field in form.fields else None, errors)


def log_in(request: HttpRequest, user) -> None:
    login(request, user, backend=MODEL_BACKEND)


class Login(auth_views.LoginView):
    """Django's login, whose page links to the sign-up when it is open."""

    def get_context_data(self, **kwargs):
        return {**super().get_context_data(**kwargs), "signup_open": settings.KDWEB_SIGNUP}


class PasswordResetConfirm(auth_views.PasswordResetConfirmView):
    def form_valid(self, form):
        response = super().form_valid(form)
        # whoever reads the mailbox owns the account: earlier wrong guesses no longer lock it
        axes_reset(username=form.user.get_username())
        return response


@require_http_methods(["GET", "POST"])
def signup(request: HttpRequest) -> HttpResponse:
    """Anyone makes an account (``KDWEB_SIGNUP``), then creates a team or waits for an invitation. It takes no
    e-mail address: one nobody confirmed would let its writer claim invitations to it (an invitation to a
    known address joins at once); an administrator sets a confirmed one."""
    if not settings.KDWEB_SIGNUP:
        raise Http404(SIGNUP_CLOSED)
    if request.user.is_authenticated:
        return redirect("teams")
    form = SignupForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            user = services.account_create(username=data["username"], password=data["password1"])
        except ValidationError as exc:
            add_service_errors(form, exc)
        else:
            log_in(request, user)
            messages.success(request, f"Welcome, {user.get_username()}. Create a team, or ask an owner to invite you.")
            return redirect("teams")
    return render(request, "registration/signup.html", {"form": form})
