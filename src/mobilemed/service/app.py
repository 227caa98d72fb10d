"""create_app(MODEL): the FastAPI app behind `mobilemed serve`.

POST /v1/predict   multipart upload (PNG, JPEG or DICOM) -> probabilities, decision, threshold; ?explain=1 adds
                   a Grad-CAM overlay (checkpoint models)
GET  /v1/model     the spec and what the model was trained on
GET  /healthz      liveness
GET  /             the upload page (everything served by the app: works offline)
Model work runs in a bounded thread pool, so the event loop keeps answering while images are predicted, and
a bad upload is a 4xx JSON answer that never takes the service down.
"""

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from importlib import resources

from mobilemed.errors import MissingExtraError
from mobilemed.service.model import ServedModel
from mobilemed.service.uploads import DEFAULT_MAX_BYTES, UploadError, check_size, decode_upload

log = logging.getLogger(__name__)
API_VERSION = "v1"


def create_app(model_path, *, max_upload_bytes: int = DEFAULT_MAX_BYTES, workers: int = 2):
    try:
        from fastapi import FastAPI, Request, UploadFile
        from fastapi.responses import HTMLResponse, JSONResponse
    except ImportError:
        raise MissingExtraError("fastapi", "serve", "the web service") from None
    served = ServedModel(model_path)
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mobilemed-model")
    app = FastAPI(title="mobilemed", version=API_VERSION,
                  description=f"Predictions of {served.path.name} ({served.spec.task}: "
                              f"{', '.join(served.spec.class_names)})")
    page = resources.files("mobilemed.service").joinpath("page.html").read_text()

    @app.exception_handler(UploadError)
    async def refused(_request: Request, err: UploadError):
        return JSONResponse(status_code=err.status, content={"error": err.message})

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok", "model": served.path.name}

    @app.get("/v1/model")
    async def model_info() -> dict:
        return served.describe()

    @app.post("/v1/predict")
    async def predict(file: UploadFile, explain: bool = False) -> dict:
        content = await _read_limited(file, max_upload_bytes)
        if explain and not served.can_explain:
            raise UploadError(400, "Grad-CAM needs the checkpoint (best.pt); an exported .onnx model has no "
                                   "gradients. Serve the checkpoint to get overlays")
        loop = asyncio.get_running_loop()
        answer = await loop.run_in_executor(pool, _answer, served, content, explain)
        return {"model": served.path.name, "version": API_VERSION, "file": file.filename, **answer}

    @app.get("/", response_class=HTMLResponse)
    async def index() -> str:
        return page

    app.state.served = served
    return app


async def _read_limited(file, limit: int) -> bytes:
    """The upload's bytes, refusing as soon as it passes the limit (a huge upload is not read to the end)."""
    chunks, size = [], 0
    while chunk := await file.read(1024 * 1024):
        size += len(chunk)
        check_size(size, limit)
        chunks.append(chunk)
    check_size(size, limit)
    return b"".join(chunks)


def _answer(served: ServedModel, content: bytes, explain: bool) -> dict:
    pixels, kind = decode_upload(content, served.read_image)
    answer = {"format": kind, **served.predict(pixels)}
    if explain:
        answer |= served.explain(pixels)
    return answer
