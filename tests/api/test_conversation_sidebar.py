"""What the sidebar lists: last activity and a preview, search over titles and messages, pin and
archive, export, the automatic title after the first exchange, and limits sized for a person."""

from __future__ import annotations

import json
from datetime import UTC, timedelta

import pytest
from django.conf import settings as django_settings
from django.test import override_settings

from conversations.models import Conversation, Message
from conversations.text import markdown_to_plain, preview, title_from_message
from core import throttles
from tests.api.conftest import assert_error, make_conversation

pytestmark = pytest.mark.django_db

LIST = "/api/conversations/"


def detail(conversation) -> str:
    return f"/api/conversations/{conversation.pk}/"


def titles(response) -> list[str]:
    assert response.status_code == 200, response.content
    return [row["title"] for row in response.json()["results"]]


def _age(conversation: Conversation, minutes: int) -> None:
    """Make a conversation and its messages ``minutes`` older."""
    delta = timedelta(minutes=minutes)
    Conversation.objects.filter(pk=conversation.pk).update(created_at=conversation.created_at - delta)
    for message in conversation.messages.all():
        Message.objects.filter(pk=message.pk).update(created_at=message.created_at - delta)


# --- activity and preview -----------------------------------------------------------------------


def test_the_list_has_the_last_message_time_and_a_plain_text_preview(alice, user, shared_agent):
    reply = "**Paris** is the capital; see [the city](https://paris.fr).\n\n```\ncode\n```\n" + "x" * 300
    conversation = make_conversation(user, shared_agent, title="France", messages=("Capital?", reply))
    row = alice.get(LIST).json()["results"][0]
    last = conversation.messages.order_by("-created_at").first()
    assert row["last_message_at"] == last.created_at.isoformat().replace("+00:00", "Z")
    assert row["preview"].startswith("Paris is the capital; see the city. code xxx")
    assert len(row["preview"]) <= 100 and row["preview"].endswith("…")
    assert row["pinned"] is False and row["archived"] is False


def test_a_conversation_without_messages_has_no_preview(alice, user, shared_agent):
    make_conversation(user, shared_agent)
    row = alice.get(LIST).json()["results"][0]
    assert row["last_message_at"] is None and row["preview"] == ""
    created = alice.post(LIST, {"agents": [str(shared_agent.pk)]}, format="json").json()
    assert created["last_message_at"] is None and created["preview"] == ""
    assert created["pinned"] is False and created["archived"] is False


def test_the_preview_skips_a_reply_still_without_text(alice, user, shared_agent):
    conversation = make_conversation(user, shared_agent, messages=("Tell me a story",))
    Message.objects.create(
        conversation=conversation, role="agent", agent=shared_agent, content="", status="streaming", seq=2
    )
    assert alice.get(LIST).json()["results"][0]["preview"] == "Tell me a story"


def test_the_list_is_ordered_by_last_activity_not_by_creation(alice, user, shared_agent):
    older = make_conversation(user, shared_agent, title="older", messages=("hi", "hello"))
    newer = make_conversation(user, shared_agent, title="newer", messages=("hi", "hello"))
    empty = make_conversation(user, shared_agent, title="empty")
    _age(older, 30)
    _age(newer, 60)
    _age(empty, 45)
    assert titles(alice.get(LIST)) == ["older", "empty", "newer"]
    # a new message in the oldest one brings it to the top
    Message.objects.create(conversation=newer, role="user", content="back again", seq=3)
    assert titles(alice.get(LIST)) == ["newer", "older", "empty"]
    assert alice.get(LIST).json()["results"][0]["preview"] == "back again"


def test_the_detail_and_a_patch_carry_the_activity_too(alice, alice_conversation):
    body = alice.get(detail(alice_conversation)).json()
    assert body["preview"] == "Paris." and body["last_message_at"]
    patched = alice.patch(detail(alice_conversation), {"pinned": True}, format="json").json()
    assert patched["preview"] == "Paris." and patched["pinned"] is True


def test_markdown_becomes_plain_text():
    assert markdown_to_plain("# Title\n- *one*\n- __two__\n> `code` ~~gone~~") == "Title one two code gone"
    assert markdown_to_plain("![a cat](cat.png) <b>bold</b> <https://x.org>") == "a cat bold https://x.org"
    assert preview("word " * 40).endswith("word…") and len(preview("word " * 40)) <= 100


# --- search ---------------------------------------------------------------------------------------


def test_search_finds_a_conversation_by_a_word_in_its_third_message(alice, user, shared_agent):
    make_conversation(user, shared_agent, title="Trip", messages=("Plan a trip", "Where to?", "Maybe Lisbon"))
    make_conversation(user, shared_agent, title="Cooking", messages=("Soup?", "Yes", "With leeks"))
    assert titles(alice.get(LIST, {"search": "lisbon"})) == ["Trip"]
    assert titles(alice.get(LIST, {"search": "LEEKS"})) == ["Cooking"]
    assert titles(alice.get(LIST, {"search": "nowhere"})) == []


def test_search_matches_titles_case_insensitively_and_only_my_conversations(
    alice, user, other_user, shared_agent
):
    make_conversation(user, shared_agent, title="Quarterly Report")
    make_conversation(other_user, shared_agent, title="quarterly secrets", messages=("quarterly",))
    assert titles(alice.get(LIST, {"search": "QUARTERLY"})) == ["Quarterly Report"]


def test_search_treats_like_wildcards_as_text(alice, user, shared_agent):
    make_conversation(user, shared_agent, title="a", messages=("100% sure",))
    make_conversation(user, shared_agent, title="b", messages=("100 sure",))
    assert titles(alice.get(LIST, {"search": "100%"})) == ["a"]
    assert titles(alice.get(LIST, {"search": "_"})) == []


def test_search_folds_the_case_of_accented_letters_on_postgresql(alice, user, shared_agent):
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("SQLite's LIKE folds ASCII letters only (docs/api.md)")
    make_conversation(user, shared_agent, title="a", messages=("Une école à Paris",))
    assert titles(alice.get(LIST, {"search": "ÉCOLE"})) == ["a"]


def test_a_blank_search_lists_everything_and_a_huge_one_is_refused(alice, user, shared_agent):
    make_conversation(user, shared_agent, title="one")
    assert titles(alice.get(LIST, {"search": "  "})) == ["one"]
    body = assert_error(alice.get(LIST, {"search": "x" * 201}), 400, "validation_error")
    assert "search" in body["errors"]


# --- pin and archive ------------------------------------------------------------------------------


def test_pinned_conversations_come_first(alice, user, shared_agent):
    old = make_conversation(user, shared_agent, title="old", messages=("hi",))
    make_conversation(user, shared_agent, title="new", messages=("hi",))
    _age(old, 10)
    assert titles(alice.get(LIST)) == ["new", "old"]
    response = alice.patch(detail(old), {"pinned": True}, format="json")
    assert response.status_code == 200 and response.json()["pinned"] is True
    assert titles(alice.get(LIST)) == ["old", "new"]
    alice.patch(detail(old), {"pinned": False}, format="json")
    assert titles(alice.get(LIST)) == ["new", "old"]


def test_archived_conversations_are_hidden_unless_asked_for(alice, user, shared_agent):
    kept = make_conversation(user, shared_agent, title="kept")
    filed = make_conversation(user, shared_agent, title="filed")
    assert alice.patch(detail(filed), {"archived": True}, format="json").json()["archived"] is True
    assert titles(alice.get(LIST)) == ["kept"]
    assert titles(alice.get(LIST, {"archived": "1"})) == ["filed"]
    assert titles(alice.get(LIST, {"archived": "1", "search": "kept"})) == []
    # still readable, and it comes back
    assert alice.get(detail(filed)).status_code == 200
    alice.patch(detail(filed), {"archived": False}, format="json")
    assert sorted(titles(alice.get(LIST))) == ["filed", "kept"]
    assert kept.pk  # untouched
    assert_error(alice.get(LIST, {"archived": "perhaps"}), 400, "validation_error")


def test_patch_validates_and_keeps_what_it_is_not_given(alice, alice_conversation):
    assert_error(alice.patch(detail(alice_conversation), {}, format="json"), 400, "validation_error")
    assert_error(alice.patch(detail(alice_conversation), {"pinned": "often"}, format="json"), 400)
    assert_error(alice.patch(detail(alice_conversation), {"title": "  "}, format="json"), 400)
    body = alice.patch(detail(alice_conversation), {"archived": True}, format="json").json()
    assert body["title"] == "Alice's chat" and body["pinned"] is False


def test_only_the_owner_pins_or_archives(mallory, alice_conversation):
    assert_error(mallory.patch(detail(alice_conversation), {"pinned": True}, format="json"), 404)
    alice_conversation.refresh_from_db()
    assert alice_conversation.pinned is False


# --- export ----------------------------------------------------------------------------------------


def test_export_as_markdown_is_a_download_with_speakers_and_times(alice, user, shared_agent):
    conversation = make_conversation(
        user, shared_agent, title="Capital / France", messages=("What is the capital?", "**Paris**.")
    )
    Message.objects.create(
        conversation=conversation, role="agent", agent=shared_agent, content="cut", status="stopped", seq=3
    )
    response = alice.get(f"{detail(conversation)}export/", {"format": "md"})
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/markdown")
    assert (
        response["Content-Disposition"]
        == f'attachment; filename="capital-france-{str(conversation.pk)[:8]}.md"'
    )
    text = response.content.decode()
    assert text.startswith("# Capital / France\n")
    assert "- Agents: Shared helper (local · smollm2-135m-instruct)" in text
    when = conversation.messages.first().created_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    assert f"**alice** · {when}\n\nWhat is the capital?" in text
    assert "**Shared helper** · " in text and "\n\n**Paris**.\n" in text
    assert "· *stopped*\n\ncut" in text
    assert text.index("What is the capital?") < text.index("**Paris**.") < text.index("cut")


def test_export_as_json_has_the_conversation_and_every_message(alice, user, shared_agent):
    conversation = make_conversation(user, shared_agent, title="T", messages=tuple(f"m{i}" for i in range(7)))
    response = alice.get(f"{detail(conversation)}export/", {"format": "json"})
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response["Content-Disposition"].endswith('.json"')
    body = json.loads(response.content)
    assert body["conversation"]["id"] == str(conversation.pk) and body["conversation"]["title"] == "T"
    assert [m["content"] for m in body["messages"]] == [f"m{i}" for i in range(7)]
    assert body["messages"][1]["agent_name"] == "Shared helper"
    assert body["exported_at"]


def test_export_defaults_to_markdown_and_refuses_other_formats(alice, alice_conversation):
    url = f"{detail(alice_conversation)}export/"
    assert alice.get(url)["Content-Type"].startswith("text/markdown")
    body = assert_error(alice.get(url, {"format": "pdf"}), 400, "validation_error")
    assert "format" in body["errors"]


def test_export_of_another_users_conversation_is_a_json_404(mallory, alice_conversation, anon):
    assert_error(mallory.get(f"{detail(alice_conversation)}export/", {"format": "md"}), 404, "not_found")
    assert_error(anon.get(f"{detail(alice_conversation)}export/", {"format": "md"}), 401)


# --- the automatic title ----------------------------------------------------------------------------


def title_url(conversation) -> str:
    return f"/api/conversations/{conversation.pk}/generate-title/"


def test_an_untitled_conversation_gets_its_first_sentence_after_the_first_exchange(alice, user, shared_agent):
    question = "Can you explain the difference between **TCP** and UDP? I keep mixing them up."
    conversation = make_conversation(user, shared_agent, messages=(question, "Sure."))
    response = alice.post(title_url(conversation), {"mode": "untitled"}, format="json")
    assert response.status_code == 200, response.content
    assert response.json() == {
        "id": str(conversation.pk),
        "title": "Can you explain the difference between TCP and UDP?",
        "source": "first_message",
    }
    conversation.refresh_from_db()
    assert conversation.title == "Can you explain the difference between TCP and UDP?"
    assert titles(alice.get(LIST)) == [conversation.title]
    # a second call (another tab, a later reply) keeps it
    again = alice.post(title_url(conversation), {"mode": "untitled"}, format="json").json()
    assert again["source"] == "kept" and again["title"] == conversation.title


def test_a_title_of_the_persons_own_is_never_replaced(alice, user, shared_agent):
    conversation = make_conversation(user, shared_agent, messages=("Plan a trip to Lisbon", "Sure."))
    alice.patch(detail(conversation), {"title": "Holidays"}, format="json")
    body = alice.post(title_url(conversation), {"mode": "untitled"}, format="json").json()
    assert body == {"id": str(conversation.pk), "title": "Holidays", "source": "kept"}
    conversation.refresh_from_db()
    assert conversation.title == "Holidays"


def test_an_untitled_conversation_without_a_message_of_mine_is_refused(alice, user, shared_agent):
    conversation = make_conversation(user, shared_agent)
    assert_error(
        alice.post(title_url(conversation), {"mode": "untitled"}, format="json"), 400, "validation_error"
    )
    assert_error(
        alice.post(title_url(conversation), {"mode": "guess"}, format="json"), 400, "validation_error"
    )


@pytest.mark.parametrize(
    ("message", "title"),
    [
        (
            "How do I reverse a list in Python without modifying the original?",
            "How do I reverse a list in Python without modifying the…",
        ),
        (
            "What's a good recipe for banana bread? I have three ripe bananas.",
            "What's a good recipe for banana bread?",
        ),
        ("hi", "Hi"),
        (
            "Write a haiku about autumn leaves falling in the park.",
            "Write a haiku about autumn leaves falling in the park",
        ),
        ("```py\nprint(1)\n```\nWhy does this print 1?", "Why does this print 1?"),
        (
            "Explain e.g. the difference between TCP and UDP",
            "Explain e.g. the difference between TCP and UDP",
        ),
        ("# Plan\n\nA trip to [Lisbon](https://lisbon.pt) in *March*", "Plan"),
        ("```\nonly code\n```", ""),
    ],
)
def test_the_title_heuristic(message, title):
    assert title_from_message(message) == title


# --- limits sized for a person -------------------------------------------------------------------


def test_the_default_limits_fit_a_person_and_seed_001_keeps_its_own():
    rates = django_settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]
    # tests/api/conftest.py turns every rate off: read the defaults from a fresh settings module
    import importlib

    import nexus.settings as module

    defaults = importlib.reload(module).REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]
    assert set(rates) == set(defaults)
    assert defaults["conversation_create"] == "30/min"
    assert defaults["conversation_read"] == "120/min"
    assert defaults["agent_ops"] == "120/min"
    assert defaults["seed001_session_create"] == "5/min"
    assert defaults["seed001_session_read"] == "10/min"
    assert defaults["seed001_agent_ops"] == "20/min"
    assert throttles.Seed001SessionCreateThrottle.scope == "seed001_session_create"


def test_a_page_worth_of_reads_and_new_chats_in_a_minute_is_not_throttled(alice, shared_agent, settings):
    rates = {
        **settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"],
        "conversation_create": "30/min",
        "conversation_read": "120/min",
    }
    with override_settings(REST_FRAMEWORK={**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": rates}):
        for _ in range(20):
            assert alice.get(LIST).status_code == 200
        for _ in range(10):
            assert alice.post(LIST, {"agents": [str(shared_agent.pk)]}, format="json").status_code == 201
            assert alice.get(LIST, {"search": "x"}).status_code == 200


def test_a_throttled_call_still_gets_429_with_retry_after_and_says_the_wait_once(
    alice, alice_conversation, settings
):
    rates = {**settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], "conversation_read": "2/min"}
    with override_settings(REST_FRAMEWORK={**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": rates}):
        assert alice.get(LIST).status_code == 200
        assert alice.get(f"{detail(alice_conversation)}export/").status_code == 200
        response = alice.get(LIST)
    body = assert_error(response, 429, "rate_limited")
    wait = int(response["Retry-After"])
    assert 1 <= wait <= 60 and body["retry_after"] == wait
    assert body["detail"] == f"Too many requests. Try again in {wait} s."


def test_seed_001_scopes_keep_seed_001_numbers_apart_from_the_native_budget(user, throttle_rate):
    from rest_framework.response import Response
    from rest_framework.test import APIRequestFactory, force_authenticate
    from rest_framework.views import APIView

    class Seed001Create(APIView):  # what the seed-001 dialect's create path will declare
        throttle_classes = (throttles.Seed001SessionCreateThrottle,)

        def post(self, request):
            return Response({})

    throttle_rate("seed001_session_create", "5/min")
    throttle_rate("conversation_create", "5/min")
    factory = APIRequestFactory()

    def create():
        request = factory.post("/chat/sessions/create", {}, format="json")
        force_authenticate(request, user=user)
        return Seed001Create.as_view()(request)

    assert [create().status_code for _ in range(6)] == [200] * 5 + [429]
    # the native budget is its own: seed 001's spent budget takes nothing from it
    native = throttles.ConversationCreateThrottle()
    request = factory.post("/api/conversations/")
    request.user = user
    assert [native.allow_request(request, None) for _ in range(6)] == [True] * 5 + [False]
