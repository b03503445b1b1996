"""Run a fake provider server as a subprocess and script it over HTTP.

For tests and benchmarks where the client lives in another process (daphne, a worker) or where the
fake must not share the client's GIL (benchmarks).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Self

import httpx

from tests.fakes.script import Reply
from tests.fakes.server import RecordedRequest

ROOT = Path(__file__).resolve().parents[2]
MODULES = {
    "openai": "tests.fakes.openai_server",
    "gemini": "tests.fakes.gemini_server",
    "ollama": "tests.fakes.ollama_server",
}


class FakeServerProcess:
    """``with FakeServerProcess("openai") as fake: fake.base_url, fake.script(Reply(...)), fake.requests``."""

    def __init__(self, dialect: str, *, port: int = 0, python: str = sys.executable) -> None:
        self.dialect = dialect
        self._args = [python, "-m", MODULES[dialect], "--port", str(port)]
        self._popen: subprocess.Popen[str] | None = None
        self.port = port

    def start(self) -> Self:
        self._popen = subprocess.Popen(
            self._args,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        assert self._popen.stdout is not None
        line = self._popen.stdout.readline()
        if not line.startswith("READY "):
            self.stop()
            raise RuntimeError(f"fake {self.dialect} server did not start: {line!r}")
        self.port = int(line.split()[1])
        return self

    def stop(self) -> None:
        if self._popen is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._popen.pid, signal.SIGTERM)
        try:
            self._popen.wait(5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._popen.pid, signal.SIGKILL)
            self._popen.wait(5)
        if self._popen.stdout is not None:
            self._popen.stdout.close()
        self._popen = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1" if self.dialect == "openai" else self.url

    def script(self, *replies: Reply, default: Reply | None = None) -> None:
        body: dict = {"replies": [r.to_dict() for r in replies]}
        if default is not None:
            body["default"] = default.to_dict()
        httpx.post(f"{self.url}/_fake/replies", json=body, timeout=5).raise_for_status()

    @property
    def requests(self) -> list[RecordedRequest]:
        """The requests received (headers, JSON body, frames sent, close times)."""
        rows = httpx.get(f"{self.url}/_fake/requests", timeout=5).json()
        out = []
        for row in rows:
            body = row.pop("json")
            row.pop("frames_sent")
            row.pop("last_frame_at")
            request = RecordedRequest(
                body=b"" if body is None else httpx.Request("POST", "/", json=body).content,
                connection=0,
                **{
                    k: v for k, v in row.items() if k in ("method", "path", "query", "headers", "received_at")
                },
            )
            request.finished_at = row["finished_at"]
            request.client_closed_at = row["client_closed_at"]
            out.append(request)
        return out

    def reset(self) -> None:
        httpx.post(f"{self.url}/_fake/reset", timeout=5).raise_for_status()
