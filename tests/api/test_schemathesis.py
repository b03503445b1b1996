"""Property-based run of the whole API against its own OpenAPI schema (schemathesis 4).

The real Django application (WSGI, in process, on the test database) answers generated requests,
valid and invalid, authenticated with a real JWT. No response may be a server error, and every
response must match what the schema promises (status code, content type, headers, body).
Path ids are real objects most of the time, so the success paths are exercised too.

The async run endpoints (tag ``runs``: invoke, agent run and the event stream over SSE, stop) are
asked of a real daphne process instead, on its own SQLite database with a scripted provider: their
runs and streams live on daphne's event loop, which the in-process WSGI handler does not keep
between requests. schemathesis reads an event stream until it ends or for ``STREAM_SECONDS``.
"""

from __future__ import annotations

import dataclasses
import random
import re
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
from django.core import signals
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)

from agents.models import Agent, McpServer
from agents.serializers import MCP_URL_PATTERN
from conversations.models import Message
from core.apikeys import api_key_create
from core.auth import tokens_issue
from files.services import file_store
from knowledge import services as knowledge_services
from knowledge import tasks as knowledge_tasks
from tests.api.conftest import make_conversation
from tests.procs import Process, base_env, manage, start_daphne
from tests.realtime_procs.cluster import SCRIPTED_PLUGIN, DbTool

pytestmark = [pytest.mark.django_db]

EXAMPLES_PER_OPERATION = 30
RUN_EXAMPLES_PER_OPERATION = 20
STREAM_SECONDS = 2.0  # how long an event stream that does not end is read (and its first byte awaited)
RUN_TIMEOUT = 60.0
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
    ignored_auth,
    unsupported_method,
]


# The served schema, loaded through the real application at collection (no database needed).
schema = schemathesis.openapi.from_wsgi("/api/schema/", get_wsgi_application())
RUN_TAG = "runs"
# The same schema, its hooks and auth, sent over HTTP to daphne (no in-process app)
run_schema = dataclasses.replace(schema.include(tag=RUN_TAG), app=None)
KNOWN: dict[str, list[str]] = {}
TOKEN: dict[str, str] = {}
STATUSES: dict[str, Counter] = {}  # operation -> status code -> count, over the whole run
# Random credentials never log in or refresh; every other operation must succeed sometimes.
NEVER_SUCCEED = {"POST /api/auth/login", "POST /api/auth/refresh"}
# The message-tree actions act on a stored reply; the generated ids name none in daphne's database,
# so here they meet only their refusals (checked against the schema like every answer). Their
# success paths: tests/runs/test_branches_rest.py and tests/browser/test_branches.py.
_MESSAGE = "/api/conversations/{conversation_id}/messages/{message_id}"
BRANCH_ACTIONS = {
    f"POST {_MESSAGE}/{action}/": status
    for action, status in (
        ("regenerate", "202"),
        ("edit", "202"),
        ("continue", "202"),
        ("select", "200"),
    )
}
NEVER_SUCCEED |= set(BRANCH_ACTIONS)
# A decision needs a tool call waiting for approval, which no generated id names: its success path
# is tests/runs/test_approvals.py (and the cluster and browser tests).
APPROVAL_DECIDE = "POST /api/conversations/{conversation_id}/approvals/{tool_call_id}/"
NEVER_SUCCEED.add(APPROVAL_DECIDE)
# A URL document needs a server to fetch from: generated URLs meet only refusals here (400, 403
# egress_denied, 502). Its success path: tests/knowledge/test_tasks_live.py.
NEVER_SUCCEED.add("POST /api/knowledge/bases/{base_id}/documents/url/")
RNG = random.Random(4)


def _is_uuid(value: object) -> bool:
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return True


@schema.hook
def map_path_parameters(context, path_parameters):
    # Most cases hit real objects (success paths), the rest keep random ids (404s). Only ids
    # that are valid UUIDs are swapped: an invalid one belongs to a negative case.
    if not path_parameters:
        return path_parameters
    for name, choices in KNOWN.items():
        if name in path_parameters and choices and _is_uuid(path_parameters[name]) and RNG.random() < 0.75:
            path_parameters[name] = RNG.choice(choices)
    return path_parameters


@pytest.fixture(autouse=True)
def _keep_the_test_connection():
    """Like Django's test client: a request must not close the test's database connection (its
    transaction holds the data); the raw WSGI handler would, at request_finished."""
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


@pytest.fixture
def objects(_keep_the_test_connection, staff_user, settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path / "media")
    settings.NEXUS_PROVIDER_STATUS_TIMEOUT = 0.5
    settings.NEXUS_TITLE_TIMEOUT = 0.5
    agent = Agent.objects.create(owner=staff_user, name="Fuzzed", provider="local", model="m")
    shared = Agent.objects.create(name="Shared", provider="ollama", model="m", base_url="http://127.0.0.1:9")
    conversation = make_conversation(staff_user, shared, title="Fuzz me", messages=("hello there", "hi"))
    message = Message.objects.filter(conversation=conversation).first()
    stored, _ = file_store(owner=staff_user, name="fuzz.txt", content=b"Fuzz me.")
    keys = [api_key_create(user=staff_user, name=f"fuzz {n}")[0] for n in range(3)]
    # An MCP server that takes each user's own credential (never contacted: no tool list is fetched).
    mcp_server = McpServer.objects.create(
        name="fuzzed", url="http://127.0.0.1:9/mcp", per_user_credentials=True
    )
    base = knowledge_services.base_create(owner=staff_user, name="fuzzed base")
    document, _ = knowledge_services.document_add_text(base=base, text="Fuzz the knowledge base.")
    task, _ = knowledge_tasks.task_create(staff_user, document)
    TOKEN["access"] = tokens_issue(staff_user)["access_token"]
    RNG.seed(4)  # the same choices whatever ran before
    KNOWN.update(
        agent_id=[str(agent.pk), str(shared.pk)],
        conversation_id=[str(conversation.pk)],
        message_id=[str(message.pk)],
        file_id=[str(stored.pk)],
        key_id=[str(key.pk) for key in keys],
        server_id=[str(mcp_server.pk)],
        base_id=[str(base.pk)],
        document_id=[str(document.pk)],
        task_id=[str(task.pk)],
    )
    yield
    KNOWN.clear()
    TOKEN.clear()


def _valid_mcp_url(url: object) -> bool:
    return isinstance(url, str) and len(url) <= 500 and bool(re.fullmatch(MCP_URL_PATTERN, url))


@schema.hook
def map_body(context, body):
    # Bodies name objects too: swap valid random ids for real ones (most of the time).
    operation = context.operation
    if not isinstance(body, dict):
        return body
    if (operation.method.upper(), operation.path) == ("POST", "/api/conversations/"):
        # a conversation needs agents the caller may use
        if isinstance(body.get("agents"), list) and RNG.random() < 0.75:
            agents = body["agents"]
            if agents and all(_is_uuid(value) for value in agents):
                body["agents"] = KNOWN["agent_id"][: min(len(agents), len(KNOWN["agent_id"]))]
        return body
    if operation.path.startswith("/api/mcp/servers/") and _valid_mcp_url(body.get("url")):
        # A valid MCP server URL stays on a closed loopback port: a refresh of the fuzzed server
        # then never asks the resolver for a made-up name (the network guard would fail the run).
        # An invalid one is left as it is: it belongs to a negative case.
        body["url"] = "http://127.0.0.1:9/mcp"
    if (operation.method.upper(), operation.path) == ("POST", "/api/knowledge/search/"):
        if isinstance(body.get("bases"), list) and body["bases"] and RNG.random() < 0.75:
            body["bases"] = KNOWN["base_id"][:1]
        return body
    # invoke and agent run: the agent who answers, and the conversation it answers in
    for name in ("agent_id", "conversation_id"):
        if name in body and _is_uuid(body[name]) and KNOWN.get(name) and RNG.random() < 0.75:
            body[name] = RNG.choice(KNOWN[name])
    return body


@schema.hook
def after_call(context, case, response):
    STATUSES.setdefault(f"{case.operation.method.upper()} {case.operation.path}", Counter())[
        response.status_code
    ] += 1


@schema.auth(refresh_interval=None, retry_on=[])
class StaffBearer:
    """A real access token of the test's staff user, as a client would send it."""

    def get(self, case, context):
        return TOKEN.get("access", "")

    def set(self, case, data, context):
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}


@schema.exclude(tag=RUN_TAG).parametrize()
@settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_the_api_keeps_the_promises_of_its_schema(case, objects):
    case.call_and_validate(checks=CHECKS)


@pytest.fixture(scope="module")
def daphne(tmp_path_factory) -> Iterator[tuple[str, DbTool]]:
    """One daphne on a private SQLite database (inline runs, in-memory layer, the scripted
    provider), and the tool that writes to that database: (base URL, db tool)."""
    tmp: Path = tmp_path_factory.mktemp("schemathesis-daphne")
    env = base_env(
        NEXUS_VAR_DIR=str(tmp),
        DATABASE_URL=f"sqlite:///{tmp / 'db.sqlite3'}",
        NEXUS_PROVIDER_PLUGINS=SCRIPTED_PLUGIN,
        NEXUS_LOG_LEVEL="warning",
        NEXUS_WS_MESSAGES_PER_MINUTE="100000",  # the run endpoints share the socket's message limit
    )
    migrated = manage("migrate", "--noinput", env=env)
    assert migrated.returncode == 0, migrated.stderr
    db = DbTool(env, tmp / "dbtool.log")
    web: Process | None = None
    try:
        web, port = start_daphne(env=env, log_dir=tmp)
        yield f"http://127.0.0.1:{port}", db
    finally:
        if web is not None:
            web.stop()
        db.stop()


@pytest.fixture
def run_objects(daphne) -> Iterator[str]:
    """A staff user, an agent and a conversation in daphne's database; the base URL."""
    base_url, db = daphne
    made = db.call("user", username=f"op{uuid.uuid4().hex[:10]}", is_staff=True)
    agent = db.call(
        "agent",
        owner_id=made["id"],
        provider="scripted",
        model="scripted-1",
        config={"reply": "Fuzzed reply."},
    )
    conversation = db.call("conversation", owner_id=made["id"], agent_ids=[agent])
    TOKEN["access"] = made["token"]
    RNG.seed(4)
    KNOWN.update(agent_id=[agent], conversation_id=[conversation])
    yield base_url
    KNOWN.clear()
    TOKEN.clear()


@run_schema.parametrize()
@settings(
    max_examples=RUN_EXAMPLES_PER_OPERATION,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_the_run_endpoints_keep_the_promises_of_the_schema_through_daphne(case, run_objects):
    events = case.operation.path.endswith("/events/")
    case.call_and_validate(
        base_url=run_objects, checks=CHECKS, timeout=STREAM_SECONDS if events else RUN_TIMEOUT
    )


def test_the_run_reached_the_success_paths():
    """Guards the run above: had auth or the id mapping broken, every answer would be a
    documented 401/404 and the run would pass without testing much."""
    if not STATUSES:
        pytest.skip("run together with the schemathesis tests above")
    assert len(STATUSES) == len(list(schema.get_all_operations()))
    for operation, statuses in STATUSES.items():
        assert not any(code >= 500 for code in statuses), (operation, statuses)
        if operation not in NEVER_SUCCEED:
            assert any(200 <= code < 300 for code in statuses), (operation, dict(statuses))


def test_the_schema_documents_the_run_endpoints_with_their_bodies():
    """invoke, agent run, stop and the event stream: in the schema with request and response bodies
    (they are async views that drf-spectacular cannot see by itself)."""
    paths = schema.raw_schema["paths"]
    expected = {
        ("/api/invoke/", "post"): "application/json",
        ("/api/agents/{agent_id}/run/", "post"): "text/event-stream",
        ("/api/conversations/{conversation_id}/stop/", "post"): "application/json",
        ("/api/conversations/{conversation_id}/events/", "get"): "text/event-stream",
    }
    for (path, method), media_type in expected.items():
        operation = paths[path][method]
        assert RUN_TAG in operation["tags"]
        assert operation["security"], path  # credentials required
        assert operation["responses"]["200"]["content"][media_type]["schema"], path
        if method == "post":
            assert operation["requestBody"]["content"]["application/json"]["schema"], path
    for label, status in BRANCH_ACTIONS.items():
        method, path = label.split(" ", 1)
        operation = paths[path][method.lower()]
        assert RUN_TAG in operation["tags"] and operation["security"], path
        assert operation["responses"][status]["content"]["application/json"]["schema"], path
    assert paths[f"{_MESSAGE}/edit/"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert {
        p["name"] for p in paths["/api/conversations/{conversation_id}/events/"]["get"]["parameters"]
    } == {
        "conversation_id",
        "after_seq",
        "Last-Event-ID",
    }
    approvals = paths["/api/conversations/{conversation_id}/approvals/{tool_call_id}/"]["post"]
    assert RUN_TAG in approvals["tags"] and approvals["security"]
    assert approvals["requestBody"]["content"]["application/json"]["schema"]
    assert approvals["responses"]["200"]["content"]["application/json"]["schema"]
    assert approvals["responses"]["409"]["content"]["application/json"]["schema"]
    assert len(list(run_schema.get_all_operations())) == len(expected) + len(BRANCH_ACTIONS) + 1


def test_the_run_endpoints_refuse_what_their_schema_refuses(run_objects):
    """Found by reading the views against the schema: a malformed run_id reached the ORM (500), and
    ``false``/``0``/``""`` were taken for "no id" (stop every run, start a new conversation)."""
    headers = {"Authorization": f"Bearer {TOKEN['access']}"}
    agent, conversation = KNOWN["agent_id"][0], KNOWN["conversation_id"][0]
    bad = [
        (f"/api/conversations/{conversation}/stop/", {"run_id": "not-a-uuid"}),
        (f"/api/conversations/{conversation}/stop/", {"run_id": False}),
        (f"/api/conversations/{conversation}/stop/", {"run_id": ""}),
        ("/api/invoke/", {"agent_id": agent, "message": "hi", "conversation_id": 0}),
        ("/api/invoke/", {"agent_id": agent, "message": "hi", "client_message_id": "x" * 129}),
        ("/api/invoke/", {"agent_id": 7, "message": "hi"}),
        (f"/api/agents/{agent}/run/", {"query": "hi", "conversation_id": ""}),
    ]
    with httpx.Client(base_url=run_objects, headers=headers, timeout=RUN_TIMEOUT) as client:
        for path, body in bad:
            response = client.post(path, json=body)
            assert response.status_code == 400, (path, body, response.status_code, response.text)
            assert response.json()["code"] == "validation_error"
        stopped = client.post(f"/api/conversations/{conversation}/stop/", json={"run_id": None})
        assert stopped.status_code == 200 and stopped.json() == {"stopped": [], "count": 0}
