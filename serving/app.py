"""The FastAPI application: ``POST /predict``, ``GET /healthz`` and the page at ``GET /``.

Every error, whoever detects it (FastAPI's body validation, our limits, an unknown path, the
model), answers with the same JSON shape ``{"error": "<what is wrong and what to do>"}``, so a
client needs one code path for failures; the server keeps serving after any of them. The
interactive docs (``/docs``) are off: they load their scripts from a CDN, and the page must
work offline.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Protocol

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from serving.batching import MicroBatcher

logger = logging.getLogger(__name__)

__all__ = ["STATIC_DIR", "PredictRequest", "create_app"]

# Package data beside this module, so it is found wherever the package is installed.
STATIC_DIR = Path(__file__).resolve().parent / "static"
# The page loads only its own script and style sheet: no CDN, no inline script.
PAGE_CSP = "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'"
EXAMPLE_BODY = '{"texts": ["a text", "another text"]}'
ENDPOINTS = "GET / (the page), GET /healthz, POST /predict"
JSON_TYPES = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}


class Model(Protocol):
    """What the app needs of a model (serving.exported_model.ExportedModel is one)."""

    task: str
    labels: list[str]

    def info(self) -> dict[str, Any]: ...

    def predict(self, texts: list[str]) -> list[dict[str, Any]]: ...


class PredictRequest(BaseModel):
    """The body of ``POST /predict``."""

    texts: list[str]


class ApiError(Exception):
    """A request the server refuses: an HTTP status and a message for the client."""

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message


def create_app(
    model: Model, *, max_batch: int = 32, max_texts: int = 64, max_chars: int = 2000
) -> FastAPI:
    """The server's application over ``model``; run it with uvicorn.

    Args:
        model: the loaded export.
        max_batch: the most texts in one model call (requests are coalesced up to it).
        max_texts: the most texts in one request (413 above).
        max_chars: the most characters in one text (413 above).
    """
    batcher = MicroBatcher(model.predict, max_batch=max_batch)
    limits = {"max_batch": max_batch, "max_texts": max_texts, "max_chars": max_chars}

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        async with batcher:
            logger.debug("batcher running; limits %s", limits)
            yield

    app = FastAPI(
        title="ULMFiT task server",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.batcher = batcher
    _add_error_handlers(app)

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        stats = batcher.stats
        return {
            "status": "ok",
            **model.info(),
            "limits": limits,
            "batching": {
                "model_calls": stats.model_calls,
                "texts": stats.texts,
                "largest_batch": stats.largest_batch,
                "failed_calls": stats.failed_calls,
            },
        }

    @app.post("/predict")
    async def predict(request: PredictRequest) -> dict[str, Any]:
        _check_limits(request.texts, max_texts, max_chars)
        try:
            predictions = await batcher.predict(request.texts)
        except Exception as err:
            logger.exception("prediction failed")
            raise ApiError(500, f"the model failed on this request: {err!r}") from None
        return {"predictions": predictions, "task": model.task, "labels": model.labels}

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(
            STATIC_DIR / "index.html", headers={"Content-Security-Policy": PAGE_CSP}
        )

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


def _check_limits(texts: list[str], max_texts: int, max_chars: int) -> None:
    if not texts:
        raise ApiError(422, f'"texts" is empty: send at least one text, e.g. {EXAMPLE_BODY}')
    if len(texts) > max_texts:
        raise ApiError(
            413,
            f"{len(texts)} texts in one request, the limit is {max_texts}: split them over "
            "several requests (the server batches concurrent requests anyway)",
        )
    for i, text in enumerate(texts):
        if len(text) > max_chars:
            raise ApiError(
                413,
                f"texts[{i}] has {len(text)} characters, the limit is {max_chars}: "
                "shorten it or split it into several texts",
            )


def _add_error_handlers(app: FastAPI) -> None:
    """Every error as ``{"error": message}``, FastAPI's own validation errors included."""

    @app.exception_handler(ApiError)
    async def api_error(_request: Request, err: ApiError) -> JSONResponse:
        return JSONResponse({"error": err.message}, status_code=err.status_code)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, err: RequestValidationError) -> JSONResponse:
        content_type = request.headers.get("content-type", "")[:100]
        status_code, message = describe_validation_errors(err.errors(), content_type)
        return JSONResponse({"error": message}, status_code=status_code)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, err: HTTPException) -> JSONResponse:
        message = f"{err.detail}: {request.method} {request.url.path}; the server has {ENDPOINTS}"
        return JSONResponse({"error": message}, status_code=err.status_code, headers=err.headers)


def describe_validation_errors(
    errors: list[dict[str, Any]], content_type: str = ""
) -> tuple[int, str]:
    """An HTTP status and one message for pydantic's errors on the request body.

    A body that is not JSON (invalid, or not sent as JSON) is a 400; a JSON body of the wrong
    shape a 422. The message names the first problem (the client fixes one at a time) and
    shows what a good body looks like.
    """
    first = errors[0] if errors else {"type": "", "loc": (), "msg": "invalid request"}
    kind, loc, value = first["type"], tuple(first.get("loc", ())), first.get("input")
    if kind == "json_invalid":
        reason = first.get("ctx", {}).get("error", first["msg"])
        return 400, (
            f"the body is not valid JSON ({reason}); send {EXAMPLE_BODY} "
            "with Content-Type: application/json"
        )
    if loc == ("body",):
        if isinstance(value, bytes):  # FastAPI parses JSON only when the request says it is
            return 400, (
                f"the body was not sent as JSON (Content-Type: {content_type or 'none'}); "
                f"send {EXAMPLE_BODY} with Content-Type: application/json"
            )
        if kind == "missing":
            return 422, f"the body is empty; send {EXAMPLE_BODY}"
        return 422, f"the body must be a JSON object like {EXAMPLE_BODY}, not {_json_type(value)}"
    if loc == ("body", "texts"):
        if kind == "missing":
            return 422, f'the body has no "texts"; send {EXAMPLE_BODY}'
        return 422, f'"texts" must be an array of strings, not {_json_type(value)}'
    if loc[:2] == ("body", "texts") and len(loc) == 3:
        return 422, f"texts[{loc[2]}] must be a string, not {_json_type(value)}"
    where = ".".join(str(part) for part in loc[1:]) or "the body"
    return 422, f"{where}: {first['msg']}; send {EXAMPLE_BODY}"


def _json_type(value: Any) -> str:
    """How JSON calls the type of ``value``: "an object", "a number", ..."""
    if value is None:
        return "null"
    for python_type, name in JSON_TYPES.items():
        if isinstance(value, python_type):
            return name
    if isinstance(value, int | float):
        return "a number"
    return type(value).__name__
