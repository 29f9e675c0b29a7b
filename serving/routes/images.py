"""POST /v1/images:upscale: one image in, the upscaled image back (synchronous, size-limited)."""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path
from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, HTTPException, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from PIL import Image as PILImage

from genai.errors import InputError, UnknownModelError, WeightsMissingError
from genai.sr import target_size
from genai.images import Image, encode_image, read_image

from serving.deps import Caller, ServiceDep, errors, timed
from serving.sniff import image_type

router = APIRouter(tags=["images"])

FORMATS = {"png": ("png", "image/png"), "jpeg": ("jpg", "image/jpeg"), "webp": ("webp", "image/webp"),
           "tiff": ("tif", "image/tiff")}
PNG_LEVEL = 1  # a response is transient: fast zlib (~4x faster than level 6, ~15% more bytes)
SAME_AS_INPUT = {"png": "png", "jpeg": "jpeg", "webp": "webp", "tiff": "tiff"}


def safe_stem(name: str | None, default: str = "image") -> str:
    """A client's file name reduced to something safe to echo in a header (never a path)."""
    stem = Path((name or "").replace("\\", "/")).name.rsplit(".", 1)[0]
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._")[:80]
    return stem or default


def check_model(service, model: str):
    """The model's manifest; UnknownModelError (422) or WeightsMissingError (503: not prepared)."""
    try:
        manifest = service.registry.get(model)
    except UnknownModelError:
        known = ", ".join(service.registry.ids())
        raise UnknownModelError(f"model: unknown model {model!r} (available: {known})") from None
    if not manifest.weights_path.exists():
        raise WeightsMissingError(f"model {model!r} is not prepared on this server "
                                  f"(an operator runs: genai models pull {model})")
    return manifest


async def read_upload_head(file: UploadFile, limit_bytes: int, what: str, *, field: str = "file") -> bytes:
    size = file.size
    if size is not None and size > limit_bytes:
        raise HTTPException(413, f"{field}: {what} of {size:,} bytes is over the limit of {limit_bytes:,}")
    head = await file.read(512)
    await file.seek(0)
    if not head:
        raise HTTPException(400, f"{field}: empty upload")
    return head


def _decode(path: Path, name: str, max_pixels: int) -> Image:
    try:
        with PILImage.open(path) as im:  # header only: refuse a decompression bomb before decoding
            w, h = im.size
    except OSError:
        raise HTTPException(400, f"file: {name} is not a readable image") from None
    if w * h > max_pixels:
        raise HTTPException(413, f"file: {name} is {w}x{h} = {w * h:,} pixels, over the limit of {max_pixels:,} "
                                 "for a synchronous upscale")
    try:
        return read_image(path, max_pixels=max_pixels)
    except InputError as exc:
        raise HTTPException(400, str(exc).replace(str(path), f"file: {name}")) from None


def _encode(img: Image, fmt: str, quality: int) -> bytes:
    return encode_image(img, fmt.upper(), quality=quality, png_level=PNG_LEVEL, name="format")  # InputError: 422


@router.post("/v1/images:upscale", response_class=Response,
             responses={200: {"content": {m: {} for _, m in FORMATS.values()}, "description": "the upscaled image"},
                        **errors(400, 413, 415, 503, 504)})
async def upscale_image(
    request: Request,
    owner: Caller,
    service: ServiceDep,
    file: Annotated[UploadFile, File(description="PNG, JPEG, WebP, TIFF, BMP or GIF (sniffed from the bytes)")],
    model: Annotated[str | None, Form(description="model id (GET /v1/models); default: the server's")] = None,
    scale: Annotated[float | None, Form(gt=0, le=16)] = None,
    width: Annotated[int | None, Form(gt=0, le=32768)] = None,
    height: Annotated[int | None, Form(gt=0, le=32768)] = None,
    format: Annotated[Literal["png", "jpeg", "webp", "tiff"] | None, Form(description="default: the input's")] = None,
    quality: Annotated[int, Form(ge=1, le=100)] = 95,
) -> Response:
    settings = service.settings
    name = safe_stem(file.filename)
    head = await read_upload_head(file, settings.max_image_mb << 20, "image")
    kind = image_type(head)
    if kind is None:
        raise HTTPException(415, "file: not a supported image (PNG, JPEG, WebP, TIFF, BMP or GIF), "
                                 "judged from its content")
    model = model or settings.image_model
    manifest = check_model(service, model)

    with tempfile.TemporaryDirectory(prefix="genai-in-") as tmp:
        src = Path(tmp) / "upload"
        with open(src, "wb") as f:
            await run_in_threadpool(shutil.copyfileobj, file.file, f, 1 << 20)
        img = await run_in_threadpool(_decode, src, name, settings.max_image_pixels)
    h, w = img.pixels.shape[:2]
    try:
        out_h, out_w = target_size(h, w, native=manifest.scale, scale=scale, width=width, height=height)
    except InputError as exc:
        raise HTTPException(422, str(exc).replace("--", "")) from None
    if out_h * out_w > settings.max_output_pixels:
        raise HTTPException(413, f"the output would be {out_w}x{out_h} = {out_h * out_w:,} pixels, over the "
                                 f"limit of {settings.max_output_pixels:,} for a synchronous upscale")

    pixels, seconds = await timed(service, "the upscale", service.metrics.upscale_seconds.labels(model),
                                  lambda: service.inference.upscale(img.pixels, model=model, scale=scale, width=width,
                                                                    height=height), request=request)

    fmt = format or SAME_AS_INPUT.get(kind, "png")
    if fmt == "jpeg" and pixels.shape[2] == 4:
        fmt = "png" if format is None else fmt
    ext, media = FORMATS[fmt]
    body = await run_in_threadpool(_encode, img.with_pixels(pixels), fmt, quality)
    return Response(body, media_type=media, headers={
        "Content-Disposition": f'inline; filename="{name}_{pixels.shape[1]}x{pixels.shape[0]}.{ext}"',
        "X-Genai-Model": model, "X-Genai-Size": f"{pixels.shape[1]}x{pixels.shape[0]}",
        "X-Genai-Inference-Seconds": f"{seconds:.4f}",
    })
