"""Errors the legacy EVS stand-in answers with: the EVS fault envelope and the documented codes.

`{"<faultName>": {"message": "...", "code": "EVS.xxxx"}}`, the fault name following the HTTP status
as OpenStack services name it. Codes and messages come from the EVS error-code appendix.
"""

from __future__ import annotations

from typing import Any

FAULT_NAMES = {400: "badRequest", 401: "unauthorized", 404: "itemNotFound"}
DEFAULT_CODES = {400: "EVS.5400", 401: "EVS.5401", 404: "EVS.5404"}


class EvsError(Exception):
    """An EVS API error; `code` defaults to the generic EVS.5<status> code."""

    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        if status not in FAULT_NAMES:
            raise ValueError(f"the stand-in never answers {status}")
        super().__init__(f"{status} {message}")
        self.status = status
        self.message = message
        self.code = code or DEFAULT_CODES[status]

    def body(self) -> dict[str, Any]:
        return {FAULT_NAMES[self.status]: {"message": self.message, "code": self.code}}


def bad_request(message: str, code: str | None = None) -> EvsError:
    return EvsError(400, message, code)


def not_found(kind: str, resource_id: str) -> EvsError:
    return EvsError(404, f"{kind} {resource_id} could not be found.")
