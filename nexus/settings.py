"""Nexus settings: read only from the environment (and an optional ``.env`` file).

This is the only module that reads ``os.environ``. Bad values stop the process at start with a
message naming the variable. ``.env.example`` documents every variable.
"""

from __future__ import annotations

import json
import secrets
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured
from dotenv import load_dotenv

from core.egress import parse_allow_list, parse_key_hosts
from nexus.env import (
    env_bool,
    env_choice,
    env_float,
    env_int,
    env_list,
    env_origins,
    env_rate,
    env_str,
    mcp_credentials,
    provider_keys,
    redis_url,
)

BASE_DIR = Path(__file__).resolve().parent.parent
# A .env beside manage.py fills in what the real environment does not set; it never overrides.
load_dotenv(BASE_DIR / ".env", override=False)

VAR_DIR = Path(env_str("NEXUS_VAR_DIR", str(BASE_DIR / "var")))
VAR_DIR.mkdir(parents=True, exist_ok=True)

DEBUG = env_bool("DJANGO_DEBUG", False)


def _secret_key() -> str:
    key = env_str("DJANGO_SECRET_KEY")
    if key:
        if len(key) < 32:
            raise ImproperlyConfigured("DJANGO_SECRET_KEY must be at least 32 characters")
        return key
    # Embedded default: a random key made once and kept in var/, so `make run` needs no setup
    # and sessions survive restarts. Deployments set DJANGO_SECRET_KEY.
    path = VAR_DIR / "secret_key"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    return path.read_text().strip()


SECRET_KEY = _secret_key()
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "corsheaders",
    "rest_framework",
    "rest_framework_simplejwt.token_blacklist",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI's files, served from here (/api/docs/ works offline)
    "core",  # personal API keys (core/models.py)
    "agents",
    "conversations",
    "files",
    "knowledge",
    "realtime",
    "runs",
    "web",
]

MIDDLEWARE = [
    # first: a preflight is answered before anything else can answer it (docs/security.md, CORS)
    "corsheaders.middleware.CorsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "nexus.urls"
ASGI_APPLICATION = "nexus.asgi.application"
WSGI_APPLICATION = None

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
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------------


# Nexus's SQLite engine (core/sqlite_backend): Django's, on a SQLite that loads sqlite-vec.
SQLITE_ENGINE = "core.sqlite_backend"


def _database() -> dict:
    url = env_str("DATABASE_URL") or f"sqlite:///{VAR_DIR / 'db.sqlite3'}"
    try:
        # Persistent connections, health-checked before reuse: the run engine's ORM calls go
        # through channels' database_sync_to_async, which drops broken or expired ones.
        config = dj_database_url.parse(
            url, conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 60, minimum=0), conn_health_checks=True
        )
    except (ValueError, KeyError) as exc:
        raise ImproperlyConfigured(f"DATABASE_URL is not a valid database URL: {exc}") from None
    engine = config.get("ENGINE", "")
    if engine not in {"django.db.backends.sqlite3", "django.db.backends.postgresql"}:
        raise ImproperlyConfigured("DATABASE_URL must be a sqlite:// or postgres:// URL")
    if not config.get("NAME"):
        raise ImproperlyConfigured("DATABASE_URL names no database")
    if engine == "django.db.backends.sqlite3":
        # Django's SQLite engine on pysqlite3, with sqlite-vec loaded (knowledge search)
        config["ENGINE"] = SQLITE_ENGINE
        # WAL lets readers run beside the single writer; a busy timeout beats "database is locked".
        config["OPTIONS"] = {
            "timeout": 20,
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            "transaction_mode": "IMMEDIATE",
        }
    else:
        config.setdefault("OPTIONS", {})
        config["OPTIONS"].setdefault("connect_timeout", 5)
    config["TEST"] = {"NAME": env_str("DATABASE_TEST_NAME") or None}
    return config


DATABASES = {"default": _database()}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis: channel layer, cache, event log ---------------------------------------------------

REDIS_URL = redis_url("REDIS_URL")
NEXUS_REDIS_PREFIX = env_str("NEXUS_REDIS_PREFIX", "nexus")

if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                # socket_timeout None: redis-py 8 otherwise times out a blocking read after 5 s
                # and an idle consumer crashes with 1011.
                "hosts": [{"address": REDIS_URL, "socket_timeout": None}],
                "prefix": f"{NEXUS_REDIS_PREFIX}:asgi",
                "capacity": env_int("NEXUS_CHANNEL_CAPACITY", 1000, minimum=10),
                "expiry": 60,
            },
        }
    }
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": f"{NEXUS_REDIS_PREFIX}:cache",
        }
    }
else:
    CHANNEL_LAYERS = {
        "default": {"BACKEND": "channels.layers.InMemoryChannelLayer", "CONFIG": {"capacity": 1000}}
    }
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "nexus"}}

# --- Runs and the event log -------------------------------------------------------------------

NEXUS_RUN_MODE = env_choice("NEXUS_RUN_MODE", "inline", {"inline", "worker"})
if NEXUS_RUN_MODE == "worker" and not REDIS_URL:
    raise ImproperlyConfigured("NEXUS_RUN_MODE=worker needs REDIS_URL (workers are reached over Redis)")
NEXUS_RUN_CHANNEL = "nexus-runs"
NEXUS_EVENT_LOG_MAXLEN = env_int("NEXUS_EVENT_LOG_MAXLEN", 10_000, minimum=100)
NEXUS_EVENT_LOG_TTL = env_int("NEXUS_EVENT_LOG_TTL", 86_400, minimum=60)
# Payload bytes one conversation's log holds; past it the oldest events are dropped (resync).
NEXUS_EVENT_LOG_MAX_BYTES = env_int("NEXUS_EVENT_LOG_MAX_BYTES", 8 * 1_048_576, minimum=65_536)
NEXUS_RUN_HEARTBEAT_SECONDS = env_float("NEXUS_RUN_HEARTBEAT_SECONDS", 3.0, minimum=0.1)
NEXUS_RUN_STALE_SECONDS = env_float("NEXUS_RUN_STALE_SECONDS", 15.0, minimum=1.0)
# Knowledge ingest tasks (docs/knowledge.md "Tasks"): a running task whose heartbeat is older
# than NEXUS_INGEST_STALE_SECONDS lost its process and is queued again, up to
# NEXUS_INGEST_MAX_ATTEMPTS claims in all, then failed.
NEXUS_INGEST_STALE_SECONDS = env_float("NEXUS_INGEST_STALE_SECONDS", 30.0, minimum=1.0)
NEXUS_INGEST_MAX_ATTEMPTS = env_int("NEXUS_INGEST_MAX_ATTEMPTS", 3, minimum=1, maximum=20)
# TEST ONLY: seconds slept after each embedded batch, so a test can kill a worker mid-task.
NEXUS_INGEST_TEST_BATCH_DELAY = env_float("NEXUS_INGEST_TEST_BATCH_DELAY", 0.0, minimum=0.0)
NEXUS_CHECKPOINT_SECONDS = env_float("NEXUS_CHECKPOINT_SECONDS", 1.0, minimum=0.1)
NEXUS_MAX_TOOL_ROUNDS = env_int("NEXUS_MAX_TOOL_ROUNDS", 8, minimum=1, maximum=32)
# Tool calls one model reply may make; calls past it get an error result and do not run.
NEXUS_MAX_TOOL_CALLS_PER_ROUND = env_int("NEXUS_MAX_TOOL_CALLS_PER_ROUND", 16, minimum=1, maximum=128)
NEXUS_CLIENT_TOOL_TIMEOUT = env_float("NEXUS_CLIENT_TOOL_TIMEOUT", 60.0, minimum=0.1)
# A tool call waiting for a person's approve/deny is denied after this (runs.approvals).
NEXUS_APPROVAL_TIMEOUT_SECONDS = env_float("NEXUS_APPROVAL_TIMEOUT_SECONDS", 600.0, minimum=0.1)

# --- Tools (SPEC section 7; docs/tools.md) ---------------------------------------------------


def _tools_database_url() -> str:
    """The database `query_database` reads. Empty: the demo data set under VAR_DIR."""
    url = env_str("NEXUS_TOOLS_DATABASE_URL")
    scheme, _, rest = url.partition("://")
    if url and scheme not in {"sqlite", "postgres", "postgresql"}:
        raise ImproperlyConfigured("NEXUS_TOOLS_DATABASE_URL must be a sqlite:/// or postgres:// URL")
    if url and not rest.strip("/"):
        raise ImproperlyConfigured("NEXUS_TOOLS_DATABASE_URL names no database")
    return url


NEXUS_TOOLS_DATABASE_URL = _tools_database_url()
NEXUS_TOOLS_QUERY_MAX_ROWS = env_int("NEXUS_TOOLS_QUERY_MAX_ROWS", 100, minimum=1, maximum=10_000)
NEXUS_TOOLS_QUERY_TIMEOUT = env_float("NEXUS_TOOLS_QUERY_TIMEOUT", 2.0, minimum=0.1)
# Any server tool is abandoned after this long (the query above stops itself sooner).
NEXUS_TOOLS_TIMEOUT = env_float("NEXUS_TOOLS_TIMEOUT", 30.0, minimum=0.1)

# --- MCP tool servers (SPEC sections 11 and 12; docs/mcp.md) ----------------------------------

# Users may register MCP servers for their own agents (Streamable HTTP only); off: the operator's only.
NEXUS_MCP_USER_SERVERS = env_bool("NEXUS_MCP_USER_SERVERS", False)
# A server's cached tool list is fetched again when a run finds it older than this (seconds).
NEXUS_MCP_TOOLS_TTL = env_float("NEXUS_MCP_TOOLS_TTL", 3600.0, minimum=1.0)
# Connecting to a server and its handshake, at most this long (the call itself: NEXUS_TOOLS_TIMEOUT).
NEXUS_MCP_CONNECT_TIMEOUT = env_float("NEXUS_MCP_CONNECT_TIMEOUT", 10.0, minimum=0.1)
# Credentials named by a server's credential_env: only MCP_* variables, so a server (a user's own
# included) can never name DJANGO_SECRET_KEY or DATABASE_URL and have it sent to its host.
NEXUS_MCP_ENV_CREDENTIALS = mcp_credentials()

# --- WebSocket limits (SPEC section 4) --------------------------------------------------------

NEXUS_WS_MESSAGES_PER_MINUTE = env_int("NEXUS_WS_MESSAGES_PER_MINUTE", 60, minimum=1)
NEXUS_WS_MAX_SOCKETS_PER_USER = env_int("NEXUS_WS_MAX_SOCKETS_PER_USER", 5, minimum=1)
NEXUS_WS_MAX_MESSAGE_BYTES = env_int("NEXUS_WS_MAX_MESSAGE_BYTES", 1_048_576, minimum=1024)
# A REST request body gets the same bound as a WebSocket frame (413 message_too_large past it).
DATA_UPLOAD_MAX_MEMORY_SIZE = NEXUS_WS_MAX_MESSAGE_BYTES
# A client with more than this waiting unread in daphne's send buffer is dropped (it resumes on
# reconnect): a socket that stops reading cannot make the web process hold every frame it is sent.
NEXUS_WS_MAX_SEND_BUFFER_BYTES = env_int("NEXUS_WS_MAX_SEND_BUFFER_BYTES", 16 * 1_048_576, minimum=65_536)
NEXUS_WS_MAX_AGE_SECONDS = env_int("NEXUS_WS_MAX_AGE_SECONDS", 4 * 3600, minimum=1)
NEXUS_WS_PING_INTERVAL = env_float("NEXUS_WS_PING_INTERVAL", 30.0, minimum=0.1)
NEXUS_WS_PONG_TIMEOUT = env_float("NEXUS_WS_PONG_TIMEOUT", 30.0, minimum=0.1)
NEXUS_WS_ALLOW_QUERY_TOKEN = env_bool("NEXUS_WS_ALLOW_QUERY_TOKEN", True)
# The browser origins allowed to call Nexus: HTTP CORS (django-cors-headers, below) and the
# WebSocket Origin check (realtime/middleware.py) read this one list. ALLOWED_ORIGINS (seed 003's
# name) and NEXUS_WS_ALLOWED_ORIGINS (the older, WebSocket-only name) are read as aliases.
NEXUS_ALLOWED_ORIGINS = env_origins(
    ("NEXUS_ALLOWED_ORIGINS", "ALLOWED_ORIGINS", "NEXUS_WS_ALLOWED_ORIGINS"),
    ["http://127.0.0.1:8000", "http://localhost:8000"],
)
NEXUS_WS_ALLOWED_ORIGINS = NEXUS_ALLOWED_ORIGINS  # the older name, for code and tests that read it
NEXUS_CONVERSATION_IDLE_SECONDS = env_int("NEXUS_CONVERSATION_IDLE_SECONDS", 3600, minimum=1)
# Open sockets and SSE streams re-check their user this often (at most 60 s, SPEC section 12):
# deactivated, password changed, logged out (cookie session) -> close 4003; token expired -> 4002.
NEXUS_AUTH_RECHECK_SECONDS = env_float("NEXUS_AUTH_RECHECK_SECONDS", 60.0, minimum=0.1)
if NEXUS_AUTH_RECHECK_SECONDS > 60:
    raise ImproperlyConfigured("NEXUS_AUTH_RECHECK_SECONDS must be at most 60")
# An SSE stream ends after this long (clients resume with Last-Event-ID); it counts toward
# NEXUS_WS_MAX_SOCKETS_PER_USER while open.
NEXUS_SSE_MAX_AGE_SECONDS = env_int("NEXUS_SSE_MAX_AGE_SECONDS", 4 * 3600, minimum=1)

# --- CORS (SPEC section 9, seed 003; docs/security.md) ----------------------------------------
# A browser app on a listed origin may call every path but the admin's, with credentials (its
# cookies, an Authorization header); any other origin gets no Access-Control-* header at all.
CORS_ALLOWED_ORIGINS = NEXUS_ALLOWED_ORIGINS
CORS_ALLOW_CREDENTIALS = True
CORS_URLS_REGEX = r"^(?!/admin/).*$"
CORS_ALLOW_HEADERS = (
    "accept",
    "authorization",
    "content-type",
    "last-event-id",  # SSE resume (realtime/http_views.py)
    "user-agent",
    "x-csrftoken",
    "x-requested-with",
)
CORS_EXPOSE_HEADERS = ("retry-after",)

# --- Quotas (SPEC section 12; docs/api.md "Quotas") ------------------------------------------

# Runs queued or running at once in the conversations a user owns: one per socket the user may
# open (an agent-agent session's turns run one at a time: a running session holds one).
NEXUS_MAX_ACTIVE_RUNS_PER_USER = env_int("NEXUS_MAX_ACTIVE_RUNS_PER_USER", 5, minimum=1)
# Runs a user starts per minute on every path (WebSocket, invoke, SSE run, generate-title,
# agent-agent start and resume), shared by every process.
NEXUS_RUNS_PER_MINUTE_PER_USER = env_int("NEXUS_RUNS_PER_MINUTE_PER_USER", 30, minimum=1)
# Characters of one message's content, on every path it enters.
NEXUS_MAX_CONTENT_CHARS = env_int("NEXUS_MAX_CONTENT_CHARS", 100_000, minimum=1)
# Characters of one agent reply: past it the provider's stream is closed and the reply ends
# `incomplete` with finish reason `length` (an `info` frame `reply_too_long` says so).
NEXUS_MAX_REPLY_CHARS = env_int("NEXUS_MAX_REPLY_CHARS", 1_000_000, minimum=1)
# Bytes of a conversation's `context` (as compact JSON), on create, initialize and every merge.
NEXUS_MAX_CONTEXT_BYTES = env_int("NEXUS_MAX_CONTEXT_BYTES", 65_536, minimum=2)
# The longest deadline an agent's `config.timeouts` may ask for (saving a larger one is refused;
# one saved before the operator lowered this is clamped to it at run time).
NEXUS_MAX_AGENT_TIMEOUT_SECONDS = env_float("NEXUS_MAX_AGENT_TIMEOUT_SECONDS", 600.0, minimum=1.0)

# --- Providers --------------------------------------------------------------------------------

NEXUS_PROVIDER_API_KEYS = provider_keys()
OLLAMA_BASE_URL = env_str("OLLAMA_BASE_URL", "http://localhost:11434")
OPENAI_BASE_URL = env_str("OPENAI_BASE_URL", "")
GEMINI_BASE_URL = env_str("GEMINI_BASE_URL", "")
NEXUS_LOCAL_MODEL_PATH = env_str("NEXUS_LOCAL_MODEL_PATH", "")
NEXUS_LOCAL_MODEL_THREADS = env_int("NEXUS_LOCAL_MODEL_THREADS", 2, minimum=1)
NEXUS_PROVIDER_RETRY_AFTER_CAP = env_float("NEXUS_PROVIDER_RETRY_AFTER_CAP", 20.0, minimum=0)
# Provider deadlines in seconds (an agent's config "timeouts" overrides any of them): opening the
# connection, the first chunk of a reply, the longest silence once it streams, the whole call.
NEXUS_PROVIDER_CONNECT_TIMEOUT = env_float("NEXUS_PROVIDER_CONNECT_TIMEOUT", 5.0, minimum=0.1)
NEXUS_PROVIDER_FIRST_TOKEN_TIMEOUT = env_float("NEXUS_PROVIDER_FIRST_TOKEN_TIMEOUT", 60.0, minimum=0.1)
NEXUS_PROVIDER_CHUNK_TIMEOUT = env_float("NEXUS_PROVIDER_CHUNK_TIMEOUT", 30.0, minimum=0.1)
NEXUS_PROVIDER_TOTAL_TIMEOUT = env_float("NEXUS_PROVIDER_TOTAL_TIMEOUT", 600.0, minimum=1.0)


def _provider_plugins() -> dict[str, str]:
    """Extra providers, ``name=dotted.path.Class`` separated by commas (constructed with no arguments)."""
    plugins = {}
    for item in env_list("NEXUS_PROVIDER_PLUGINS", []):
        name, sep, path = item.partition("=")
        if not sep or not name.strip() or "." not in path:
            raise ImproperlyConfigured(f"NEXUS_PROVIDER_PLUGINS item {item!r} is not name=dotted.path.Class")
        plugins[name.strip()] = path.strip()
    return plugins


NEXUS_PROVIDER_PLUGINS = _provider_plugins()


def _provider_presets() -> dict[str, dict[str, str]]:
    """OpenAI-compatible services by name (seed 001's ``groq`` and the like), JSON:
    ``{"groq": {"base_url": "https://api.groq.com/openai/v1", "api_key_env": "GROQ_API_KEY",
    "model": "llama-3.3-70b-versatile"}}`` (``model``: the default when a client names none).
    None by default (docs/providers.md lists the well-known ones)."""
    raw = env_str("NEXUS_PROVIDER_PRESETS", "").strip()
    if not raw:
        return {}
    try:
        presets = json.loads(raw)
    except ValueError:
        raise ImproperlyConfigured("NEXUS_PROVIDER_PRESETS is not JSON") from None
    if not isinstance(presets, dict):
        raise ImproperlyConfigured("NEXUS_PROVIDER_PRESETS is a JSON object: {name: {base_url, api_key_env}}")
    for name, preset in presets.items():
        if not isinstance(preset, dict) or not str(preset.get("base_url", "")).startswith(
            ("http://", "https://")
        ):
            raise ImproperlyConfigured(f"NEXUS_PROVIDER_PRESETS[{name!r}] needs an http(s) base_url")
        key = preset.get("api_key_env", "")
        if not isinstance(key, str) or (key and not key.endswith("_API_KEY")):
            raise ImproperlyConfigured(f"NEXUS_PROVIDER_PRESETS[{name!r}].api_key_env must end in _API_KEY")
    return {str(name): {str(k): str(v) for k, v in preset.items()} for name, preset in presets.items()}


NEXUS_PROVIDER_PRESETS = _provider_presets()

# --- Egress: where outbound fetches may go (core/egress.py, docs/providers.md) ------------------


def _egress_allow() -> list[str]:
    """Loopback/private/link-local/CGNAT destinations the server may reach anyway: host names
    (``*.suffix`` for a domain), IPs and CIDRs, each optionally ``:port``, separated by commas."""
    items = env_list("NEXUS_EGRESS_ALLOW", [])
    try:
        parse_allow_list(items)
    except ValueError as exc:
        raise ImproperlyConfigured(f"NEXUS_EGRESS_ALLOW: {exc}") from None
    return items


def _key_hosts() -> dict[str, list[str]]:
    """Where each operator key may be sent: ``VAR_API_KEY=host|host:port,...``; a variable named
    here is sent to these hosts only (its built-in default host is replaced)."""
    try:
        return {name: list(hosts) for name, hosts in parse_key_hosts(env_list("NEXUS_KEY_HOSTS", [])).items()}
    except ValueError as exc:
        raise ImproperlyConfigured(f"NEXUS_KEY_HOSTS: {exc}") from None


NEXUS_EGRESS_ALLOW = _egress_allow()
NEXUS_KEY_HOSTS = _key_hosts()

# --- Auth and the REST API --------------------------------------------------------------------

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "/login/"
NEXUS_REGISTRATION_ENABLED = env_bool("NEXUS_REGISTRATION_ENABLED", False)
# The passwords `seed_demo` gives the accounts it creates. Unset: the published defaults, which
# it refuses when DEBUG is off (`make run` passes them here on purpose).
NEXUS_DEMO_PASSWORD = env_str("NEXUS_DEMO_PASSWORD")
NEXUS_ADMIN_PASSWORD = env_str("NEXUS_ADMIN_PASSWORD")

NEXUS_JWT_SIGNING_KEY = env_str("NEXUS_JWT_SIGNING_KEY") or SECRET_KEY
if len(NEXUS_JWT_SIGNING_KEY) < 32:
    raise ImproperlyConfigured("NEXUS_JWT_SIGNING_KEY must be at least 32 characters")
NEXUS_JWT_AUDIENCE = env_str("NEXUS_JWT_AUDIENCE", "nexus")
NEXUS_JWT_ISSUER = env_str("NEXUS_JWT_ISSUER", "nexus")
if not NEXUS_JWT_AUDIENCE or not NEXUS_JWT_ISSUER:
    raise ImproperlyConfigured("NEXUS_JWT_AUDIENCE and NEXUS_JWT_ISSUER must not be empty")
NEXUS_WS_TICKET_SECONDS = env_int("NEXUS_WS_TICKET_SECONDS", 30, minimum=1)

# Single-user mode (SPEC section 9, docs/dialects.md "Single-user mode"): NEXUS_AUTH=off makes every
# request without credentials act as NEXUS_SINGLE_USER (made on first use); never the admin.
# Refused with DEBUG off unless NEXUS_AUTH_OFF_CONFIRM=yes; logged loudly at start, shown by /health.
NEXUS_AUTH_OFF = env_choice("NEXUS_AUTH", "on", {"on", "off"}) == "off"
NEXUS_SINGLE_USER = env_str("NEXUS_SINGLE_USER", "local")
if NEXUS_AUTH_OFF and not NEXUS_SINGLE_USER:
    raise ImproperlyConfigured("NEXUS_SINGLE_USER must not be empty when NEXUS_AUTH=off")
if NEXUS_AUTH_OFF and not DEBUG and env_str("NEXUS_AUTH_OFF_CONFIRM") != "yes":
    raise ImproperlyConfigured(
        "NEXUS_AUTH=off with DJANGO_DEBUG off: anyone who reaches this server acts as "
        f"{NEXUS_SINGLE_USER!r}. Set NEXUS_AUTH_OFF_CONFIRM=yes to run it anyway."
    )

SIMPLE_JWT = {
    "ACCESS_TOKEN_LIFETIME": timedelta(minutes=env_int("NEXUS_JWT_ACCESS_MINUTES", 15, minimum=1)),
    "REFRESH_TOKEN_LIFETIME": timedelta(days=env_int("NEXUS_JWT_REFRESH_DAYS", 7, minimum=1)),
    "ROTATE_REFRESH_TOKENS": True,
    "BLACKLIST_AFTER_ROTATION": True,
    "UPDATE_LAST_LOGIN": False,
    # One symmetric algorithm, pinned: PyJWT refuses `alg: none` and any other algorithm.
    "ALGORITHM": "HS256",
    "SIGNING_KEY": NEXUS_JWT_SIGNING_KEY,
    "VERIFYING_KEY": "",
    "AUDIENCE": NEXUS_JWT_AUDIENCE,
    "ISSUER": NEXUS_JWT_ISSUER,
    "JWK_URL": None,
    "LEEWAY": 0,
    "AUTH_HEADER_TYPES": ("Bearer",),
    "USER_ID_FIELD": "id",
    "USER_ID_CLAIM": "user_id",
    "TOKEN_TYPE_CLAIM": "token_type",
    "JTI_CLAIM": "jti",
    "CHECK_USER_IS_ACTIVE": True,
    # A hash of the password hash rides in every token: changing the password revokes them all.
    "CHECK_REVOKE_TOKEN": True,
    "REVOKE_TOKEN_CLAIM": "hash_password",
}

# The number of reverse proxies in front of daphne whose X-Forwarded-For is trusted when the
# throttles identify a client by IP. 0: the socket's address (a client cannot spoof its way past).
NEXUS_TRUSTED_PROXIES = env_int(
    "NEXUS_TRUSTED_PROXIES", 1 if env_bool("DJANGO_BEHIND_PROXY", False) else 0, minimum=0, maximum=10
)
# Provider checks in /health and /api/providers/ never take longer than this.
NEXUS_PROVIDER_STATUS_TIMEOUT = env_float("NEXUS_PROVIDER_STATUS_TIMEOUT", 2.0, minimum=0.1)
# `generate-title` waits this long for the provider before falling back to the first words.
NEXUS_TITLE_TIMEOUT = env_float("NEXUS_TITLE_TIMEOUT", 20.0, minimum=0.1)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # First: a bearer value that is a personal API key (nx-...) with the "api" scope.
        "core.apikeys.ApiKeyAuthentication",
        "core.auth.JWTAuthentication",
        # The built-in web page: the Django session cookie, with CSRF enforced on unsafe methods.
        "rest_framework.authentication.SessionAuthentication",
        # Last: with NEXUS_AUTH=off, a request that sent no credentials is the single local user.
        "core.auth.SingleUserAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    # JSON everywhere; the login and refresh endpoints also take form-encoded bodies (seed 001).
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_SCHEMA_CLASS": "nexus.schema.NexusAutoSchema",
    "DEFAULT_PAGINATION_CLASS": "core.pagination.PageNumberPagination",
    "PAGE_SIZE": env_int("NEXUS_API_PAGE_SIZE", 20, minimum=1, maximum=500),
    "EXCEPTION_HANDLER": "core.exceptions.exception_handler",
    "NUM_PROXIES": NEXUS_TRUSTED_PROXIES,
    "DEFAULT_THROTTLE_RATES": {
        "login": env_rate("NEXUS_THROTTLE_LOGIN", "10/min"),
        "verify": env_rate("NEXUS_THROTTLE_VERIFY", "50/min"),
        "refresh": env_rate("NEXUS_THROTTLE_REFRESH", "50/min"),
        # The native API and the web page: sized for a person (page loads, new chats, searches).
        "conversation_create": env_rate("NEXUS_THROTTLE_CONVERSATION_CREATE", "30/min"),
        "conversation_read": env_rate("NEXUS_THROTTLE_CONVERSATION_READ", "120/min"),
        "agent_ops": env_rate("NEXUS_THROTTLE_AGENT_OPS", "120/min"),
        # Seed 001's own numbers, for seed 001's own paths only (/chat/sessions/*, /agents/*:
        # SPEC section 9; core.throttles.Seed001* are their throttles). No such path is routed
        # yet: the seed-001 dialect uses these scopes when it lands.
        "seed001_session_create": env_rate("NEXUS_THROTTLE_SEED001_SESSION_CREATE", "5/min"),
        "seed001_session_read": env_rate("NEXUS_THROTTLE_SEED001_SESSION_READ", "10/min"),
        "seed001_agent_ops": env_rate("NEXUS_THROTTLE_SEED001_AGENT_OPS", "20/min"),
        # GET /api/providers/ asks every provider (network calls): per user
        "providers": env_rate("NEXUS_THROTTLE_PROVIDERS", "10/min"),
    },
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Nexus API",
    "DESCRIPTION": (
        "Realtime AI agent chat: agents, conversations, runs. Authenticate with "
        "`Authorization: Bearer <access_token>` from `POST /api/auth/login`. Every error has the "
        "shape `{detail, code, timestamp}` (plus `errors` for validation errors)."
    ),
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SERVE_AUTHENTICATION": [],
    "SCHEMA_PATH_PREFIX": "/api",
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {
        "AgentStatusEnum": "agents.models.AgentStatus",
        "ConversationStatusEnum": "conversations.models.ConversationStatus",
        "SessionTypeEnum": "conversations.models.SessionType",
        "MessageStatusEnum": "conversations.models.MessageStatus",
        "MessageRoleEnum": "conversations.models.MessageRole",
        "MessageTypeEnum": "conversations.models.MessageType",
        "OpinionEnum": "conversations.models.Opinion",
        "ApiKeyStatusEnum": "core.apikeys.KEY_STATUSES",
        "ApiKeyScopeEnum": "core.apikeys.SCOPES",
    },
    # the async run endpoints (realtime/http_urls.py), described by schema-only views
    "PREPROCESSING_HOOKS": ["nexus.schema_runs.add_run_endpoints"],
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "nexus.schema.add_error_responses",
    ],
    # Swagger UI's JS and CSS come from drf-spectacular-sidecar, as static files of this server:
    # /api/docs/ needs no CDN and no internet.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# --- Security ----------------------------------------------------------------------------------

SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SECURE = env_bool("DJANGO_SECURE_COOKIES", False)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", False)
SECURE_HSTS_SECONDS = env_int("DJANGO_SECURE_HSTS_SECONDS", 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = SECURE_HSTS_SECONDS > 0
SECURE_HSTS_PRELOAD = SECURE_HSTS_SECONDS > 0
if env_bool("DJANGO_BEHIND_PROXY", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# Health checks come from inside the network, over plain HTTP: answered, never redirected.
SECURE_REDIRECT_EXEMPT = [r"^health/?$"]
X_FRAME_OPTIONS = "DENY"
# A failed CSRF check answers the API's JSON error shape under /api/, Django's page elsewhere.
CSRF_FAILURE_VIEW = "core.exceptions.csrf_failure"

# --- Static files, i18n, logging ---------------------------------------------------------------

STATIC_URL = "/static/"
STATIC_ROOT = VAR_DIR / "static"
STATIC_ROOT.mkdir(exist_ok=True)
STATICFILES_DIRS = [BASE_DIR / "static"] if (BASE_DIR / "static").is_dir() else []
# --- Files (SPEC section 10; docs/files.md) ----------------------------------------------------
# Uploaded files live in the default storage: the filesystem under MEDIA_ROOT unless the operator
# names another backend (an S3-compatible store through django-storages: docs/files.md). Nexus
# never serves MEDIA_ROOT itself: a file is read through its owner's API or a signed URL.
MEDIA_ROOT = Path(env_str("NEXUS_MEDIA_ROOT", str(VAR_DIR / "media")))
MEDIA_URL = "/media/"


def _file_storage() -> dict:
    backend = env_str("NEXUS_FILE_STORAGE_BACKEND", "django.core.files.storage.FileSystemStorage")
    raw = env_str("NEXUS_FILE_STORAGE_OPTIONS", "")
    try:
        options = json.loads(raw) if raw else {}
    except ValueError:
        raise ImproperlyConfigured("NEXUS_FILE_STORAGE_OPTIONS is not JSON") from None
    if not isinstance(options, dict):
        raise ImproperlyConfigured("NEXUS_FILE_STORAGE_OPTIONS is a JSON object of the backend's options")
    if "." not in backend:
        raise ImproperlyConfigured("NEXUS_FILE_STORAGE_BACKEND is a dotted path to a storage class")
    return {"BACKEND": backend, "OPTIONS": options} if options else {"BACKEND": backend}


STORAGES = {
    "default": _file_storage(),
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
# Bytes of one stored file; bytes all of one user's files may take; files in one upload request.
NEXUS_FILE_MAX_BYTES = env_int("NEXUS_FILE_MAX_BYTES", 20 * 1_048_576, minimum=1)
NEXUS_FILE_QUOTA_BYTES = env_int("NEXUS_FILE_QUOTA_BYTES", 200 * 1_048_576, minimum=1)
NEXUS_FILE_MAX_PER_UPLOAD = env_int("NEXUS_FILE_MAX_PER_UPLOAD", 20, minimum=1, maximum=100)
DATA_UPLOAD_MAX_NUMBER_FILES = NEXUS_FILE_MAX_PER_UPLOAD
# The longest a signed file URL may live (seed 002's `expires`, seconds; MinIO's own cap: 7 days).
NEXUS_FILE_URL_MAX_SECONDS = env_int("NEXUS_FILE_URL_MAX_SECONDS", 7 * 86_400, minimum=1)
# GET /api/proxy/image: the largest image fetched, how long one stays cached, the fetch's deadline.
NEXUS_PROXY_IMAGE_MAX_BYTES = env_int("NEXUS_PROXY_IMAGE_MAX_BYTES", 5 * 1_048_576, minimum=1024)
NEXUS_PROXY_IMAGE_CACHE_SECONDS = env_int("NEXUS_PROXY_IMAGE_CACHE_SECONDS", 3600, minimum=0)
NEXUS_PROXY_IMAGE_TIMEOUT = env_float("NEXUS_PROXY_IMAGE_TIMEOUT", 10.0, minimum=0.1)
# A model health check (seed 002's /api/model/healthcheck) waits this long for the provider.
NEXUS_MODEL_HEALTHCHECK_TIMEOUT = env_float("NEXUS_MODEL_HEALTHCHECK_TIMEOUT", 15.0, minimum=0.1)
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

LOG_LEVEL = env_choice("NEXUS_LOG_LEVEL", "info", {"debug", "info", "warning", "error"}).upper()
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(process)d %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.channels.server": {"level": "WARNING"},
        "daphne": {"level": "WARNING"},
        "httpx": {"level": "WARNING"},
        "httpcore": {"level": "WARNING"},
        # the mcp package's HTTP client logs each request at INFO (MCP servers: docs/mcp.md)
        "httpx2": {"level": "WARNING"},
        "httpcore2": {"level": "WARNING"},
        "mcp": {"level": "WARNING"},
    },
}

NEXUS_VERSION = "0.1.0"
