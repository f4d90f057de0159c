"""`fiva serve`: the workspace behind HTTP on 127.0.0.1 (Starlette + uvicorn, the `[web]` extra).

Routes (JSON unless said):
    GET  /                          the page (static/index.html; its script and style from /static)
    GET  /api/info                  upload limit, methods, accepted file types
    POST /api/uploads               body: the file's bytes, header X-Filename: its name (URL-encoded)
                                    -> the upload with its faces; 400/413 {"error": "NAME: reason"}
    GET  /api/uploads/{id}/preview  JPEG of the photo / the video's first frame
    POST /api/jobs                  {"upload", "method", "mode": keep|only, "faces": [index, ...]}
    GET  /api/jobs/{id}             state, frames done of total, summary or error
    GET  /api/jobs/{id}/result      the result to show (JPEG for photos, the video itself)
    GET  /api/jobs/{id}/download    the output file, as `fiva anonymize` writes it
The raw-body upload needs no multipart parser; the size limit is checked while the bytes arrive.
"""
from __future__ import annotations

import ipaddress
import json
import signal
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

from ..anonymize.frame import METHODS
from ..io import IMAGE_EXTS, MAX_PIXELS, VIDEO_EXTS, InputError

STATIC = Path(__file__).parent / "static"
# The page may load only from this server: a stray external font or script would be blocked.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; media-src 'self'; "
       "connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'")


@dataclass
class ServeConfig:
    """Settings of `fiva serve`."""

    host: str = "127.0.0.1"
    port: int = 0  # 0: a free port, printed
    max_upload_mb: float = 500.0
    max_pixels: int = MAX_PIXELS  # photos above this are refused before decoding
    device: str = "cpu"


def build_app(ws, cfg: ServeConfig):
    """The Starlette application serving workspace `ws`."""
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.middleware.trustedhost import TrustedHostMiddleware
    from starlette.responses import FileResponse, JSONResponse
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles

    limit = int(cfg.max_upload_mb * 1024 * 1024)

    def error(status: int, msg: str) -> JSONResponse:
        return JSONResponse({"error": msg}, status_code=status)

    async def index(request):
        return FileResponse(STATIC / "index.html")

    async def info(request):
        return JSONResponse({"max_upload_bytes": limit, "methods": list(METHODS),
                             "image_exts": sorted(IMAGE_EXTS), "video_exts": sorted(VIDEO_EXTS)})

    async def upload(request):
        from starlette.concurrency import run_in_threadpool

        name = unquote(request.headers.get("x-filename", "")) or "upload"
        uid, path = ws.reserve(name)
        size, too_large = 0, False
        with open(path, "wb") as f:
            async for chunk in request.stream():
                size += len(chunk)
                too_large = too_large or size > limit
                if not too_large:
                    f.write(chunk)  # past the limit the rest is read and dropped: the answer still arrives
        if too_large:
            ws.discard(uid)
            return error(413, f"{path.name}: too large ({_mb(size)}; the limit is {_mb(limit)}, "
                              "fiva serve --max-upload-mb raises it)")
        if size == 0:
            ws.discard(uid)
            return error(400, f"{path.name}: empty file")
        try:
            up = await run_in_threadpool(ws.inspect, uid, path)
        except InputError as e:
            ws.discard(uid)
            return error(400, str(e))
        return JSONResponse(up.describe())

    async def preview(request):
        up = ws.uploads.get(request.path_params["id"])
        return error(404, "no such upload") if up is None else FileResponse(up.preview, media_type="image/jpeg")

    async def start_job(request):
        try:
            body = json.loads(await request.body())
            job = ws.start(str(body.get("upload")), str(body.get("method", "fiva")), str(body.get("mode", "keep")),
                           [int(i) for i in body.get("faces", [])])
        except (ValueError, TypeError, AttributeError) as e:
            return error(400, str(e) or "a malformed request")
        return JSONResponse(job.describe())

    def _job(request):
        return ws.jobs.get(request.path_params["id"])

    async def job_state(request):
        job = _job(request)
        return error(404, "no such job") if job is None else JSONResponse(job.describe())

    async def result(request):
        job = _job(request)
        if job is None or job.state != "done":
            return error(404, "no such result")
        return FileResponse(job.preview if job.upload.kind == "image" else job.output)

    async def download(request):
        job = _job(request)
        if job is None or job.state != "done":
            return error(404, "no such result")
        return FileResponse(job.output, filename=job.output.name)  # Content-Disposition: attachment

    middleware = [Middleware(_Headers)]
    if _loopback(cfg.host):  # a page elsewhere cannot reach this server through a rebound DNS name
        middleware.insert(0, Middleware(TrustedHostMiddleware, allowed_hosts=["127.0.0.1", "localhost", "[::1]"]))
    routes = [Route("/", index), Route("/api/info", info), Route("/api/uploads", upload, methods=["POST"]),
              Route("/api/uploads/{id}/preview", preview), Route("/api/jobs", start_job, methods=["POST"]),
              Route("/api/jobs/{id}", job_state), Route("/api/jobs/{id}/result", result),
              Route("/api/jobs/{id}/download", download), Mount("/static", StaticFiles(directory=STATIC))]
    return Starlette(routes=routes, middleware=middleware)


class _Headers:
    """Every response: the content security policy above, no caching (results change per job)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = list(message["headers"]) + [
                    (b"content-security-policy", CSP.encode()), (b"cache-control", b"no-store"),
                    (b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer")]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def serve(cfg: ServeConfig) -> int:
    """Run until Ctrl+C or SIGTERM; the temporary folder goes with the server."""
    try:
        import uvicorn
        import starlette  # noqa: F401
    except ImportError:
        raise ValueError("fiva serve needs the [web] extra: pip install 'fiva[web]'") from None
    from .workspace import Workspace

    family = socket.AF_INET6 if ":" in cfg.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((cfg.host, cfg.port))
    except OSError as e:
        sock.close()
        raise ValueError(f"cannot listen on {cfg.host}:{cfg.port} ({e.strerror or e})") from None
    sock.listen(128)  # from here on a browser's connection waits for uvicorn instead of being refused
    port = sock.getsockname()[1]
    ws = Workspace(device=cfg.device, max_pixels=cfg.max_pixels)
    host = f"[{cfg.host}]" if family == socket.AF_INET6 else cfg.host
    print(f"fiva: serving on http://{host}:{port}/ (Ctrl+C stops; uploads and results in {ws.root} "
          "are deleted then)", flush=True)
    if not _loopback(cfg.host):
        print(f"fiva: warning: listening on {cfg.host}: other machines can reach this page and its uploads",
              file=sys.stderr, flush=True)
    server = uvicorn.Server(uvicorn.Config(build_app(ws, cfg), log_level="warning", access_log=False))
    # uvicorn shuts down gracefully on SIGINT/SIGTERM, then raises the signal again with the handler
    # it found: for SIGTERM that must be ours, or the default one would end the process before the
    # temporary folder is deleted.
    previous = signal.signal(signal.SIGTERM, _stop)
    try:
        server.run(sockets=[sock])
    except (KeyboardInterrupt, _Stopped):
        pass
    finally:
        ws.close()
        sock.close()
        signal.signal(signal.SIGTERM, previous)
    print("fiva: stopped; uploads and results deleted", file=sys.stderr, flush=True)
    return 0


class _Stopped(Exception):
    """SIGTERM arrived."""


def _stop(signum, frame):
    raise _Stopped()


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _mb(n: int) -> str:
    return f"{n / 1024 / 1024:.1f} MB"
