"""The HTTP side of `emosae studio`: a FastAPI app over one `Studio`, served by uvicorn.

Routes:
  GET  /                   the page (static/studio.html; its script and style inline)
  GET  /api/info           model, concepts, slider ranges, whether features and pages exist
  GET  /api/status         {"busy": bool, "hooks": forward hooks on the model}
  POST /api/chat           {messages, max_new_tokens, temperature, steer} -> JSON lines:
                           start / token / reply (text and reading) per reply ("plain",
                           then "steered" when `steer` moves a slider), then end, or error
  GET  /features/          the run's dashboard index (with --run)
  GET  /features/feature_<i>.html  feature i's dashboard page (the path is built from the
                           integer i; no path is ever taken from the client)

Safety: one generation at a time (another gets 409 with a message). Each reply runs in
its own worker thread with every forward under `Studio.cancellable`: when the client
disconnects (or the page's "stop" aborts it), the work stops at the model's next hook
point, even inside a long prompt's forward, and the thread releases the lock (steering
hooks never outlive a forward: see `session`). Every response carries a content
security policy that allows nothing from another host, and the Host header must name
the studio (a guard against DNS rebinding): a loopback name, the address served or, on
every interface (0.0.0.0, ::), this machine's names and addresses, plus the names given
with `--allow-host`.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import threading
import time
from collections.abc import AsyncGenerator, Callable, Iterable
from functools import partial
from importlib import resources
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.responses import StreamingResponse

from emosae.core.errors import EmosaeError
from emosae.core.log import logger
from emosae.studio.session import Cancelled, Studio

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
EVERY_INTERFACE = {"0.0.0.0", "::", ""}
CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
_FEATURE_PAGE = re.compile(r"feature_(\d{1,9})\.html")
_DONE = object()


class MessageIn(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str


class ChatRequest(BaseModel):
    messages: list[MessageIn] = Field(min_length=1, max_length=500)
    max_new_tokens: int = 48
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    steer: dict[str, float] = Field(default_factory=dict)


class _Stream(StreamingResponse):
    """A streaming response that, however it ends (done, failed, client gone), closes
    its body and then calls `on_close`."""

    def __init__(self, body: AsyncGenerator[str, None], on_close: Callable[[], None]):
        super().__init__(body, media_type="application/x-ndjson")
        self._body, self._on_close = body, on_close

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            try:
                await self._body.aclose()
            finally:
                self._on_close()


def _line(**event: Any) -> str:
    return json.dumps(event) + "\n"


def _work(
    studio: Studio, req: ChatRequest, chat: Any, steer: list, emit: Callable[[dict], None]
) -> None:
    """The reply (and the steered reply), token by token, then each one's reading, as
    events handed to `emit`; a cancelled request ends quietly."""
    msgs = [m.model_dump() for m in req.messages]
    runs = [("plain", [])] + ([("steered", steer)] if steer else [])
    try:
        for which, st in runs:
            emit({"event": "start", "which": which, "steer": {v.concept: s for v, s in st}})
            parts: list[str] = []
            kw = {"max_new_tokens": req.max_new_tokens, "temperature": req.temperature}
            for piece in studio.reply(chat, st, **kw):
                parts.append(piece)
                if piece:
                    emit({"event": "token", "which": which, "text": piece})
            text = "".join(parts).strip()
            reading = studio.reading([*msgs, {"role": "assistant", "content": text}])
            emit({"event": "reply", "which": which, "text": text, "reading": reading})
        emit({"event": "end"})
    except Cancelled:
        logger.info("studio: the client went away; its reply was stopped")
    except EmosaeError as e:
        emit({"event": "error", "message": str(e)})
    except Exception as e:  # noqa: BLE001 - say it in the page, not as a dropped connection
        logger.exception("studio: the reply failed")
        emit({"event": "error", "message": f"the reply failed: {type(e).__name__}: {e}"})


class _Job:
    """One chat request's work in its own thread, every forward under
    `Studio.cancellable(cancel)`: setting `cancel` (the client went away) stops it at
    the model's next hook point. The thread hands its events to the event loop through
    a queue and releases `lock` when it ends, however it ends."""

    def __init__(
        self, studio: Studio, req: ChatRequest, chat: Any, steer: list, lock: threading.Lock
    ):
        self.cancel = threading.Event()
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._lock = lock
        work = partial(_work, studio, req, chat, steer, emit=self._emit)
        threading.Thread(target=self._run, args=(studio, work), daemon=True).start()

    def _emit(self, event: Any) -> None:
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, event)
        except RuntimeError:  # the server has stopped: nobody is listening
            pass

    def _run(self, studio: Studio, work: Callable[[], None]) -> None:
        try:
            with studio.cancellable(self.cancel):
                work()
        finally:
            self._lock.release()
            self._emit(_DONE)

    async def events(self) -> AsyncGenerator[str, None]:
        try:
            while (event := await self._queue.get()) is not _DONE:
                yield _line(**event)
        finally:
            self.cancel.set()


def _page() -> str:
    return resources.files("emosae.studio").joinpath("static/studio.html").read_text("utf-8")


def machine_names() -> set[str]:
    """This machine's host names and addresses: its name, fully qualified name, what
    they resolve to, and the address of its default route (a UDP `connect` sends
    nothing)."""
    names = {socket.gethostname(), socket.getfqdn()}
    for name in list(names):
        try:
            names |= {str(a[4][0]) for a in socket.getaddrinfo(name, None)}
        except OSError:
            pass
    for fam, probe in ((socket.AF_INET, "192.0.2.1"), (socket.AF_INET6, "2001:db8::1")):
        try:
            with socket.socket(fam, socket.SOCK_DGRAM) as s:
                s.connect((probe, 9))
                names.add(s.getsockname()[0])
        except OSError:
            pass
    return names


def allowed_hosts(host: str, extra: Iterable[str] = ()) -> frozenset[str]:
    """The names a request's Host header may carry (see the module docstring)."""
    names = LOOPBACK | {host} | set(extra)
    if host in EVERY_INTERFACE:
        names |= machine_names()
    return frozenset(_bare(n) for n in names) - EVERY_INTERFACE


def _bare(host: str) -> str:
    """A Host header's name without its port, brackets, zone or final dot, lower case."""
    h = host.strip().lower()
    if h.startswith("["):
        h = h[1:].split("]", 1)[0]
    elif h.count(":") == 1:
        h = h.split(":", 1)[0]
    return h.split("%", 1)[0].rstrip(".")


def create_app(studio: Studio, host: str = "127.0.0.1", allow_hosts: Iterable[str] = ()) -> FastAPI:
    """The studio's app (see the module docstring for the routes); `allow_hosts` are
    further names the Host header may carry."""
    app = FastAPI(title="emosae studio", docs_url=None, redoc_url=None, openapi_url=None)
    lock = threading.Lock()
    hosts = allowed_hosts(host, allow_hosts)
    app.state.studio, app.state.lock, app.state.hosts = studio, lock, hosts

    @app.middleware("http")
    async def _headers(request: Request, call_next: Any) -> Response:
        if _bare(request.headers.get("host", "")) not in hosts:
            resp: Response = JSONResponse({"error": "invalid Host header"}, 400)
        else:
            resp = await call_next(request)
        resp.headers["Content-Security-Policy"] = CSP
        resp.headers["X-Content-Type-Options"] = "nosniff"
        resp.headers["Referrer-Policy"] = "no-referrer"
        return resp

    @app.exception_handler(RequestValidationError)
    async def _bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(x) for x in first.get("loc", ()) if x != "body")
        return JSONResponse({"error": f"bad request: {where}: {first.get('msg', '')}"}, 422)

    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        return _page()

    @app.get("/api/info")
    def info() -> dict[str, Any]:
        return studio.info()

    @app.get("/api/status")
    def status() -> dict[str, Any]:
        return {"busy": lock.locked(), "hooks": studio.hooks_left()}

    @app.post("/api/chat")
    async def chat(req: ChatRequest) -> Response:
        if not lock.acquire(blocking=False):
            msg = "busy: the model is answering another request; try again when it is done"
            return JSONResponse({"error": msg}, 409)
        try:
            msgs = [m.model_dump() for m in req.messages]
            prompt = await run_in_threadpool(studio.prompt, msgs, req.max_new_tokens)
            steer = studio.steering(req.steer)
            job = _Job(studio, req, prompt, steer, lock)  # it releases the lock
        except EmosaeError as e:
            lock.release()
            return JSONResponse({"error": str(e)}, 400)
        except BaseException:
            lock.release()
            raise
        return _Stream(job.events(), job.cancel.set)

    @app.get("/features/")
    def dashboard_index() -> Response:
        page = studio.features.index() if studio.features else None
        if page is None:
            return JSONResponse({"error": "no dashboard: start the studio with --run RUN"}, 404)
        return FileResponse(page, media_type="text/html")

    @app.get("/features/{name}")
    def feature_page(name: str) -> Response:
        m = _FEATURE_PAGE.fullmatch(name)
        page = studio.features.page(int(m.group(1))) if m and studio.features else None
        if page is None:
            return JSONResponse({"error": f"no dashboard page {name!r}"}, 404)
        return FileResponse(page, media_type="text/html")

    return app


def check_port(host: str, port: int) -> None:
    """Refuse a port another program holds, with a one-line error."""
    if not 0 < port < 65536:
        raise EmosaeError(f"--port must be between 1 and 65535, not {port}")
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(fam, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError as e:
            raise EmosaeError(
                f"cannot listen on {host}:{port} ({e.strerror}); pass --port"
            ) from None


def warn_if_exposed(host: str) -> bool:
    """Warn when the studio listens beyond this machine; True when it does."""
    if host in LOOPBACK:
        return False
    logger.warning(
        "studio listening on %s: anyone who can reach this address can use the model and "
        "read the run's dashboards (there is no login); the default is 127.0.0.1",
        host,
    )
    return True


def serve(
    studio: Studio,
    host: str = "127.0.0.1",
    port: int = 8765,
    started: float | None = None,
    allow_hosts: Iterable[str] = (),
) -> None:
    """Serve the studio until interrupted; logs its address once it listens (with the
    seconds since `started`, a `time.monotonic()` reading, when given)."""
    import uvicorn

    warn_if_exposed(host)
    check_port(host, port)
    shown = f"[{host}]" if ":" in host else host

    class _Server(uvicorn.Server):
        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets)
            if self.started:
                took = f" (ready {time.monotonic() - started:.1f} s after start)" if started else ""
                logger.info("studio ready: open http://%s:%d/%s", shown, port, took)

    config = uvicorn.Config(
        create_app(studio, host, allow_hosts),
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
    )
    _Server(config).run()
