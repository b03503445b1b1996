"""An agent's avatar over REST: one emoji and a #rrggbb colour, read and written, validated; an
agent given no colour gets one derived from its id."""

from __future__ import annotations

import re

import pytest

from agents.avatars import PALETTE, default_colour, is_one_emoji
from agents.models import Agent
from tests.api.conftest import assert_error

pytestmark = pytest.mark.django_db

LIST = "/api/agents/"
NEW = {"name": "Painter", "provider": "local", "model": "smollm2-135m-instruct"}


def test_an_agent_is_created_with_its_emoji_and_colour_and_reads_them_back(alice):
    response = alice.post(LIST, {**NEW, "emoji": "👩‍💻", "colour": "#1C7ED6"}, format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["emoji"] == "👩‍💻"
    assert body["colour"] == "#1c7ed6"  # stored lower-case
    agent = Agent.objects.get(pk=body["id"])
    assert agent.colour == "#1c7ed6"
    assert alice.get(f"{LIST}{agent.pk}/").json()["colour"] == "#1c7ed6"


def test_without_a_colour_an_agent_gets_one_derived_from_its_id(alice):
    ids_and_colours = []
    for i in range(12):
        body = alice.post(LIST, {**NEW, "name": f"Painter {i}"}, format="json").json()
        assert re.fullmatch(r"#[0-9a-f]{6}", body["colour"])
        assert body["colour"] == default_colour(body["id"])
        ids_and_colours.append(body["colour"])
    assert len(set(ids_and_colours)) >= 4  # agents look different from one another


def test_an_agent_made_without_the_services_still_reads_a_derived_colour(alice, user):
    agent = Agent.objects.create(owner=user, name="Raw", provider="local", model="m")
    assert agent.colour == ""
    assert alice.get(f"{LIST}{agent.pk}/").json()["colour"] == default_colour(agent.pk)


def test_the_colour_and_emoji_are_changed_and_an_emptied_colour_is_derived_again(alice):
    body = alice.post(LIST, {**NEW, "emoji": "🦉"}, format="json").json()
    url = f"{LIST}{body['id']}/"
    changed = alice.patch(url, {"emoji": "🇫🇷", "colour": "#ae3ec9"}, format="json")
    assert changed.status_code == 200, changed.content
    assert (changed.json()["emoji"], changed.json()["colour"]) == ("🇫🇷", "#ae3ec9")
    reset = alice.patch(url, {"colour": ""}, format="json").json()
    assert reset["colour"] == default_colour(body["id"])


@pytest.mark.parametrize("emoji", ["ab", "🦉🦉", "a", "🦉 x", "🇫🇷🇩🇪", "\u200d"])
def test_an_emoji_must_be_one_emoji(alice, emoji):
    body = assert_error(alice.post(LIST, {**NEW, "emoji": emoji}, format="json"), 400, "validation_error")
    assert "emoji" in body["errors"], body


@pytest.mark.parametrize("colour", ["red", "#fff", "#12345g", "1c7ed6", "#1c7ed6ff", 7])
def test_a_colour_must_be_written_rrggbb(alice, colour):
    body = assert_error(alice.post(LIST, {**NEW, "colour": colour}, format="json"), 400, "validation_error")
    assert "colour" in body["errors"], body


@pytest.mark.parametrize("emoji", ["🦉", "👍🏽", "❤️", "1️⃣", "🏳️‍🌈", "👨‍👩‍👧", "🇯🇵"])
def test_one_emoji_grapheme_with_modifiers_joiners_flags_and_keycaps_is_accepted(alice, emoji):
    assert is_one_emoji(emoji)
    response = alice.post(LIST, {**NEW, "emoji": emoji}, format="json")
    assert response.status_code == 201, response.content
    assert response.json()["emoji"] == emoji


def test_the_palette_colours_are_valid():
    assert all(re.fullmatch(r"#[0-9a-f]{6}", colour) for colour in PALETTE)
    assert len(set(PALETTE)) == len(PALETTE)
