"""The ``docker-compose.yml`` topology without Docker: ``make cluster`` / ``python -m scripts.cluster``.

PostgreSQL (the machine's server, trust auth; a private database is made for the cluster and
dropped at the end), a PRIVATE ``redis-server`` on a free port (never the machine's shared one), a
migrate step, daphne web processes and ``manage.py runworker nexus-runs`` workers with
``NEXUS_RUN_MODE=worker``. Every process writes its log into one folder. Ctrl-C or SIGTERM stops
them all and drops the database: nothing is left behind.

The same ``Cluster`` class is what the fault tests (``tests/cluster/``) and ``bench/load.py``
drive::

    with Cluster(env={"NEXUS_PROVIDER_PLUGINS": "..."}, log_dir=tmp_path) as cluster:
        cluster.web_urls                      # ["http://127.0.0.1:P1", "http://127.0.0.1:P2"]
        cluster.kill("redis")                 # SIGKILL; then cluster.start_service("redis")
        cluster.restart("web1")               # SIGKILL and start again on the same port
        made = cluster.fixtures({"users": [...], "agents": [...], "conversations": [...]})
        cluster.sql("select status from conversations_run")

Service names: ``redis``, ``web1``..``webN``, ``worker1``..``workerM``.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, Self
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
DEFAULT_POSTGRES_URL = "postgres://postgres@127.0.0.1:5432/postgres"
WORKER_READY = "Running worker for channels"


class ClusterError(RuntimeError):
    """A cluster process could not be started or did not become ready."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL it when the process that started it dies (Linux)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def clean_environment() -> dict[str, str]:
    """The shell's environment without any Nexus setting (NEXUS_*, DJANGO_*, DATABASE_URL,
    REDIS_URL), so that only what a caller sets reaches the processes it starts."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("NEXUS_", "DJANGO_", "PYTEST")) and k not in ("DATABASE_URL", "REDIS_URL")
    }
    env.update({"PYTHONUNBUFFERED": "1", "DJANGO_SETTINGS_MODULE": "nexus.settings"})
    return env


def run_fixtures(
    env: Mapping[str, str], spec: Mapping[str, Any], *, timeout: float = 120.0
) -> dict[str, Any]:
    """``make_fixtures(spec)`` in a subprocess with ``env`` (any Nexus deployment's settings)."""
    done = subprocess.run(
        [PYTHON, "-m", "scripts.cluster", "fixtures"],
        cwd=ROOT,
        env=dict(env),
        input=json.dumps(spec),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if done.returncode != 0:
        raise ClusterError(f"fixtures failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


class Process:
    """One child in its own process group, its output appended to a log file."""

    def __init__(self, args: list[str], *, env: Mapping[str, str], log_path: Path) -> None:
        self.args = args
        self.log_path = log_path
        self.log_offset = log_path.stat().st_size if log_path.exists() else 0
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        # PDEATHSIG fires when the starting *thread* exits, so only children of the main thread get it.
        main_thread = threading.current_thread() is threading.main_thread()
        self.popen = subprocess.Popen(
            args,
            cwd=ROOT,
            env=dict(env),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent if main_thread and sys.platform == "linux" else None,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, sig)

    def kill(self) -> None:
        """SIGKILL the group and reap it."""
        self.signal(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(5)
        self._log.close()

    def stop(self, timeout: float = 8.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout``."""
        if self.alive():
            self.signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.popen.wait(5)
        self.signal(signal.SIGKILL)  # anything the group left behind
        self._log.close()

    def output(self) -> str:
        """What this run of the process wrote (the log file may hold earlier runs too)."""
        if not self.log_path.exists():
            return ""
        with open(self.log_path, "rb") as log:
            log.seek(self.log_offset)
            return log.read().decode(errors="replace")


class Service:
    """A named member of the cluster; it keeps its port across restarts."""

    def __init__(self, name: str, kind: str, port: int | None = None) -> None:
        self.name = name
        self.kind = kind  # "redis" | "web" | "worker"
        self.port = port
        self.process: Process | None = None
        self.starts = 0


class Cluster:
    """PostgreSQL + private Redis + migrate + ``web`` daphnes + ``workers`` run workers."""

    def __init__(
        self,
        *,
        web: int = 2,
        workers: int = 2,
        env: Mapping[str, str] | None = None,
        log_dir: Path | str | None = None,
        postgres_url: str | None = None,
        database: str | None = None,
        keep_database: bool = False,
        web_port: int | None = None,
        seed_demo: bool = False,
    ) -> None:
        if web < 1 or workers < 1:
            raise ValueError("a cluster has at least one web process and one worker")
        self.log_dir = (
            Path(log_dir) if log_dir else ROOT / "var" / "cluster" / datetime.now().strftime("%Y%m%d-%H%M%S")
        )
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.postgres_url = postgres_url or os.environ.get("NEXUS_TEST_POSTGRES_URL") or DEFAULT_POSTGRES_URL
        self.database = database or f"nexus_cluster_{secrets.token_hex(4)}"
        self.keep_database = keep_database
        self.seed_demo = seed_demo
        self._made_database = False
        self._started = False
        self.services: dict[str, Service] = {"redis": Service("redis", "redis", free_port())}
        for index in range(web):
            port = web_port + index if web_port else free_port()
            self.services[f"web{index + 1}"] = Service(f"web{index + 1}", "web", port)
        for index in range(workers):
            self.services[f"worker{index + 1}"] = Service(f"worker{index + 1}", "worker")
        self.env = self._environment(env or {})

    # -- addresses -------------------------------------------------------------------------------

    @property
    def redis_port(self) -> int:
        return self.services["redis"].port  # type: ignore[return-value]

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    @property
    def database_url(self) -> str:
        parts = urlsplit(self.postgres_url)
        return urlunsplit((parts.scheme, parts.netloc, f"/{self.database}", parts.query, ""))

    @property
    def web_names(self) -> list[str]:
        return [name for name, svc in self.services.items() if svc.kind == "web"]

    @property
    def worker_names(self) -> list[str]:
        return [name for name, svc in self.services.items() if svc.kind == "worker"]

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.services[name].port}"

    def ws_url(self, name: str) -> str:
        return f"ws://127.0.0.1:{self.services[name].port}"

    @property
    def web_urls(self) -> list[str]:
        return [self.url(name) for name in self.web_names]

    @property
    def ws_urls(self) -> list[str]:
        return [self.ws_url(name) for name in self.web_names]

    def pids(self) -> dict[str, int]:
        """The live processes by service name (for psutil)."""
        return {
            name: svc.process.pid
            for name, svc in self.services.items()
            if svc.process is not None and svc.process.alive()
        }

    def _environment(self, overrides: Mapping[str, str]) -> dict[str, str]:
        """The shell's environment without Nexus settings, plus the cluster's, plus ``overrides``."""
        env = clean_environment()
        origins = [
            f"http://{host}:{self.services[n].port}"
            for n in self.web_names
            for host in ("127.0.0.1", "localhost")
        ]
        env.update(
            {
                "DATABASE_URL": self.database_url,
                "REDIS_URL": self.redis_url,
                "NEXUS_RUN_MODE": "worker",
                "DJANGO_SECRET_KEY": secrets.token_urlsafe(48),
                "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
                "DJANGO_CSRF_TRUSTED_ORIGINS": ",".join(origins),
                "NEXUS_WS_ALLOWED_ORIGINS": ",".join(origins),
                "NEXUS_VAR_DIR": str(self.log_dir / "var"),
                # Fake and local provider servers listen on the loopback interface, which the
                # egress policy refuses unless it is listed.
                "NEXUS_EGRESS_ALLOW": "127.0.0.1,::1",
                # a local cluster for one person: seed_demo may use its published passwords
                "NEXUS_DEMO_PASSWORD": "nexus-demo-password",
                "NEXUS_ADMIN_PASSWORD": "nexus-admin-password",
            }
        )
        env.update(overrides)
        return env

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> Self:
        """Database, Redis, migrate, then every web process and worker; returns when all serve."""
        if self._started:
            return self
        self._started = True
        try:
            self._create_database()
            self.start_service("redis")
            migrate = self.manage("migrate", "--noinput", timeout=300)
            if migrate.returncode != 0:
                raise ClusterError(f"migrate failed:\n{migrate.stdout[-2000:]}\n{migrate.stderr[-4000:]}")
            (self.log_dir / "migrate.log").write_text(migrate.stdout + migrate.stderr)
            if self.seed_demo:
                seed = self.manage("seed_demo", timeout=300)
                if seed.returncode != 0:
                    raise ClusterError(f"seed_demo failed:\n{seed.stderr[-4000:]}")
                (self.log_dir / "seed_demo.log").write_text(seed.stdout + seed.stderr)
            names = [*self.web_names, *self.worker_names]
            for name in names:
                self.start_service(name, wait=False)
            for name in names:
                self.wait_ready(name)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Workers, web processes, Redis (SIGTERM, then SIGKILL), then drop the database."""
        for name in [*self.worker_names, *self.web_names, "redis"]:
            svc = self.services[name]
            if svc.process is not None:
                svc.process.stop()
                svc.process = None
        if self._made_database and not self.keep_database:
            with contextlib.suppress(Exception):
                self._admin_sql(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
            self._made_database = False
        self._started = False

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- one service -----------------------------------------------------------------------------

    def _command(self, svc: Service) -> list[str]:
        if svc.kind == "redis":
            redis_server = shutil.which("redis-server")
            if redis_server is None:
                raise ClusterError("redis-server is not installed")
            return [redis_server, "--port", str(svc.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--daemonize", "no"]  # fmt: skip
        if svc.kind == "web":
            # nexus.serve: the flags every daphne of Nexus runs with (docs/protocol.md, limits)
            return [PYTHON, "-m", "nexus.serve", "-b", "127.0.0.1", "-p", str(svc.port)]
        return [PYTHON, "manage.py", "runworker", "nexus-runs"]

    def start_service(self, name: str, *, wait: bool = True, timeout: float = 60.0) -> None:
        """Start ``name`` (again, on its port); with ``wait``, return once it serves."""
        svc = self.services[name]
        if svc.process is not None and svc.process.alive():
            raise ClusterError(f"{name} is already running")
        svc.process = Process(self._command(svc), env=self.env, log_path=self.log_dir / f"{name}.log")
        svc.starts += 1
        if wait:
            self.wait_ready(name, timeout=timeout)

    def kill(self, name: str) -> None:
        """SIGKILL ``name`` (no goodbye: sockets drop, runs stop heartbeating, Redis loses its data)."""
        svc = self.services[name]
        if svc.process is not None:
            svc.process.kill()

    def restart(self, name: str, *, timeout: float = 60.0) -> None:
        """SIGKILL ``name`` if it runs, then start it again on the same port."""
        self.kill(name)
        self.start_service(name, timeout=timeout)

    def alive(self, name: str) -> bool:
        svc = self.services[name]
        return svc.process is not None and svc.process.alive()

    def log(self, name: str) -> str:
        """What ``name`` wrote since it was last started."""
        svc = self.services[name]
        return svc.process.output() if svc.process is not None else ""

    def wait_ready(self, name: str, *, timeout: float = 60.0) -> float:
        """Block until ``name`` serves; the seconds it took."""
        svc = self.services[name]
        started = time.monotonic()
        deadline = started + timeout
        while time.monotonic() < deadline:
            if svc.process is None or not svc.process.alive():
                output = svc.process.output()[-4000:] if svc.process else ""
                raise ClusterError(f"{name} exited while starting:\n{output}")
            if self._ready(svc):
                return time.monotonic() - started
            time.sleep(0.05)
        raise ClusterError(f"{name} was not ready within {timeout:g} s")

    def _ready(self, svc: Service) -> bool:
        if svc.kind == "redis":
            return self._redis_ping(svc.port)  # type: ignore[arg-type]
        if svc.kind == "web":
            return self.health(svc.name)[0] == 200
        return WORKER_READY in svc.process.output()  # type: ignore[union-attr]

    @staticmethod
    def _redis_ping(port: int) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def health(self, name: str) -> tuple[int, dict[str, Any]]:
        """``GET /health`` of a web process: (status, body); (0, {}) when it does not answer."""
        import httpx

        try:
            response = httpx.get(f"{self.url(name)}/health", timeout=2.0)
        except httpx.HTTPError:
            return 0, {}
        try:
            body = response.json()
        except ValueError:
            body = {}
        return response.status_code, body

    # -- helpers for tests and benchmarks ---------------------------------------------------------

    def manage(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        """``manage.py <args>`` with the cluster's environment."""
        return subprocess.run(
            [PYTHON, "manage.py", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def fixtures(self, spec: Mapping[str, Any], *, timeout: float = 120.0) -> dict[str, Any]:
        """Create users, agents and conversations in the cluster's database; tokens included.

        ``spec``: ``{"users": [{"username", "staff"?}], "agents": [{"name", "provider", "model",
        "config"?, "base_url"?, "owner"?}], "conversations": [{"owner", "agents": [names],
        "settings"?}]}``. Returns ``{"users": {username: {"id", "token"}}, "agents": {name: id},
        "conversations": [{"id", "owner", "token"}]}``.
        """
        return run_fixtures(self.env, spec, timeout=timeout)

    def sql(self, query: str, params: tuple[Any, ...] | list[Any] = ()) -> list[tuple[Any, ...]]:
        """Run one statement on the cluster's database; the rows (empty for statements without)."""
        import psycopg

        with psycopg.connect(self.database_url, autocommit=True, connect_timeout=5) as conn:
            cursor = conn.execute(query, params)  # type: ignore[arg-type]
            return cursor.fetchall() if cursor.description else []

    def _admin_sql(self, statement: str) -> None:
        import psycopg

        with psycopg.connect(self.postgres_url, autocommit=True, connect_timeout=5) as conn:
            conn.execute(statement)  # type: ignore[arg-type]

    def _create_database(self) -> None:
        if not self.database.replace("_", "").isalnum():
            raise ClusterError(f"database name {self.database!r} must be letters, digits and _")
        import psycopg

        try:
            with psycopg.connect(self.postgres_url, autocommit=True, connect_timeout=5) as conn:
                exists = conn.execute(
                    "SELECT 1 FROM pg_database WHERE datname = %s", (self.database,)
                ).fetchone()
                if not exists:
                    conn.execute(f'CREATE DATABASE "{self.database}"')  # type: ignore[arg-type]
                    self._made_database = True
        except psycopg.OperationalError as exc:
            raise ClusterError(f"PostgreSQL is not answering at {self.postgres_url}: {exc}") from None


# --- inside the cluster's environment: fixtures -------------------------------------------------------


def make_fixtures(spec: Mapping[str, Any]) -> dict[str, Any]:
    """Create what ``Cluster.fixtures`` describes (needs Django set up)."""
    from django.contrib.auth import get_user_model

    from agents.models import Agent
    from conversations.services import conversation_create
    from core.auth import tokens_issue

    user_model = get_user_model()
    users: dict[str, Any] = {}
    for item in spec.get("users", []):
        user, created = user_model.objects.get_or_create(
            username=item["username"],
            defaults={"is_staff": bool(item.get("staff")), "is_superuser": bool(item.get("staff"))},
        )
        if created:
            user.set_password(item.get("password") or secrets.token_urlsafe(16))
            user.save()
        users[user.username] = user
    agents: dict[str, Agent] = {}
    for item in spec.get("agents", []):
        agents[item["name"]] = Agent.objects.create(
            owner=users.get(item.get("owner")),
            name=item["name"],
            provider=item["provider"],
            model=item.get("model") or "model",
            base_url=item.get("base_url", ""),
            config=item.get("config") or {},
            tools=item.get("tools") or [],
        )
    tokens = {name: tokens_issue(user)["access_token"] for name, user in users.items()}
    conversations = []
    for item in spec.get("conversations", []):
        conversation = conversation_create(
            owner=users[item["owner"]],
            participants=[
                (agents[name], "primary" if index == 0 else "secondary")
                for index, name in enumerate(item["agents"])
            ],
            settings=item.get("settings"),
        )
        conversations.append(
            {"id": str(conversation.pk), "owner": item["owner"], "token": tokens[item["owner"]]}
        )
    return {
        "users": {name: {"id": user.pk, "token": tokens[name]} for name, user in users.items()},
        "agents": {name: str(agent.pk) for name, agent in agents.items()},
        "conversations": conversations,
    }


def _fixtures_main() -> None:
    import django

    django.setup()
    print(json.dumps(make_fixtures(json.loads(sys.stdin.read()))))


# --- make cluster ------------------------------------------------------------------------------------


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.cluster",
        description="Run the docker-compose topology natively: PostgreSQL, a private Redis, migrate, "
        "daphne web processes and run workers. Ctrl-C stops everything.",
    )
    parser.add_argument("--web", type=int, default=2, help="daphne processes (default 2)")
    parser.add_argument("--workers", type=int, default=2, help="run workers (default 2)")
    parser.add_argument(
        "--port", type=int, default=8000, help="first web port (default 8000; busy: free ports)"
    )
    parser.add_argument("--log-dir", type=Path, default=None, help="default var/cluster/<timestamp>/")
    parser.add_argument(
        "--postgres-url", default=None, help=f"server to use (default {DEFAULT_POSTGRES_URL})"
    )
    parser.add_argument("--database", default=None, help="database name (default: a new nexus_cluster_*)")
    parser.add_argument("--keep-database", action="store_true", help="do not drop the database at the end")
    parser.add_argument("--no-seed", action="store_true", help="skip seed_demo")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    if argv is None and sys.argv[1:2] == ["fixtures"]:
        _fixtures_main()
        return 0
    args = _parse(argv)
    ports = [args.port + i for i in range(args.web)]
    web_port = args.port if all(_port_is_free(p) for p in ports) else None
    cluster = Cluster(
        web=args.web,
        workers=args.workers,
        log_dir=args.log_dir,
        postgres_url=args.postgres_url,
        database=args.database,
        keep_database=args.keep_database,
        web_port=web_port,
        seed_demo=not args.no_seed,
    )
    stopping = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    print(f"Starting the cluster; logs in {cluster.log_dir}", flush=True)
    started = time.monotonic()
    try:
        cluster.start()
    except ClusterError as exc:
        print(f"cluster failed to start: {exc}", file=sys.stderr)
        return 1
    print(f"Ready in {time.monotonic() - started:.1f} s", flush=True)
    print(f"  database  {cluster.database_url}", flush=True)
    print(f"  redis     {cluster.redis_url} (private)", flush=True)
    for name in cluster.web_names:
        print(f"  {name:<9} {cluster.url(name)}/  (pid {cluster.pids()[name]})", flush=True)
    for name in cluster.worker_names:
        print(f"  {name:<9} runworker nexus-runs  (pid {cluster.pids()[name]})", flush=True)
    if cluster.seed_demo:
        print("  log in as demo / nexus-demo-password (admin / nexus-admin-password)", flush=True)
    print("Ctrl-C stops everything.", flush=True)
    reported: set[str] = set()
    try:
        while not stopping.wait(1.0):
            for name in cluster.services:
                if not cluster.alive(name) and name not in reported:
                    reported.add(name)
                    print(
                        f"{name} exited; see {cluster.log_dir / (name + '.log')}", file=sys.stderr, flush=True
                    )
    finally:
        print("Stopping...", flush=True)
        cluster.stop()
        print("Stopped.", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
