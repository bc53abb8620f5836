"""kdweb settings, all from environment variables with defaults that work for a first local run.

DATABASE_URL   PostgreSQL (e.g. postgres://user@host:5432/kdweb); SQLite in KDWEB_DATA_DIR when unset.
REDIS_URL      Celery broker and channel layer (redis://host:port/db or unix:///path/to/socket); `make up`
               starts an embedded Redis when unset. CELERY_BROKER_URL overrides the broker alone.
KDWEB_DEBUG    "True"/"False" (default True). With False, DJANGO_SECRET_KEY must be set.
KDWEB_SECURE   "1" behind a TLS-terminating proxy (README, "Deployment"): HTTPS only, secure cookies, HSTS
               (KDWEB_HSTS_SECONDS, default a year); the proxy must set X-Forwarded-Proto.
KDWEB_LOGIN_FAILURE_LIMIT, KDWEB_LOGIN_LOCKOUT_MIN  wrong passwords for one username from one address before
               its logins are refused (default 10), and for how long (minutes, default 15).
KDWEB_CSP      the Content-Security-Policy header of every answer (default: everything from this site only).
KDWEB_DATA_DIR where uploads, checkpoints, exported students and the SQLite database live (default ./var).
KDWEB_IMPORT_ROOTS     folders (os.pathsep-separated) under which teachers and data sets may be registered by
               local path; empty by default: uploads and packages only.
KDWEB_HEARTBEAT_S      seconds between a worker's heartbeats on its run (default 5).
KDWEB_STALE_AFTER_S    a running run without a heartbeat for this long is marked interrupted (default 30).
KDWEB_WATCHDOG_EVERY_S how often `manage.py watchdog` looks for such runs, and for queued runs never sent to the
               broker (default 10).
KDWEB_DB_RETRY_S       how long a worker retries a write over a lost database connection (default 60).
KDWEB_MEASURE_CAP_S    seconds a side-by-side measurement of a study's models may take (default 120).
KDWEB_WORKER_MEMORY_BYTES the memory a run may use on the workers, for the wizard's estimate (default: what
               this host has available, which is right when web and worker share a machine).
KDWEB_EMAIL_BACKEND    how mail (invitations, password resets) leaves: console (printed; the default with
               KDWEB_DEBUG), file (one file per mail in KDWEB_MAIL_DIR, default KDWEB_DATA_DIR/mail; the default
               otherwise), smtp (the default when EMAIL_HOST is set: EMAIL_HOST, EMAIL_PORT, EMAIL_HOST_USER,
               EMAIL_HOST_PASSWORD, EMAIL_USE_TLS, EMAIL_USE_SSL, EMAIL_TIMEOUT), or a backend's dotted path.
               DEFAULT_FROM_EMAIL is the sender.
KDWEB_INVITATION_DAYS  days an invitation link stays valid (default 7).
KDWEB_SIGNUP   "1" opens /signup/ to anyone (default 0: accounts come by invitation or from an administrator).
"""

import os
from datetime import timedelta
from pathlib import Path

import dj_database_url
import plotly
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def envbool(name: str, default: str) -> bool:
    value = os.environ.get(name, default)
    if value not in ("True", "False", "1", "0"):
        raise ImproperlyConfigured(f"{name} must be True or False (or 1 or 0), got {value!r}")
    return value in ("True", "1")


DEBUG = envbool("KDWEB_DEBUG", "True")
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("DJANGO_SECRET_KEY must be set when KDWEB_DEBUG is False")
    SECRET_KEY = "insecure-local-only-key"  # DEBUG only: never used by a deployment
ALLOWED_HOSTS = os.environ.get("KDWEB_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]").split(",")

INSTALLED_APPS = [
    "daphne",
    "channels",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI's files, served from the package rather than a CDN
    "axes",  # login throttling
    "jobs",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "kdweb.csp.ContentSecurityPolicyMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "axes.middleware.AxesMiddleware",  # last, as django-axes requires
]
ROOT_URLCONF = "kdweb.urls"
ASGI_APPLICATION = "kdweb.asgi.application"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "frontend" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATA_DIR = Path(os.environ.get("KDWEB_DATA_DIR", BASE_DIR / "var"))
DATABASES = {
    "default": dj_database_url.config(
        default=f"sqlite:///{DATA_DIR / 'kdweb.sqlite3'}", conn_max_age=60, conn_health_checks=True
    )
}
if DATABASES["default"]["ENGINE"].endswith("postgresql"):
    # a reconnect to a database that is down or unreachable fails within seconds rather than hanging
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault("connect_timeout", 10)
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    # The zero-setup database is written by the worker while the web process reads it: WAL lets both go on.
    # IMMEDIATE: a transaction takes the write lock when it begins. A deferred one that read first (the send of
    # a run) cannot upgrade once the worker has written meanwhile, and fails at once with "database is locked"
    # instead of waiting its turn.
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 20,
        "init_command": "PRAGMA journal_mode=WAL;",
        "transaction_mode": "IMMEDIATE",
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "runs"
LOGOUT_REDIRECT_URL = "login"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": f"django.contrib.auth.password_validation.{name}"}
    for name in (
        "UserAttributeSimilarityValidator",
        "MinimumLengthValidator",
        "CommonPasswordValidator",
        "NumericPasswordValidator",
    )
]
# Accounts come from an invitation's link (jobs.pages.teams), an administrator (/admin/), or, with
# KDWEB_SIGNUP, /signup/ (jobs.pages.accounts). An invitation link is valid KDWEB_INVITATION_DAYS days.
KDWEB_SIGNUP = envbool("KDWEB_SIGNUP", "0")
KDWEB_INVITATION_DAYS = float(os.environ.get("KDWEB_INVITATION_DAYS", 7))
PASSWORD_RESET_TIMEOUT = 3 * 24 * 3600  # a reset link works for three days
# django-axes: after KDWEB_LOGIN_FAILURE_LIMIT wrong passwords for one username from one address, that pair's
# logins answer 429 (registration/locked.html) for KDWEB_LOGIN_LOCKOUT_MIN minutes. The address is REMOTE_ADDR:
# behind a proxy, daphne's --proxy-headers sets it from the proxy's X-Forwarded-For (README, "Deployment").
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]
AXES_FAILURE_LIMIT = int(os.environ.get("KDWEB_LOGIN_FAILURE_LIMIT", 10))
AXES_COOLOFF_TIME = timedelta(minutes=float(os.environ.get("KDWEB_LOGIN_LOCKOUT_MIN", 15)))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_LOCKOUT_TEMPLATE = "registration/locked.html"
AXES_RESET_ON_SUCCESS = True
AXES_VERBOSE = False

# Every page loads its scripts, styles, fonts and data from this site only (kdweb.csp). Styles may be inline:
# progress bars set their width in a style attribute, and Plotly and htmx add <style> rules.
KDWEB_CSP = os.environ.get(
    "KDWEB_CSP",
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
    "font-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'; "
    "frame-ancestors 'none'",
)

# KDWEB_SECURE: served over HTTPS by a TLS-terminating proxy (nginx, README) that sets X-Forwarded-Proto.
KDWEB_SECURE = envbool("KDWEB_SECURE", "False")
if KDWEB_SECURE:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = True
    SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = int(os.environ.get("KDWEB_HSTS_SECONDS", 365 * 24 * 3600))

# E-mail through Django's backends (KDWEB_EMAIL_BACKEND, above). A send that fails is logged and told to the
# user, never an error page: EMAIL_TIMEOUT bounds how long an unreachable SMTP server holds a request.
EMAIL_BACKENDS = {
    "console": "django.core.mail.backends.console.EmailBackend",
    "file": "django.core.mail.backends.filebased.EmailBackend",
    "smtp": "django.core.mail.backends.smtp.EmailBackend",
}
EMAIL_HOST = os.environ.get("EMAIL_HOST", "")
_email_backend = os.environ.get("KDWEB_EMAIL_BACKEND") or ("smtp" if EMAIL_HOST else "console" if DEBUG else "file")
EMAIL_BACKEND = EMAIL_BACKENDS.get(_email_backend, _email_backend)
EMAIL_FILE_PATH = Path(os.environ.get("KDWEB_MAIL_DIR", DATA_DIR / "mail"))
EMAIL_HOST = EMAIL_HOST or "localhost"
EMAIL_PORT = int(os.environ.get("EMAIL_PORT", 25))
EMAIL_HOST_USER = os.environ.get("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = os.environ.get("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = envbool("EMAIL_USE_TLS", "False")
EMAIL_USE_SSL = envbool("EMAIL_USE_SSL", "False")
EMAIL_TIMEOUT = float(os.environ.get("EMAIL_TIMEOUT", 10))
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "kdweb <kdweb@localhost>")

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "var" / "static"
# plotly.js ships inside the plotly package: serve that file rather than a CDN copy.
STATICFILES_DIRS = [BASE_DIR / "frontend" / "static", ("plotly", Path(plotly.__file__).parent / "package_data")]

MEDIA_ROOT = DATA_DIR / "media"
MEDIA_URL = "media/"
RUNS_DIR = DATA_DIR / "runs"  # working folders of runs (checkpoints), on the worker's host
# Crash detection (jobs.worker.progress heartbeats, services.runs_interrupt): stale must exceed a few heartbeats.
KDWEB_HEARTBEAT_S = float(os.environ.get("KDWEB_HEARTBEAT_S", 5))
KDWEB_STALE_AFTER_S = float(os.environ.get("KDWEB_STALE_AFTER_S", 30))
KDWEB_WATCHDOG_EVERY_S = float(os.environ.get("KDWEB_WATCHDOG_EVERY_S", 10))
KDWEB_DB_RETRY_S = float(os.environ.get("KDWEB_DB_RETRY_S", 60))  # jobs.worker.retry
KDWEB_MEASURE_CAP_S = float(os.environ.get("KDWEB_MEASURE_CAP_S", 120))  # jobs.worker.tasks.measure_side_by_side
# The review's first-batch loss preview waits this long for a worker of the queue (jobs.services.balance).
KDWEB_PREVIEW_TIMEOUT_S = float(os.environ.get("KDWEB_PREVIEW_TIMEOUT_S", 120))
# Local paths a member may register (jobs.services.import_path_check): only under these operator-chosen folders.
KDWEB_IMPORT_ROOTS = [Path(p) for p in os.environ.get("KDWEB_IMPORT_ROOTS", "").split(os.pathsep) if p.strip()]
UPLOAD_MAX_BYTES = int(os.environ.get("KDWEB_UPLOAD_MAX_BYTES", 20 * 2**20))
# The wizard warns, with fixes, when a run's estimated peak memory exceeds this (None: this host's available).
KDWEB_WORKER_MEMORY_BYTES = (
    int(os.environ["KDWEB_WORKER_MEMORY_BYTES"]) if os.environ.get("KDWEB_WORKER_MEMORY_BYTES") else None
)
# An API body (JSON: names, ids, a run's sections) is small; larger ones answer 413 (jobs.parsers).
KDWEB_API_MAX_BODY_BYTES = int(os.environ.get("KDWEB_API_MAX_BODY_BYTES", 2**20))
DATA_UPLOAD_MAX_MEMORY_SIZE = UPLOAD_MAX_BYTES + 2**20

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
# kombu spells a unix socket redis+socket:///path where redis-py and channels-redis spell it unix:///path.
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL") or (
    "redis+socket://" + REDIS_URL.removeprefix("unix://") if REDIS_URL.startswith("unix://") else REDIS_URL
)
# Live events (jobs.live.events) go through Redis so a worker process can reach every web process's sockets.
# channels-redis passes a host's keys to redis-py's connection pool, for redis:// and unix:// alike. Each
# socket's receive blocks in BZPOPMIN for 5 s, which is also redis-py's default read timeout: the timeout
# must be longer, or every idle socket is closed with 1011. Every socket opened at once takes a connection
# for its group_add, and redis-py refuses more than 100 by default: a storm of viewers needs more.
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {"hosts": [{"address": REDIS_URL, "socket_timeout": 15, "max_connections": 1000}]},
    }
}
CELERY_TASK_DEFAULT_QUEUE = os.environ.get("KDWEB_DEFAULT_QUEUE", "default")
CELERY_TASK_SERIALIZER = CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_WORKER_PREFETCH_MULTIPLIER = 1  # one training job at a time per worker process
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_TASK_IGNORE_RESULT = True  # results live in the database, not the broker
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True

# The REST API (jobs/api/, /api/v1/): a token (the CLI client) or the browser's session; JSON only.
REST_FRAMEWORK = {
    # token first: an anonymous request gets 401 with "WWW-Authenticate: Token"
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["jobs.parsers.BoundedJSONParser"],  # size and depth limits
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.LimitOffsetPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "jobs.api.views.exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "kdweb API",
    "DESCRIPTION": "Teachers, data sets, distillation runs, their metric series and exported students.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums", "jobs.api.schema.document_errors"],
    "ENUM_NAME_OVERRIDES": {"RunKindEnum": "jobs.models.Run.Kind", "ArtifactKindEnum": "jobs.models.Artifact.Kind"},
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("KDWEB_LOG_LEVEL", "INFO")},
}
