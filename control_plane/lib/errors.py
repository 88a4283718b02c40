"""The contract's error format, and the handlers that turn every failure into it.

``{"error": {"code", "message", "fields"?, "details"?, "request_id", "timestamp"}}``.
Nothing internal (stack trace, SQL, secret) ever reaches a response or a log.
"""

import logging
from typing import Any

from litestar import MediaType, Request, Response
from litestar.exceptions import (
    HTTPException,
    MethodNotAllowedException,
    NotAuthorizedException,
    NotFoundException,
    PermissionDeniedException,
    ValidationException,
)
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR

from control_plane.lib.request_id import request_id_of
from iron.timefmt import iso, utcnow
from iron.validation import InvalidBody

log = logging.getLogger("iron.control_plane")


class ApiError(Exception):
    """A failure the client should see, with its status and UPPER_SNAKE code."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        fields: dict[str, str] | None = None,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.fields = fields
        self.details = details
        self.headers = headers


def validation_error(fields: dict[str, str], message: str = "Request validation failed") -> ApiError:
    return ApiError(400, "VALIDATION_ERROR", message, fields=fields)


def not_found(what: str, **details: Any) -> ApiError:
    return ApiError(404, "RESOURCE_NOT_FOUND", f"{what} not found", details=details or None)


def permission_denied(message: str = "You may not do this") -> ApiError:
    return ApiError(403, "PERMISSION_DENIED", message)


def invalid_token(message: str = "Invalid or missing authentication token") -> ApiError:
    return ApiError(401, "AUTH_INVALID_TOKEN", message)


def conflict(message: str, **details: Any) -> ApiError:
    return ApiError(409, "RESOURCE_CONFLICT", message, details=details or None)


def _body(request: Request[Any, Any, Any], error: ApiError) -> dict[str, Any]:
    payload: dict[str, Any] = {"code": error.code, "message": error.message}
    if error.fields:
        payload["fields"] = error.fields
    if error.details:
        payload["details"] = error.details
    payload["request_id"] = request_id_of(request.scope)
    payload["timestamp"] = iso(utcnow())
    return {"error": payload}


def _respond(request: Request[Any, Any, Any], error: ApiError) -> Response[Any]:
    return Response(
        _body(request, error),
        status_code=error.status,
        media_type=MediaType.JSON,
        headers=error.headers,
    )


def _on_api_error(request: Request[Any, Any, Any], exc: ApiError) -> Response[Any]:
    return _respond(request, exc)


def _on_invalid_body(request: Request[Any, Any, Any], exc: InvalidBody) -> Response[Any]:
    return _respond(request, validation_error(exc.fields, exc.message))


def _on_validation(request: Request[Any, Any, Any], exc: ValidationException) -> Response[Any]:
    """Litestar's own parameter validation (query and path): all fields, our format."""
    fields: dict[str, str] = {}
    for item in exc.extra if isinstance(exc.extra, list) else []:
        if isinstance(item, dict):
            fields[str(item.get("key") or "body")] = str(item.get("message", "Invalid value"))
    return _respond(request, validation_error(fields or {"body": "Invalid request"}))


_HTTP_CODES: dict[type[HTTPException], tuple[str, str]] = {
    NotFoundException: ("RESOURCE_NOT_FOUND", "No such resource"),
    MethodNotAllowedException: ("METHOD_NOT_ALLOWED", "Method not allowed on this resource"),
    NotAuthorizedException: ("AUTH_INVALID_TOKEN", "Invalid or missing authentication token"),
    PermissionDeniedException: ("PERMISSION_DENIED", "You may not do this"),
}


def _on_http(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    code, message = _HTTP_CODES.get(type(exc), ("", ""))
    if not code:
        code = "REQUEST_TOO_LARGE" if exc.status_code == 413 else "BAD_REQUEST"
        message = "Request body too large" if exc.status_code == 413 else "Bad request"
        if exc.status_code >= 500:
            code, message = "SERVER_INTERNAL_ERROR", "Internal server error"
    return _respond(request, ApiError(exc.status_code, code, message, headers=exc.headers))


def _on_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    # The type only: a message may carry SQL or a secret, a traceback certainly does.
    log.error(
        "unhandled %s on %s %s request_id=%s",
        type(exc).__name__,
        request.method,
        request.url.path,
        request_id_of(request.scope),
    )
    return _respond(
        request,
        ApiError(HTTP_500_INTERNAL_SERVER_ERROR, "SERVER_INTERNAL_ERROR", "Internal server error"),
    )


exception_handlers: dict[type[Exception] | int, Any] = {
    ApiError: _on_api_error,
    InvalidBody: _on_invalid_body,
    ValidationException: _on_validation,
    HTTPException: _on_http,
    Exception: _on_unexpected,
}
