"""The fake servers themselves, as other suites use them: in a subprocess, scripted over HTTP."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from providers.base import GenerationOptions, TextDelta, Timeouts
from providers.gemini import GeminiProvider
from providers.ollama import OllamaProvider
from providers.openai_compat import OpenAIProvider
from tests.fakes import FakeServerProcess, Reply
from tests.fakes.process import ROOT
from tests.providers.helpers import HELLO, collect, collect_error

pytestmark = [pytest.mark.timeout(60)]

PROVIDERS = {"openai": OpenAIProvider, "gemini": GeminiProvider, "ollama": OllamaProvider}


@pytest.mark.parametrize("dialect", sorted(PROVIDERS))
async def test_a_subprocess_fake_is_scripted_and_inspected_over_http(dialect: str) -> None:
    provider = PROVIDERS[dialect]()
    with FakeServerProcess(dialect) as fake:
        fake.script(Reply(text="from another process", chunks=3), Reply(text="x y z", stall_after=2))
        options = GenerationOptions(base_url=fake.base_url, api_key="k")

        events = await collect(provider.stream_chat(model="m", messages=HELLO, options=options))
        stalled = GenerationOptions(
            base_url=fake.base_url, api_key="k", timeouts=Timeouts(between_chunks=0.3)
        )
        _, error = await collect_error(provider.stream_chat(model="m", messages=HELLO, options=stalled))

        requests = fake.requests
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "from another process"
    assert error.kind == "timeout"
    assert len(requests) == 2  # the stall came after a delta: no retry
    assert requests[0].finished_at is not None
    assert requests[1].json is not None


def test_a_script_file_sets_the_replies(tmp_path) -> None:
    script = tmp_path / "script.json"
    script.write_text(json.dumps({"default": Reply(text="from the file").to_dict()}))
    code = (
        "import asyncio\n"
        "from providers.base import GenerationOptions\n"
        "from providers.ollama import OllamaProvider\n"
        "async def main(url):\n"
        "    events = [e async for e in OllamaProvider().stream_chat(model='m', messages=[], "
        "options=GenerationOptions(base_url=url))]\n"
        "    print(''.join(getattr(e, 'text', '') for e in events))\n"
    )
    fake = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.ollama_server", "--port", "0", "--script", str(script)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        port = int(fake.stdout.readline().split()[1])
        client = subprocess.run(
            [sys.executable, "-c", code + f"asyncio.run(main('http://127.0.0.1:{port}'))"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=30,
        )
    finally:
        fake.terminate()
        fake.wait(10)
        fake.stdout.close()

    assert client.stdout.strip() == "from the file", client.stderr
    assert fake.returncode == 0
