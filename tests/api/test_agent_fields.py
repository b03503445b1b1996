"""The agent field list has one definition (``agents.models.AGENT_EDITABLE_FIELDS``). The places
that must spell each field out (a serializer field with its checks, a JSON Schema property, a
demo preset) are held to it here, so a field added in one place and forgotten in another fails."""

from __future__ import annotations

import pytest
from django.contrib import admin

from agents.management.commands.seed_demo import demo_agents
from agents.models import AGENT_EDITABLE_FIELDS, Agent
from agents.serializers import AgentCreateSerializer, AgentSerializer, AgentWriteSerializer
from agents.services import agent_create
from conversations.serializers import AGENTS_FIELD_SCHEMA
from conversations.services import INLINE_AGENT_FIELDS


def test_the_write_serializer_takes_exactly_the_editable_fields():
    assert set(AgentWriteSerializer().fields) == set(AGENT_EDITABLE_FIELDS)
    assert set(AgentCreateSerializer().fields) == {*AGENT_EDITABLE_FIELDS, "shared"}


def test_the_read_serializer_shows_every_editable_field_in_order():
    shown = [name for name in AgentSerializer.Meta.fields if name in AGENT_EDITABLE_FIELDS]
    assert shown == list(AGENT_EDITABLE_FIELDS)


def test_an_inline_agent_takes_the_editable_fields_but_status_plus_metadata():
    assert {*INLINE_AGENT_FIELDS} == ({*AGENT_EDITABLE_FIELDS} - {"status"}) | {"metadata"}
    inline_schema = AGENTS_FIELD_SCHEMA["oneOf"][1]["additionalProperties"]["oneOf"][1]
    assert set(inline_schema["properties"]) == set(INLINE_AGENT_FIELDS)


def test_the_admin_form_shows_every_editable_field_once():
    model_admin = admin.site._registry[Agent]
    shown = [name for _, options in model_admin.fieldsets for name in options["fields"]]
    assert len(shown) == len(set(shown))
    assert set(AGENT_EDITABLE_FIELDS) <= set(shown)


@pytest.mark.django_db
def test_every_demo_preset_is_an_agent_the_api_would_accept():
    for preset in demo_agents():
        assert set(preset) <= set(AGENT_EDITABLE_FIELDS), preset["name"]
        agent = agent_create(owner=None, **preset)  # the API's own checks, the unknown-field one included
        assert agent.name == preset["name"]
