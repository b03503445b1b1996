"""A session's model and temperature preferences, and what an agent allows of them.

A conversation may carry ``settings.model`` and ``settings.temperature`` (seed 004's
``preferences``, set by its ``initialize``; also settable over REST). They apply to the
conversation's runs only where the answering agent allows them:

- ``temperature``: always, within [0, 2] (the range every agent's own temperature has);
- ``model``: when it is the agent's own model or is listed in the agent's
  ``config.allowed_models``. The provider, base URL and key stay the agent's: a preference never
  moves a run to another provider or host, it only names another model of the same one.

docs/dialects.md, "Seed 004".
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agents.models import Agent

TEMPERATURE_RANGE = (0.0, 2.0)
MAX_ALLOWED_MODELS = 100
MAX_MODEL_CHARS = 200


def agent_allowed_models(agent: Agent) -> list[str]:
    """The models a session may choose for ``agent``: its own, then ``config.allowed_models``."""
    listed = (agent.config or {}).get("allowed_models")
    extra = [m for m in listed if isinstance(m, str) and m] if isinstance(listed, list) else []
    return [agent.model, *(m for m in extra if m != agent.model)]


def agent_model_allowed(agent: Agent, model: str) -> bool:
    return model in agent_allowed_models(agent)


def allowed_models_validate(value: Any) -> None:
    """``config.allowed_models``: a list of model names. Raises ValueError with the problem."""
    if value is None:
        return
    if not isinstance(value, list) or len(value) > MAX_ALLOWED_MODELS:
        raise ValueError(f"allowed_models is a list of at most {MAX_ALLOWED_MODELS} model names.")
    for item in value:
        if not isinstance(item, str) or not item.strip() or len(item) > MAX_MODEL_CHARS:
            raise ValueError(f"allowed_models holds model names of 1 to {MAX_MODEL_CHARS} characters.")


def agent_apply_preferences(agent: Agent, preferences: Mapping[str, Any]) -> Agent:
    """``agent`` (a run's own copy of the row, never saved) with the preferences it allows."""
    model = preferences.get("model")
    if isinstance(model, str) and model and agent_model_allowed(agent, model):
        agent.model = model
    temperature = preferences.get("temperature")
    low, high = TEMPERATURE_RANGE
    if (
        isinstance(temperature, int | float)
        and not isinstance(temperature, bool)
        and low <= temperature <= high
    ):
        agent.temperature = float(temperature)
    return agent
