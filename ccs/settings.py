"""CCS settings: everything comes from the environment through the strict readers in ccs.env."""

from datetime import timedelta
from pathlib import Path

import dj_database_url

from .broker import is_redis, transport_for
from .env import (
    django_secret_key,
    env_bool,
    env_int,
    env_list,
    env_public_keys,
    env_str,
    env_token,
    secret_file,
)
from .openapi import ENUM_NAMES

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("CCS_VAR_DIR", str(BASE_DIR / "var")))

DEBUG = env_bool("DJANGO_DEBUG", False)
SECRET_KEY = django_secret_key(DEBUG, VAR_DIR / "django-secret-key")
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]", "testserver"])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "guardian",
    "axes",
    "permissions",
    "plugins",
    "tasks",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # answers a login refused for throttling (below) with 429
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "ccs.urls"
# The web runs on ASGI (Procfile); WSGI stays for `manage.py runserver` and the test client.
ASGI_APPLICATION = "ccs.asgi.application"
WSGI_APPLICATION = "ccs.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "plugins.context_processors.review_queue",
            ],
        },
    },
]


def _database() -> dict:
    default_url = f"sqlite:///{VAR_DIR / 'ccs.sqlite3'}"
    config = dj_database_url.parse(env_str("DATABASE_URL", default_url), conn_max_age=60)
    if config["ENGINE"] == "django.db.backends.sqlite3":
        # Several processes (web, controller, workers) share the embedded file.
        config["CONN_MAX_AGE"] = 0
        config["OPTIONS"] = {
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            "transaction_mode": "IMMEDIATE",
            "timeout": 30,
        }
    else:
        config["CONN_HEALTH_CHECKS"] = True
        config.setdefault("TEST", {})["NAME"] = env_str("CCS_TEST_DATABASE", "test_ccs")
        if pool := env_int("CCS_DB_POOL", 0, minimum=0):
            # A pool of at most this many connections per process. The web needs it: under
            # ASGI each request runs in a thread of its own, unbounded, each with a connection.
            config["CONN_MAX_AGE"] = 0  # connections go back to the pool instead
            config["OPTIONS"] = {"pool": {"min_size": 1, "max_size": pool, "timeout": 20}}
    return config


DATABASES = {"default": _database()}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# The console (/) signs users in; the admin keeps its own login page.
LOGIN_URL = "console:login"
LOGIN_REDIRECT_URL = "console:home"
LOGOUT_REDIRECT_URL = "console:login"

AUTHENTICATION_BACKENDS = [
    # first: refuses every login attempt, right password or not, while its source is locked out
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
    "guardian.backends.ObjectPermissionBackend",
]
ANONYMOUS_USER_NAME = None

# Login throttling, for the API token endpoint and the admin alike: django-axes counts failed
# logins in the database (shared by every web server). After CCS_LOGIN_FAILURE_LIMIT failures
# from one address, or for one username from anywhere (a spread-out guess at one account),
# logins from there or for it are refused for CCS_LOGIN_COOLOFF_MINUTES; an admin can clear
# a lockout sooner (`manage.py axes_reset_username NAME`, or the admin's access attempts).
AXES_FAILURE_LIMIT = env_int("CCS_LOGIN_FAILURE_LIMIT", 10, minimum=1)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("CCS_LOGIN_COOLOFF_MINUTES", 15, minimum=1))
AXES_LOCKOUT_PARAMETERS = ["ip_address", "username"]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_CALLABLE = "ccs.logins.locked_out"
# the address the connection came from: headers a client can write are not trusted
AXES_IPWARE_META_PRECEDENCE_ORDER = ["REMOTE_ADDR"]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
# The console's own files and the vendored htmx (static/vendor/, see its README).
STATICFILES_DIRS = [BASE_DIR / "static"]
# Admin and Swagger assets are served by WhiteNoise straight from the installed apps.
STATIC_ROOT = None
WHITENOISE_USE_FINDERS = True

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "ccs.api.Page",
    "DEFAULT_PARSER_CLASSES": [
        "ccs.parsers.JSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "PAGE_SIZE": 100,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "ccs.api.exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "CCS API",
    "DESCRIPTION": "Run reviewed plugins on hosts picked from the service tree.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI's files come with the project (no CDN: control planes run in closed networks).
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "ENUM_NAME_OVERRIDES": ENUM_NAMES,
    "PARSER_WHITELIST": ["ccs.parsers.JSONParser"],  # forms work too; JSON is documented
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums", "ccs.openapi.error_responses",
    ],
}

# Celery: the routing table lives in ccs.routing.
# The broker is Redis (the default) or anything kombu takes by URL, e.g. RabbitMQ's
# `amqp://user:password@host:5672/vhost`; the event channel is always Redis: the broker's
# own when that is Redis, else CCS_REDIS_URL.
CELERY_BROKER_URL = env_str("CCS_BROKER_URL", "redis://127.0.0.1:6379/0")
CCS_REDIS_URL = env_str("CCS_REDIS_URL", CELERY_BROKER_URL if is_redis(CELERY_BROKER_URL)
                        else "redis://127.0.0.1:6379/0")
# Pub/sub channels are shared by every database of a Redis server: installations (or test runs)
# sharing one Redis keep their announcements apart by this prefix.
CCS_EVENT_PREFIX = env_str("CCS_EVENT_PREFIX", "ccs")
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_TASK_IGNORE_RESULT = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_WORKER_SEND_TASK_EVENTS = True
CELERY_TASK_SEND_SENT_EVENT = True
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# A broker restart must not stop a process: ours survives it (ccs/broker.py), workers keep
# trying to reconnect for as long as it is down (Celery's default gives up after 100 tries),
# and the shards they are running finish and are acknowledged once it is back (cancelling them
# would not stop their threads anyway).
CELERY_BROKER_TRANSPORT = transport_for(CELERY_BROKER_URL)
# A message sent while the broker restarts is tried again for about 10 s (Celery's default
# gives up after 0.6 s); after that the request answers 503 (ccs.api.exception_handler).
CELERY_TASK_PUBLISH_RETRY_POLICY = {
    "max_retries": 8, "interval_start": 0, "interval_step": 0.5, "interval_max": 2,
}
CELERY_BROKER_CONNECTION_MAX_RETRIES = None
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = False
# Redis redelivers a message unacknowledged this long (RabbitMQ when its consumer's channel
# closes).
CELERY_BROKER_TRANSPORT_OPTIONS = (
    {"visibility_timeout": env_int("CCS_VISIBILITY_TIMEOUT", 3600)}
    if is_redis(CELERY_BROKER_URL) else {}
)
CELERY_TASK_ALWAYS_EAGER = False

# The agent channel and plugin signing.
CCS_CHANNEL_MASTER_SECRET = secret_file("CCS_CHANNEL_MASTER_SECRET", VAR_DIR / "master.secret")
CCS_SIGNING_KEY = secret_file("CCS_SIGNING_KEY", VAR_DIR / "signing-key.pem")
# Public keys of signing keys used before a rotation: their approvals stay valid (agents keep
# accepting them) and are recognised here; comma-separated PEM file paths or base64 raw keys.
CCS_SIGNING_PREVIOUS_KEYS = env_public_keys("CCS_SIGNING_PREVIOUS_KEYS")
CCS_SHARD_SIZE = env_int("CCS_SHARD_SIZE", 2000, minimum=1)
CCS_FANOUT_CONCURRENCY = env_int("CCS_FANOUT_CONCURRENCY", 500, minimum=1)
CCS_CONNECT_TIMEOUT = env_int("CCS_CONNECT_TIMEOUT", 5, minimum=1)
# Host names are resolved in the fan-out's loop (c-ares): these name servers ("ip" or
# "ip:port"; empty: the system's), and at most this long per name.
CCS_DNS_SERVERS = env_list("CCS_DNS_SERVERS", [])
CCS_DNS_TIMEOUT = env_int("CCS_DNS_TIMEOUT", 2, minimum=1)
CCS_OUTPUT_CAP = env_int("CCS_OUTPUT_CAP", 65536, minimum=1024)
CCS_RESULT_FLUSH_ROWS = env_int("CCS_RESULT_FLUSH_ROWS", 1000, minimum=1)
CCS_RESULT_FLUSH_MS = env_int("CCS_RESULT_FLUSH_MS", 200, minimum=1)

# The SSH channel, for hosts without an agent (and agent installs). The client private key
# (OpenSSH or PEM, unencrypted) is read from the file named by CCS_SSH_KEY_FILE (or given inline
# in CCS_SSH_KEY); empty: the SSH channel is off. Each worker process runs at most
# CCS_SSH_CONCURRENCY SSH jobs at once (paramiko blocks: one thread each, asleep while its job
# runs), opens at most CCS_SSH_CONNECTS new connections at once (a handshake costs CPU on both
# ends), and keeps at most CCS_SSH_CONNECTIONS_PER_HOST connections open to a host, closed after
# CCS_SSH_IDLE seconds unused (0: after each use), with a keepalive every CCS_SSH_KEEPALIVE s.
CCS_SSH_KEY = env_str("CCS_SSH_KEY", "")
CCS_SSH_CONCURRENCY = env_int("CCS_SSH_CONCURRENCY", 1000, minimum=1)
CCS_SSH_CONNECTS = env_int("CCS_SSH_CONNECTS", 32, minimum=1)
CCS_SSH_CONNECTIONS_PER_HOST = env_int("CCS_SSH_CONNECTIONS_PER_HOST", 4, minimum=1)
CCS_SSH_IDLE = env_int("CCS_SSH_IDLE", 60, minimum=0)
CCS_SSH_KEEPALIVE = env_int("CCS_SSH_KEEPALIVE", 15, minimum=0)

# Live event streams: a comment line this often keeps idle proxies from closing them.
CCS_SSE_KEEPALIVE = env_int("CCS_SSE_KEEPALIVE", 15, minimum=1)
# Open event streams per user, across every web process (a browser tab on a task holds one).
CCS_SSE_STREAMS_PER_USER = env_int("CCS_SSE_STREAMS_PER_USER", 20, minimum=1)

# HTTP callbacks: receivers on non-public addresses are refused unless allowed (on-premises);
# link-local and cloud metadata addresses always are.
CCS_CALLBACK_ALLOW_PRIVATE = env_bool("CCS_CALLBACK_ALLOW_PRIVATE", False)
CCS_CALLBACK_TIMEOUT = env_int("CCS_CALLBACK_TIMEOUT", 10, minimum=1)
CCS_CALLBACK_BACKOFF_BASE = env_int("CCS_CALLBACK_BACKOFF_BASE", 2, minimum=1)
CCS_CALLBACK_RETRY_HOURS = env_int("CCS_CALLBACK_RETRY_HOURS", 48, minimum=24)

# The sitter (its own process, `manage.py sitter`) makes a pass this often. A worker holds a
# lease of CCS_SHARD_LEASE seconds on each shard it runs, renewed a few times within it: the
# sitter pulls the outcome of what a dead worker held once its lease lapsed. A shard message no
# worker took within CCS_SITTER_QUEUED_GRACE is sent again (then after twice as long, and so
# on, up to ten times that: a long queue is not flooded). A subtask whose agent stays
# unreachable is lost CCS_SITTER_LOST_AFTER seconds after the sitter took it over.
CCS_SITTER_INTERVAL = env_int("CCS_SITTER_INTERVAL", 5, minimum=1)
CCS_SHARD_LEASE = env_int("CCS_SHARD_LEASE", 20, minimum=4)
CCS_SITTER_QUEUED_GRACE = env_int("CCS_SITTER_QUEUED_GRACE", 30, minimum=1)
CCS_SITTER_LOST_AFTER = env_int("CCS_SITTER_LOST_AFTER", 900, minimum=1)
CCS_SITTER_PULL_TIMEOUT = env_int("CCS_SITTER_PULL_TIMEOUT", 10, minimum=1)
# Beat has every datacenter probe its agents this often (seconds).
CCS_PROBE_INTERVAL = env_int("CCS_PROBE_INTERVAL", 60, minimum=1)

# /metrics answers a bearer of this token (Prometheus) and staff users; empty: staff only.
CCS_METRICS_TOKEN = env_token("CCS_METRICS_TOKEN", minimum_length=16)

# Flower asks for this user and CCS_FLOWER_PASSWORD(_FILE) (ccs/flowerconfig.py).
CCS_FLOWER_USER = env_str("CCS_FLOWER_USER", "ccs")

# Default quotas; per-user overrides and blocks are set in the admin (tasks.Quota).
CCS_QUOTA_TASKS_PER_MINUTE = env_int("CCS_QUOTA_TASKS_PER_MINUTE", 60, minimum=1)
CCS_QUOTA_HOSTS_PER_TASK = env_int("CCS_QUOTA_HOSTS_PER_TASK", 50000, minimum=1)
CCS_QUOTA_RUNNING_TASKS = env_int("CCS_QUOTA_RUNNING_TASKS", 20, minimum=1)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"line": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "line"}},
    "root": {"handlers": ["console"], "level": env_str("CCS_LOG_LEVEL", "INFO")},
    # paramiko logs every SSH connection and SFTP session at INFO: one line per host and job.
    "loggers": {
        "httpx": {"level": "WARNING"}, "httpcore": {"level": "WARNING"},
        "paramiko": {"level": "WARNING"},
        # one line per failed login at INFO; lockouts are WARNING
        "axes": {"level": "WARNING"},
    },
}
