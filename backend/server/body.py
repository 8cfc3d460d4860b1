"""Reading a request body: JSON (any content type the origin checks let through) or multipart/form-data, within
the size limit and the body timeout; the parsed JSON holds valid Unicode only.

- JSON: images are base64 strings (PNG, JPEG or WebP only; a `data:image/...;base64,` prefix is allowed);
  a video is `{"frames": [<base64 image>, ...], "fps": 8}`.
- multipart: file parts named `images`, `candidates` or `reference` carry raw image bytes (repeat the part
  for several images); a part named `json` holds every other field as a JSON object; other text parts are
  string fields (`prompt`, `model`, `criteria`, ...).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from .errors import ApiError, bad_request
from .schema import (
    FILE_FIELDS,
)

MAX_PARTS = 2048  # multipart parts per request


# --- reading the body -------------------------------------------------------------------------------------------
async def read_payload(request: Any, max_bytes: int, timeout: float | None = None) -> dict[str, Any]:
    """The request body as a dict (JSON or multipart), 413 beyond `max_bytes`, 408 when it takes over `timeout`
    seconds to arrive (a slow client cannot hold a connection and its buffer open)."""
    try:
        return await asyncio.wait_for(_read_payload(request, max_bytes), timeout)
    except asyncio.TimeoutError:
        raise ApiError(
            408,
            "body_timeout",
            f"the request body did not arrive within {timeout:g} s (body_timeout_s); send it faster",
        ) from None


async def _read_payload(request: Any, max_bytes: int) -> dict[str, Any]:
    if request.content_length is not None and request.content_length > max_bytes:
        raise too_large(request.content_length, max_bytes)
    if request.content_type.startswith("multipart/"):
        return await _read_multipart(request, max_bytes)
    body = bytearray()
    while chunk := await request.content.readany():
        body.extend(chunk)
        if len(body) > max_bytes:
            raise too_large(len(body), max_bytes)
    return await asyncio.to_thread(parse_json, bytes(body))  # tens of MB of base64 would stall the event loop


def too_large(size: int, limit: int) -> ApiError:
    """The 413 answer for a body over the limit."""
    return ApiError(
        413,
        "body_too_large",
        f"the request body ({size} bytes or more) is over the limit of {limit} "
        "bytes; send fewer or smaller images, or raise --max-body-mb",
    )


def parse_json(body: bytes) -> dict[str, Any]:
    """A JSON object from the raw body."""
    if not body.strip():
        raise bad_request(
            'the request body is empty; send a JSON object such as {"prompt": "a red fox", "images": ["<base64 png>"]}',
            "invalid_json",
        )
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise bad_request(f"the request body is not valid JSON ({exc})", "invalid_json") from exc
    except RecursionError as exc:
        raise bad_request("the request body nests JSON too deeply", "invalid_json") from exc
    if not isinstance(data, dict):
        raise bad_request(f"the request body must be a JSON object, got a JSON {type(data).__name__}", "invalid_json")
    try:
        check_text_encodable(data, "")
    except RecursionError as exc:
        raise bad_request("the request body nests JSON too deeply", "invalid_json") from exc
    return data


def check_text_encodable(value: Any, where: str) -> None:
    """Every string of a parsed body is valid Unicode (JSON's \\ud800 escapes can make lone surrogates)."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise bad_request(
                f"{where or 'body'}: the text holds a lone surrogate ({exc.reason}); send valid Unicode", "invalid_json"
            ) from exc
    elif isinstance(value, dict):
        for key, item in value.items():
            check_text_encodable(key, where or "body")
            check_text_encodable(item, f"{where}.{key}" if where else str(key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            check_text_encodable(item, f"{where}[{i}]")


async def _read_multipart(request: Any, max_bytes: int) -> dict[str, Any]:
    """multipart/form-data: file parts become raw-bytes items, the `json` part and text parts become fields."""
    try:
        reader = await request.multipart()
    except Exception as exc:
        raise bad_request(f"malformed multipart body ({exc})", "invalid_multipart") from exc
    data: dict[str, Any] = {}
    total = parts = 0
    while True:
        try:
            part = await reader.next()
        except Exception as exc:
            raise bad_request(f"malformed multipart body ({exc})", "invalid_multipart") from exc
        if part is None:
            break
        parts += 1
        if parts > MAX_PARTS:
            raise ApiError(
                413, "body_too_large", f"more than {MAX_PARTS} multipart parts; send fewer images per request"
            )
        if not hasattr(part, "read_chunk"):
            raise bad_request("nested multipart parts are not supported; send files as flat parts", "invalid_multipart")
        total += 256  # part headers count towards the limit too
        chunks = bytearray()
        while chunk := await part.read_chunk():
            chunks.extend(chunk)
            total += len(chunk)
            if total > max_bytes:
                raise too_large(total, max_bytes)
        name = part.name or ""
        if name in FILE_FIELDS:
            data.setdefault(name, []).append(bytes(chunks))
        elif name == "json":
            fields = parse_json(bytes(chunks))
            clash = sorted(set(fields) & set(data))
            if clash:
                raise bad_request(f"field(s) {', '.join(clash)} given both in the json part and as parts")
            data.update(fields)
        elif name:
            if name in data:
                raise bad_request(f"field {name!r} given twice in the multipart body")
            data[name] = chunks.decode("utf-8", errors="replace")
        else:
            raise bad_request("a multipart part has no name; name file parts images/candidates/reference")
    if "reference" in data and isinstance(data["reference"], list) and len(data["reference"]) == 1:
        data["reference"] = data["reference"][0]
    return data
