"""MCP servers as rows: credentials stored encrypted and write-only, who may register and use which
server, how agents list MCP tools (REST and admin), and the admin's test action against a real
MCP server."""

from __future__ import annotations

import pytest
from django.urls import reverse

from agents.mcp import (
    credential_decrypt,
    mcp_credential_for,
    mcp_function_name,
    mcp_server_create,
    mcp_user_credential_set,
)
from agents.models import Agent, McpServer
from agents.tools.mcp import McpBinding
from core.errors import Forbidden, ValidationFailed
from core.secrets import SecretUnreadable
from runs.approvals import tool_policy
from runs.tools import offered_tools
from tests.api.conftest import assert_error

pytestmark = pytest.mark.django_db

URL = "https://mcp.example.com/mcp"


def _raw_column(server: McpServer) -> str:
    """What the database holds (no model code in between)."""
    return McpServer.objects.filter(pk=server.pk).values_list("credential_encrypted", flat=True).get()


def test_a_credential_is_stored_encrypted_and_opens_after_a_key_rotation(settings):
    server = mcp_server_create(
        owner=None, by_staff=True, name="gh", url=URL, credential="Bearer s3cret-token"
    )
    stored = _raw_column(server)
    assert stored and "s3cret" not in stored
    assert credential_decrypt(stored) == "Bearer s3cret-token"
    assert mcp_credential_for(server, None) == "Bearer s3cret-token"
    old_key = settings.SECRET_KEY
    settings.SECRET_KEY, settings.SECRET_KEY_FALLBACKS = "n" * 50, [old_key]
    assert credential_decrypt(stored) == "Bearer s3cret-token"
    settings.SECRET_KEY_FALLBACKS = []
    with pytest.raises(SecretUnreadable):
        credential_decrypt(stored)


def test_a_credential_from_the_environment_must_be_an_mcp_variable(settings):
    with pytest.raises(ValidationFailed) as caught:
        mcp_server_create(owner=None, by_staff=True, name="x", url=URL, credential_env="DJANGO_SECRET_KEY")
    assert "credential_env" in caught.value.details
    settings.NEXUS_MCP_ENV_CREDENTIALS = {"MCP_GH_TOKEN": "Bearer from-env"}
    server = mcp_server_create(owner=None, by_staff=True, name="gh", url=URL, credential_env="MCP_GH_TOKEN")
    assert mcp_credential_for(server, None) == "Bearer from-env"


def test_per_user_credentials_are_each_users_own(user, other_user):
    from agents.mcp import McpCredentialMissing

    server = mcp_server_create(owner=None, by_staff=True, name="gh", url=URL, per_user_credentials=True)
    mcp_user_credential_set(server=server, user=user, value="Bearer alice")
    assert mcp_credential_for(server, user.pk) == "Bearer alice"
    with pytest.raises(McpCredentialMissing):
        mcp_credential_for(server, other_user.pk)


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"url": "ftp://x/mcp"}, "url"),
        ({"url": "https://user:pw@x/mcp"}, "url"),
        ({"name": "has space"}, "name"),
        ({"transport": "stdio", "url": "", "command": ""}, "command"),
        ({"credential_header": "Bad Header"}, "credential_header"),
    ],
)
def test_bad_server_fields_are_refused_by_name(fields, field):
    with pytest.raises(ValidationFailed) as caught:
        mcp_server_create(owner=None, by_staff=True, **{"name": "s", "url": URL, **fields})
    assert field in caught.value.details


def test_users_register_their_own_http_servers_only_where_the_operator_allows(user, settings):
    settings.NEXUS_MCP_USER_SERVERS = False
    with pytest.raises(Forbidden):
        mcp_server_create(owner=user, by_staff=False, name="mine", url=URL)
    settings.NEXUS_MCP_USER_SERVERS = True
    assert mcp_server_create(owner=user, by_staff=False, name="mine", url=URL).owner == user
    with pytest.raises(Forbidden):  # a command on this machine: the operator's only
        mcp_server_create(
            owner=user, by_staff=False, name="cmd", transport="stdio", url="", command="/bin/sh"
        )
    with pytest.raises(Forbidden):
        mcp_server_create(owner=None, by_staff=False, name="shared", url=URL)


def test_function_names_are_what_providers_accept():
    assert mcp_function_name("gh", "create_issue") == "gh__create_issue"
    assert mcp_function_name("gh", "repo.search/v2") == "gh__repo_search_v2"
    long = mcp_function_name("server", "x" * 100)
    assert len(long) == 64 and long != mcp_function_name("server", "x" * 99)


# --- agents list MCP tools (REST) ----------------------------------------------------------------


NEW = {"name": "Helper", "provider": "local", "model": "smollm2"}


def test_an_agent_lists_a_shared_servers_tool_by_id_and_gets_its_default_name(alice):
    server = mcp_server_create(owner=None, by_staff=True, name="gh", url=URL)
    tools = [{"execution": "mcp", "server": str(server.pk), "tool": "create_issue"}]
    response = alice.post("/api/agents/", {**NEW, "tools": tools}, format="json")
    assert response.status_code == 201, response.content
    [entry] = response.json()["tools"]
    assert entry["name"] == "gh__create_issue" and entry["execution"] == "mcp"
    assert entry["server"] == str(server.pk) and entry["tool"] == "create_issue"
    stored = Agent.objects.get(pk=response.json()["id"]).tools
    assert stored == [
        {"name": "gh__create_issue", "execution": "mcp", "server": str(server.pk), "tool": "create_issue"}
    ]


def test_an_mcp_tool_takes_an_approval_policy_and_the_run_offers_it_with_it(alice):
    server = mcp_server_create(owner=None, by_staff=True, name="gh", url=URL)
    entry = {
        "execution": "mcp",
        "server": str(server.pk),
        "tool": "create_issue",
        "approval": "ask",
        "allow": [{"repo": "sandbox/*"}],
    }
    response = alice.post("/api/agents/", {**NEW, "tools": [entry]}, format="json")
    assert response.status_code == 201, response.content
    stored = Agent.objects.get(pk=response.json()["id"]).tools
    assert stored[0]["approval"] == "ask" and stored[0]["allow"] == [{"repo": "sandbox/*"}]
    binding = McpBinding(
        name="gh__create_issue", server=server, tool="create_issue", description="", parameters={}
    )
    [offered] = offered_tools(stored, {binding.name: binding}, [])
    assert offered["execution"] == "mcp" and offered["approval"] == "ask"
    assert tool_policy(offered, {"repo": "sandbox/x"}) == "run"
    assert tool_policy(offered, {"repo": "prod/x"}) == "ask"
    bad = {**entry, "approval": "sometimes"}
    assert_error(alice.post("/api/agents/", {**NEW, "tools": [bad]}, format="json"), 400, "validation_error")


def test_an_agent_cannot_list_another_users_server(alice, other_user, settings):
    settings.NEXUS_MCP_USER_SERVERS = True
    theirs = mcp_server_create(owner=other_user, by_staff=False, name="theirs", url=URL)
    for server_id in (str(theirs.pk), "00000000-0000-0000-0000-000000000000"):
        tools = [{"execution": "mcp", "server": server_id, "tool": "t"}]
        response = alice.post("/api/agents/", {**NEW, "tools": tools}, format="json")
        body = assert_error(response, 400, "validation_error")
        assert "No MCP server with this id that this agent may use." in str(body)


@pytest.mark.parametrize(
    "entry",
    [
        {"execution": "mcp", "tool": "t"},
        {"execution": "mcp", "server": "not-a-uuid", "tool": "t"},
        {"execution": "mcp", "server": "00000000-0000-0000-0000-000000000001"},
        {"execution": "mcp", "server": "00000000-0000-0000-0000-000000000001", "tool": ""},
    ],
)
def test_a_malformed_mcp_entry_is_a_400(alice, entry):
    assert_error(
        alice.post("/api/agents/", {**NEW, "tools": [entry]}, format="json"), 400, "validation_error"
    )


# --- the admin ---------------------------------------------------------------------------------------


@pytest.fixture
def staff_client(client, staff_user):
    client.force_login(staff_user)
    return client


def _form(**changes):
    data = {
        "name": "calc",
        "description": "",
        "owner": "",
        "enabled": "on",
        "transport": "http",
        "url": URL,
        "command": "",
        "args": "[]",
        "credential_header": "Authorization",
        "credential": "",
        "credential_env": "",
    }
    data.update(changes)
    return {k: v for k, v in data.items() if v is not None}


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_the_admin_saves_a_server_fetches_its_tools_and_never_shows_the_credential(staff_client, tmp_path):
    from tests.mcp.conftest import mcp_http_server

    marker_dir = tmp_path / "m"
    marker_dir.mkdir()
    with mcp_http_server(marker_dir, token="adm1n") as process:
        response = staff_client.post(
            reverse("admin:agents_mcpserver_add"),
            _form(url=process.url, credential="Bearer adm1n"),
            follow=True,
        )
        assert response.status_code == 200
        page = response.content.decode()
        assert "MCP server calc: connected; 4 tool(s)" in page, page[page.find("messagelist") :][:1500]
        server = McpServer.objects.get(name="calc")
        assert {t["name"] for t in server.tools_cache} == {"add", "shout", "broken", "slow"}
        change = staff_client.get(reverse("admin:agents_mcpserver_change", args=[server.pk])).content.decode()
        assert "adm1n" not in change and server.credential_encrypted not in change
        assert "stored (encrypted)" in change
        # The test action against the same server, and against one the egress policy refuses.
        refused = McpServer.objects.create(name="private", url="http://10.0.0.1/mcp")
        response = staff_client.post(
            reverse("admin:agents_mcpserver_changelist"),
            {"action": "test_servers", "_selected_action": [server.pk, refused.pk]},
            follow=True,
        )
    page = response.content.decode()
    assert "MCP server calc: connected; 4 tool(s): add" in page
    assert "MCP server private: failed: refused by the egress policy" in page
    refused.refresh_from_db()
    assert "private" in refused.last_error or "egress" in refused.last_error


def test_the_admin_refuses_a_bad_server_with_field_errors(staff_client):
    response = staff_client.post(reverse("admin:agents_mcpserver_add"), _form(url="ftp://nope"))
    assert response.status_code == 200
    assert "url" in response.context["adminform"].form.errors
    assert not McpServer.objects.filter(name="calc").exists()


# --- the REST API: read, and each user's own credential ----------------------------------------------


def test_users_see_shared_and_their_own_servers_never_a_credential_or_a_shared_url(
    alice,
    user,
    other_user,
    settings,
):
    settings.NEXUS_MCP_USER_SERVERS = True
    shared = mcp_server_create(owner=None, by_staff=True, name="gh", url=URL, credential="Bearer op-secret")
    McpServer.objects.filter(pk=shared.pk).update(
        tools_cache=[{"name": "create_issue", "description": "Open one.", "parameters": {"type": "object"}}]
    )
    mine = mcp_server_create(owner=user, by_staff=False, name="mine", url="https://mine.example/mcp")
    mcp_server_create(owner=other_user, by_staff=False, name="theirs", url=URL)
    body = alice.get("/api/mcp/servers/").json()
    by_name = {s["name"]: s for s in body["results"]}
    assert set(by_name) == {"gh", "mine"}
    assert by_name["gh"]["url"] is None and by_name["gh"]["last_error"] is None
    assert by_name["mine"]["url"] == "https://mine.example/mcp"
    assert by_name["gh"]["tools"] == [
        {
            "name": "create_issue",
            "function_name": "gh__create_issue",
            "description": "Open one.",
            "parameters": {"type": "object"},
        }
    ]
    assert "op-secret" not in str(body) and shared.credential_encrypted[:20] not in str(body)
    assert alice.get(f"/api/mcp/servers/{mine.pk}/").status_code == 200
    theirs = McpServer.objects.get(name="theirs")
    assert_error(alice.get(f"/api/mcp/servers/{theirs.pk}/"), 404, "not_found")


def test_a_user_sets_and_removes_their_own_credential(alice, user):
    server = mcp_server_create(owner=None, by_staff=True, name="gh", url=URL, per_user_credentials=True)
    path = f"/api/mcp/servers/{server.pk}/credential/"
    assert alice.put(path, {"credential": "Bearer alice-own"}, format="json").status_code == 204
    assert mcp_credential_for(server, user.pk) == "Bearer alice-own"
    assert alice.get(f"/api/mcp/servers/{server.pk}/").json()["has_my_credential"] is True
    assert alice.delete(path).status_code == 204
    assert alice.get(f"/api/mcp/servers/{server.pk}/").json()["has_my_credential"] is False
    assert_error(alice.put(path, {"credential": "bad\nline"}, format="json"), 400, "validation_error")
    plain = mcp_server_create(owner=None, by_staff=True, name="plain", url=URL)
    assert_error(
        alice.put(f"/api/mcp/servers/{plain.pk}/credential/", {"credential": "x"}, format="json"),
        409,
        "conflict",
    )


@pytest.mark.django_db(transaction=True)
async def test_a_run_offers_only_enabled_servers_the_agents_owner_may_use(user, other_user):
    """Checked again at run time: a row edited by hand (or a server disabled, or given to someone
    else, after the agent was saved) offers nothing."""
    from channels.db import database_sync_to_async
    from django.utils import timezone

    from agents.tools.mcp import mcp_bindings_for

    tool = {"name": "t", "description": "A tool.", "parameters": {"type": "object", "properties": {}}}

    def setup():
        fresh = {"tools_cache": [tool], "tools_fetched_at": timezone.now()}
        ok = McpServer.objects.create(name="ok", url=URL, **fresh)
        off = McpServer.objects.create(name="off", url=URL, enabled=False, **fresh)
        theirs = McpServer.objects.create(name="theirs", owner=other_user, url=URL, **fresh)
        entries = [
            {"name": f"{s.name}__t", "execution": "mcp", "server": str(s.pk), "tool": "t"}
            for s in (ok, off, theirs)
        ]
        entries.append({"name": "ok__gone", "execution": "mcp", "server": str(ok.pk), "tool": "gone"})
        return Agent.objects.create(owner=user, name="A", provider="local", model="m", tools=entries)

    agent = await database_sync_to_async(setup)()
    bindings = await mcp_bindings_for(agent, user.pk)
    assert list(bindings) == ["ok__t"]
    assert bindings["ok__t"].description == "A tool." and bindings["ok__t"].tool == "t"


def test_users_register_change_and_delete_their_own_servers_over_rest_where_allowed(alice, user, settings):
    body = {"name": "mine", "url": "https://mine.example/mcp", "credential": "Bearer mine-secret"}
    settings.NEXUS_MCP_USER_SERVERS = False
    assert_error(alice.post("/api/mcp/servers/", body, format="json"), 403, "forbidden")
    settings.NEXUS_MCP_USER_SERVERS = True
    created = alice.post("/api/mcp/servers/", body, format="json")
    assert created.status_code == 201, created.content
    data = created.json()
    assert (
        data["owner_id"] == user.pk
        and data["shared"] is False
        and "mine-secret" not in created.content.decode()
    )
    server = McpServer.objects.get(pk=data["id"])
    assert mcp_credential_for(server, user.pk) == "Bearer mine-secret"
    assert_error(alice.post("/api/mcp/servers/", body, format="json"), 409, "conflict")
    assert_error(alice.post("/api/mcp/servers/", {**body, "name": "s", "shared": True}, format="json"), 403)
    assert_error(alice.post("/api/mcp/servers/", {**body, "name": "x", "url": "ftp://x"}, format="json"), 400)
    changed = alice.patch(
        f"/api/mcp/servers/{server.pk}/", {"url": "https://other.example/mcp"}, format="json"
    )
    assert changed.status_code == 200 and changed.json()["url"] == "https://other.example/mcp"
    shared = mcp_server_create(owner=None, by_staff=True, name="op", url=URL)
    assert_error(alice.patch(f"/api/mcp/servers/{shared.pk}/", {"enabled": False}, format="json"), 403)
    assert_error(alice.delete(f"/api/mcp/servers/{shared.pk}/"), 403, "forbidden")
    assert alice.delete(f"/api/mcp/servers/{server.pk}/").status_code == 204
    assert not McpServer.objects.filter(pk=server.pk).exists()


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_refresh_fetches_the_tool_list_or_says_why_not(alice, user, settings, mcp_http):
    settings.NEXUS_MCP_USER_SERVERS = True
    server = mcp_server_create(owner=user, by_staff=False, name="calc", url=mcp_http.url)
    body = alice.post(f"/api/mcp/servers/{server.pk}/refresh/").json()
    assert body["ok"] is True and body["error"] == ""
    assert {t["function_name"] for t in body["server"]["tools"]} == {
        "calc__add",
        "calc__shout",
        "calc__broken",
        "calc__slow",
    }
    settings.NEXUS_EGRESS_ALLOW = []
    body = alice.post(f"/api/mcp/servers/{server.pk}/refresh/").json()
    assert body["ok"] is False and "egress policy" in body["error"]
    assert len(body["server"]["tools"]) == 4  # the cached list stays
