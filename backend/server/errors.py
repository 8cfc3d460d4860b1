"""`ApiError`: every failure the HTTP API reports, as a status and a `{"error": {"type", "message"}}` body."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """A request the server answers with `status` and a JSON error naming the problem and the fix."""

    def __init__(self, status: int, type: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.type = type
        self.message = message
        self.headers = headers or {}

    def body(self) -> dict:
        """The JSON error body."""
        return {"error": {"type": self.type, "message": self.message}}


def bad_request(message: str, type: str = "invalid_request") -> ApiError:
    """A 400 for a malformed or invalid field."""
    return ApiError(400, type, message)


def json_type(value: Any) -> str:
    """The JSON name of a value's type, for messages."""
    names = {
        dict: "an object",
        list: "an array",
        str: "a string",
        bool: "a boolean",
        int: "a number",
        float: "a number",
        type(None): "null",
    }
    return names.get(type(value), type(value).__name__)
