"""Real servers in subprocesses, and a raw HTTP/1.1 client that sees every byte.

Two halves, shared by the tests that run ``tests.realserver_app`` under a real
server:

* **Process management.**  :func:`running_server` binds a loopback socket in
  the test process, hands it to the server as an inherited file descriptor
  (``uvicorn --fd N``, ``hypercorn --bind fd://N``, ``gunicorn --bind
  fd://N``, ``daphne --fd N``), so there is no window in which another
  process can take the port, and always stops the server: it runs in its
  own session, and the whole process group is killed on the way out
  (hypercorn serves from a spawned worker, and multiprocessing may add a
  helper process).  granian and nginx cannot take an inherited socket: they
  get a port that was free a moment before, and are started again on
  another if it was taken meanwhile (:func:`running_nginx` runs nginx with
  its own configuration and prefix in a temporary directory).
  :meth:`ServerProcess.live_processes` tells whether the whole process tree
  has exited.  Every wait is bounded.
* **A raw client.**  Tests of shutdown and faults must see what a library
  such as httpx hides: whether the chunked body ended with its terminating
  ``0\\r\\n\\r\\n`` or the connection was cut, and the keep-alive comments.
  :class:`StreamClient` is a plain socket plus an incremental decoder, cheap
  enough to hold 500 at once and to multiplex with :func:`pump_until`.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sse_sm.testing import Comment, Event, EventStreamParser

__all__ = (
    "DEPLOYMENT_KINDS",
    "PORT_KINDS",
    "REQUIRE_NGINX_ENV",
    "SERVER_KINDS",
    "Arrival",
    "ChunkedResponse",
    "ServerProcess",
    "StreamClient",
    "free_port",
    "get",
    "has_event",
    "has_events",
    "nginx_binary",
    "pump_until",
    "read_rss_kib",
    "running_nginx",
    "running_server",
    "server_command",
    "session_processes",
    "time_stamped_events",
)

REPO_ROOT = Path(__file__).resolve().parent.parent
APP = "tests.realserver_app:app"

#: The servers, each started the way its users start it from a shell.
SERVER_KINDS: tuple[str, ...] = ("uvicorn", "hypercorn-asyncio", "hypercorn-trio")

#: A cold start of hypercorn spawns a fresh interpreter for its worker; on a
#: busy two-core machine that can take several seconds.
STARTUP_TIMEOUT = 30.0
#: Bound on reaping a process after SIGKILL.
KILL_TIMEOUT = 10.0
#: Backlog of the listening socket the test creates.  Servers call listen()
#: again with their own (uvicorn 2048, hypercorn 100), which replaces it.
LISTEN_BACKLOG = 1024


#: The deployments of ``tests/servers/test_deployments.py``: what users run in production.
DEPLOYMENT_KINDS: tuple[str, ...] = (
    "uvicorn-standard",
    "uvicorn-workers-2",
    "gunicorn-uvicorn-worker",
    "granian-1",
    "granian-2",
    "daphne",
    "hypercorn-workers-2",
)

#: Kinds that cannot serve on an inherited socket and bind a port themselves.
PORT_KINDS: frozenset[str] = frozenset({"granian-1", "granian-2"})
#: How many times a port-binding server is started on a new port after another
#: process took the one that was free when it was picked.
PORT_ATTEMPTS = 3


def server_command(kind: str, fd: int, app: str = APP) -> list[str]:
    """The shell command a user would type, serving ``app`` on inherited ``fd``.

    For a kind in :data:`PORT_KINDS`, ``fd`` is a loopback port number instead.
    """
    python = [sys.executable, "-m"]
    if kind == "uvicorn":
        return [*python, "uvicorn", app, "--fd", str(fd)]
    if kind == "uvicorn-standard":
        # What `pip install 'uvicorn[standard]'` users get; named, so that a
        # missing extra fails instead of falling back to asyncio and h11.
        return [*python, "uvicorn", app, "--fd", str(fd), "--loop", "uvloop", "--http", "httptools"]
    if kind == "uvicorn-workers-2":
        return [*python, "uvicorn", app, "--fd", str(fd), "--workers", "2"]
    if kind == "gunicorn-uvicorn-worker":
        # uvicorn.workers is deprecated in favour of the uvicorn-worker package.
        worker = "uvicorn_worker.UvicornWorker"
        return [*python, "gunicorn", "-w", "2", "-k", worker, "--bind", f"fd://{fd}", app]
    if kind in ("granian-1", "granian-2"):
        workers = kind.rsplit("-", 1)[1]
        return [
            *python,
            "granian",
            "--interface",
            "asgi",
            "--host",
            "127.0.0.1",
            "--port",
            str(fd),
            "--workers",
            workers,
            app,
        ]
    if kind == "daphne":
        return [*python, "daphne", "--fd", str(fd), app]
    if kind == "hypercorn-asyncio":
        return [*python, "hypercorn", "--bind", f"fd://{fd}", app]
    if kind == "hypercorn-trio":
        return [*python, "hypercorn", "-k", "trio", "--bind", f"fd://{fd}", app]
    if kind == "hypercorn-workers-2":
        return [*python, "hypercorn", "--workers", "2", "--bind", f"fd://{fd}", app]
    raise AssertionError(f"unknown server kind {kind!r}")


def free_port() -> int:
    """A loopback port that was free a moment ago (for servers that bind their own)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _listening_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        # Both servers set TCP_NODELAY on sockets they bind themselves but not
        # on an inherited one (uvicorn even wraps it as AF_UNIX, so asyncio
        # skips it).  Linux copies the option to accepted sockets, so setting
        # it here gives the latency users get from --host/--port or --bind.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen(LISTEN_BACKLOG)
    except BaseException:
        sock.close()
        raise
    return sock


@dataclass
class ServerProcess:
    """A server started by :func:`running_server`."""

    kind: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        """The main process: the one a user (or systemd, or Kubernetes) signals."""
        return self.process.pid

    def log(self, tail: int | None = 12_000) -> str:
        """The server's stdout and stderr so far; only the end of it unless ``tail=None``."""
        text = self.log_path.read_text(errors="replace")
        return text if tail is None or len(text) <= tail else "...\n" + text[-tail:]

    def has_exited(self) -> bool:
        """Whether the main process has exited, without reaping it.

        Not reaping keeps its pid, and so its process group id, reserved until
        :meth:`kill_group` has run: the group can never be a stranger's.
        """
        if self.process.returncode is not None:
            return True
        flags = os.WEXITED | os.WNOHANG | os.WNOWAIT
        return os.waitid(os.P_PID, self.pid, flags) is not None

    def signal(self, signum: int) -> None:
        """Send ``signum`` to the main process only, as ``kill -TERM <pid>`` does."""
        os.kill(self.pid, signum)

    def kill_group(self) -> None:
        """SIGKILL every process of the server's session group, then reap the main one."""
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGKILL)
        try:
            self.process.wait(timeout=KILL_TIMEOUT)
        except subprocess.TimeoutExpired:  # pragma: no cover - a kernel in trouble
            pass

    def returncode(self) -> int | None:
        return self.process.poll() if self.has_exited() else None

    def live_processes(self) -> list[int]:
        """Every process of the server's session that is still running (not a zombie).

        The server is started as a session leader, so its workers (and their
        helpers) are in its session unless they leave it; an empty list
        means the whole process tree has exited.
        """
        return session_processes(self.pid)


@contextlib.contextmanager
def running_server(
    kind: str, log_path: Path, *, app: str = APP, env: Mapping[str, str] | None = None
) -> Iterator[ServerProcess]:
    """Start ``app`` (``tests.realserver_app`` by default) under ``kind`` on a
    fresh loopback socket, with ``env`` added to the environment.

    Yields once ``/health`` answers ``ok``.  On exit, whatever happened (a
    failed assertion, a timeout, KeyboardInterrupt), every process of the
    server is killed and the main one reaped.

    A kind in :data:`PORT_KINDS` gets a port that was free when picked; if
    the server then fails to start because another process took it, it is
    started again on another, at most :data:`PORT_ATTEMPTS` times.
    """
    environment = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    attempts = PORT_ATTEMPTS if kind in PORT_KINDS else 1
    for attempt in range(1, attempts + 1):
        server = _start(kind, log_path, app, environment)
        try:
            try:
                _wait_until_healthy(server)
            except AssertionError:
                if attempt < attempts and server.has_exited() and _port_taken(server.log()):
                    continue
                raise
            yield server
            return
        finally:
            server.kill_group()
    raise AssertionError("unreachable")  # pragma: no cover


def _port_taken(log: str) -> bool:
    return "address already in use" in log.lower() or "errno 98" in log.lower()


def _start(kind: str, log_path: Path, app: str, environment: Mapping[str, str]) -> ServerProcess:
    if kind in PORT_KINDS:
        port = free_port()
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(
                server_command(kind, port, app),
                cwd=REPO_ROOT,
                env=environment,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return ServerProcess(kind=kind, port=port, process=process, log_path=log_path)
    listener = _listening_socket()
    port = listener.getsockname()[1]
    try:
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(
                server_command(kind, listener.fileno(), app),
                cwd=REPO_ROOT,
                env=environment,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                pass_fds=(listener.fileno(),),
                start_new_session=True,
            )
    finally:
        # The server holds its own copy; keeping ours would let connections
        # queue on a port whose server has died.
        listener.close()
    return ServerProcess(kind=kind, port=port, process=process, log_path=log_path)


def _wait_until_healthy(server: ServerProcess) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    last_error = "no attempt made"
    while time.monotonic() < deadline:
        if server.has_exited():
            raise AssertionError(
                f"{server.kind} exited with {server.returncode()} during startup:\n{server.log()}"
            )
        try:
            status, body = get(server.port, "/health", timeout=2.0)
        except OSError as exc:
            last_error = repr(exc)
        else:
            if status == 200 and body == b"ok":
                return
            last_error = f"{status} {body!r}"
        time.sleep(0.1)
    raise AssertionError(
        f"{server.kind}: /health not ok within {STARTUP_TIMEOUT} s (last: {last_error}):\n"
        f"{server.log()}"
    )


def session_processes(sid: int) -> list[int]:
    """The pids of the non-zombie processes whose session id is ``sid``, from ``/proc``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # it exited meanwhile
            continue
        # Fields after the command name, which is in parentheses and may hold spaces.
        fields = stat[stat.rindex(")") + 2 :].split()
        state, session = fields[0], int(fields[3])
        if session == sid and state not in ("Z", "X"):
            found.append(int(entry.name))
    return sorted(found)


def read_rss_kib(pid: int) -> int:
    """Resident set size of ``pid`` in KiB, from ``/proc/<pid>/status``."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS in /proc/{pid}/status")


# --------------------------------------------------------------------- client


def _request(path: str, *, close: bool, headers: Mapping[str, str] | None = None) -> bytes:
    connection = "Connection: close\r\n" if close else ""
    extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
    return (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n"
        f"{extra}{connection}\r\n"
    ).encode("ascii")


def get(port: int, path: str, *, timeout: float) -> tuple[int, bytes]:
    """One plain GET with ``Connection: close``: the status and the body.

    For the app's small endpoints, which answer with a ``Content-Length``.
    Raises ``OSError`` (``TimeoutError`` included) if the whole answer does not
    arrive within ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(_request(path, close=True))
        received = bytearray()
        while True:
            sock.settimeout(max(deadline - time.monotonic(), 0.001))
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
    head, _, body = bytes(received).partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0]
    status = int(status_line.split()[1])
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            body = body[: int(value)]
    return status, body


@dataclass
class ChunkedResponse:
    """An incremental decoder for one HTTP/1.1 response with a chunked body.

    ``complete`` becomes true when the terminating chunk (``0\\r\\n`` and the
    empty trailer line) has arrived: the server ended the body on purpose.
    """

    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: bytearray = field(default_factory=bytearray)
    complete: bool = False
    items: list[Event | Comment] = field(default_factory=list)
    _buffer: bytearray = field(default_factory=bytearray)
    _parser: EventStreamParser = field(default_factory=EventStreamParser)

    def feed(self, data: bytes) -> None:
        self._buffer += data
        while self._step():
            pass

    def _step(self) -> bool:
        """Decode one unit (head, chunk, terminator); False when more bytes are needed."""
        buffer = self._buffer
        if self.complete:
            return False
        if self.status is None:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return False
            lines = bytes(buffer[:end]).decode("latin-1").split("\r\n")
            del buffer[: end + 4]
            self.status = int(lines[0].split()[1])
            for line in lines[1:]:
                name, _, value = line.partition(":")
                self.headers[name.strip().lower()] = value.strip()
            return True
        if self.headers.get("transfer-encoding", "").lower() != "chunked":
            # Not a stream (an error page): keep the raw bytes for the message.
            self.body += buffer
            buffer.clear()
            return False
        line_end = buffer.find(b"\r\n")
        if line_end < 0:
            return False
        size = int(bytes(buffer[:line_end]).split(b";")[0], 16)
        if size == 0:
            # The last chunk, then trailer lines (none here) and an empty line.
            if len(buffer) < line_end + 4:
                return False
            if bytes(buffer[line_end + 2 : line_end + 4]) != b"\r\n":
                raise AssertionError(f"unexpected trailer after the last chunk: {buffer!r}")
            del buffer[: line_end + 4]
            self.complete = True
            self.items.extend(self._parser.close())
            return False
        if len(buffer) < line_end + 2 + size + 2:
            return False
        chunk = bytes(buffer[line_end + 2 : line_end + 2 + size])
        del buffer[: line_end + 2 + size + 2]
        self.body += chunk
        self.items.extend(self._parser.feed(chunk))
        return True

    @property
    def events(self) -> list[Event]:
        return [item for item in self.items if isinstance(item, Event)]

    @property
    def pings(self) -> list[Event | Comment]:
        """Keep-alive comments: alone in their block, or attached to an event."""
        return [
            item
            for item in self.items
            if (isinstance(item, Comment) and item.text.startswith("ping"))
            or (isinstance(item, Event) and any(c.startswith("ping") for c in item.comments))
        ]


class StreamClient:
    """One streaming GET on a raw socket, read only when the test says so.

    ``end`` says how the connection ended, from the client's side:
    ``"clean"`` (the terminating chunk arrived), ``"eof"`` (closed without
    it), ``"reset"``, or ``None`` while it is open.
    """

    def __init__(
        self,
        port: int,
        path: str,
        *,
        timeout: float,
        rcvbuf: int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.path = path
        self.response = ChunkedResponse()
        self.end: str | None = None
        #: ``time.monotonic()`` of the first keep-alive comment seen.
        self.first_ping_at: float | None = None
        #: ``time.monotonic()`` when :attr:`end` was set.
        self.ended_at: float | None = None
        self.opened_at = time.monotonic()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            if rcvbuf is not None:
                # Before connect(), so the window advertised to the server is small.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            sock.settimeout(timeout)
            sock.connect(("127.0.0.1", port))
            sock.sendall(_request(path, close=False, headers=headers))
        except BaseException:
            sock.close()
            raise
        self.sock = sock

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()

    def read_once(self) -> None:
        """One ``recv`` (blocking up to the socket's timeout); records the end if it came."""
        try:
            data = self.sock.recv(262144)
        except ConnectionResetError:
            self._ended("reset")
            return
        if not data:
            self._ended("clean" if self.response.complete else "eof")
            return
        self.response.feed(data)
        if self.first_ping_at is None and self.response.pings:
            self.first_ping_at = time.monotonic()
        if self.response.complete:
            self._ended("clean")

    def _ended(self, how: str) -> None:
        self.end = how
        self.ended_at = time.monotonic()

    def read_until(self, done: Callable[[StreamClient], bool], timeout: float) -> bool:
        """Read (blocking) until ``done(self)`` or the end of the connection, within ``timeout``."""
        deadline = time.monotonic() + timeout
        while not done(self) and self.end is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self.sock.settimeout(remaining)
            try:
                self.read_once()
            except TimeoutError:
                return False
        return done(self)

    def describe(self) -> str:
        body = bytes(self.response.body)
        shown = body if len(body) < 600 else body[:200] + b" ... " + body[-300:]
        return (
            f"{self.path}: status={self.response.status} end={self.end} "
            f"complete={self.response.complete} body={shown!r}"
        )


def has_event(client: StreamClient) -> bool:
    return bool(client.response.events)


def has_events(count: int) -> Callable[[StreamClient], bool]:
    """A condition for :meth:`StreamClient.read_until`: ``count`` events have arrived."""
    return lambda client: len(client.response.events) >= count


@dataclass(frozen=True)
class Arrival:
    """When a stamped event (``/stream?stamp=1``) was yielded and when it arrived."""

    yielded_at: float
    arrived_at: float

    @property
    def latency(self) -> float:
        return self.arrived_at - self.yielded_at


def time_stamped_events(
    port: int,
    path: str,
    count: int,
    *,
    timeout: float,
    headers: Mapping[str, str] | None = None,
) -> tuple[list[Arrival], StreamClient]:
    """Read ``count`` stamped events from ``path``, noting when each arrived.

    ``path`` must ask for ``stamp=1``.  Returns the arrivals (fewer than
    ``count`` if the rest did not come within ``timeout`` each) and the
    closed client, to describe the response in a failure message.
    """
    client = StreamClient(port, path, timeout=timeout, headers=headers)
    arrivals: list[Arrival] = []
    try:
        for n in range(1, count + 1):
            if not client.read_until(has_events(n), timeout):
                break
            arrived_at = time.monotonic()
            event = client.response.events[n - 1]
            arrivals.append(Arrival(float(event.data.split()[1]), arrived_at))
    finally:
        client.close()
    return arrivals, client


def pump_until(
    clients: Sequence[StreamClient],
    done: Callable[[], bool],
    deadline: float,
    *,
    on_tick: Callable[[], None] | None = None,
    tick: float = 0.02,
) -> bool:
    """Read every open client as data arrives until ``done()`` or ``deadline``.

    ``on_tick`` runs at least every ``tick`` seconds (to notice a process
    exiting).  Clients whose connection ended are left alone.  Returns
    ``done()``.
    """
    with selectors.DefaultSelector() as selector:
        for client in clients:
            if client.end is None:
                client.sock.setblocking(False)
                selector.register(client.sock, selectors.EVENT_READ, client)
        while True:
            if on_tick is not None:
                on_tick()
            if done():
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            for key, _ in selector.select(min(tick, remaining)):
                ready: StreamClient = key.data
                try:
                    ready.read_once()
                except BlockingIOError:
                    continue
                if ready.end is not None:
                    selector.unregister(ready.sock)


# ---------------------------------------------------------------------- nginx

#: Set in CI: a missing nginx fails the nginx tests instead of skipping them.
REQUIRE_NGINX_ENV = "SSE_SM_REQUIRE_NGINX"

#: The proxy as SSE guides configure it, with nginx's buffering defaults left
#: alone: ``proxy_buffering`` stays on, and the response's
#: ``X-Accel-Buffering: no`` turns it off for the stream.  HTTP/1.1 to the
#: app (nginx's default is 1.0): the app then frames its body in chunks, so
#: nginx can tell a body the app ended from a connection the app cut.
_NGINX_CONF = """\
daemon off;
master_process on;
worker_processes 1;
{user}pid {prefix}/nginx.pid;
error_log {prefix}/error.log info;
events {{
    worker_connections 256;
}}
http {{
    access_log off;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://127.0.0.1:{upstream};
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""


def nginx_binary() -> str | None:
    """Debian's nginx (in /usr/sbin, which a non-root PATH may lack), or None."""
    return shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")


@contextlib.contextmanager
def running_nginx(upstream_port: int, prefix: Path) -> Iterator[ServerProcess]:
    """nginx in the foreground, proxying a loopback port to ``upstream_port``.

    Its configuration, pid file, logs and temporary directories are all under
    ``prefix``.  nginx binds its own port (it takes inherited sockets only on
    a binary upgrade), so the port is one that was free when picked, retried
    if taken meanwhile.  Yields once a request through it reaches the app's
    ``/health``; on exit the whole process group is killed by its pid.
    """
    binary = nginx_binary()
    if binary is None:
        raise AssertionError("nginx is not installed")
    prefix.mkdir(parents=True, exist_ok=True)
    # As root, nginx's workers would run as nobody, who cannot enter the
    # test's private temporary directory.
    user = "user root;\n" if os.geteuid() == 0 else ""
    for attempt in range(1, PORT_ATTEMPTS + 1):
        port = free_port()
        conf = prefix / "nginx.conf"
        conf.write_text(
            _NGINX_CONF.format(user=user, prefix=prefix, port=port, upstream=upstream_port)
        )
        log_path = prefix / "nginx.out"
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(
                [binary, "-p", str(prefix), "-e", str(prefix / "error.log"), "-c", str(conf)],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        server = ServerProcess(kind="nginx", port=port, process=process, log_path=log_path)
        try:
            try:
                _wait_until_healthy(server)
            except AssertionError:
                error_log = (prefix / "error.log").read_text(errors="replace")
                if attempt < PORT_ATTEMPTS and server.has_exited() and _port_taken(error_log):
                    continue
                raise AssertionError(f"nginx did not start; error.log:\n{error_log}") from None
            yield server
            return
        finally:
            server.kill_group()
    raise AssertionError("unreachable")  # pragma: no cover
