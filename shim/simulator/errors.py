"""The SDRS error codes the simulator answers with, each with its documented HTTP status and message.

Codes, statuses and messages come from the SDRS API reference appendix (error_codes.rst); the one
undocumented entry is marked. Keeping them in one table stops handlers from inventing variants.
"""

from __future__ import annotations

from typing import Any, NamedTuple


class ErrorSpec(NamedTuple):
    http_status: int
    message: str


ERRORS: dict[str, ErrorSpec] = {
    "SDRS.0201": ErrorSpec(400, "Invalid request parameters"),
    "SDRS.0202": ErrorSpec(400, "Invalid name"),
    "SDRS.0206": ErrorSpec(400, "Invalid action"),
    "SDRS.0207": ErrorSpec(400, "Invalid protection group ID"),
    "SDRS.0211": ErrorSpec(400, "Invalid disk ID"),
    "SDRS.0212": ErrorSpec(400, "Invalid description"),
    "SDRS.0213": ErrorSpec(400, "Invalid replication pair ID"),
    "SDRS.0214": ErrorSpec(400, "Incorrect replication pair status"),
    "SDRS.0221": ErrorSpec(400, "limit value must be greater than 0 or less than 1000"),
    "SDRS.0222": ErrorSpec(400, "offset value cannot be negative, and must be an integer"),
    # Documented as 500 "Null job" but not for unknown job ids: the docs do not say what
    # GET jobs/{unknown} returns. The simulator answers 404 with this code (see server.py).
    "SDRS.0408": ErrorSpec(500, "Null job"),
    "SDRS.1002": ErrorSpec(400, "Operation not allowed for the protection group in the current state"),
    "SDRS.1010": ErrorSpec(400, "Protection group deletion not allowed due to a replication pair"),
    "SDRS.1013": ErrorSpec(400, "Protection group not found"),
    "SDRS.1024": ErrorSpec(
        400, "Operation not allowed because the protection group status not available or protected"
    ),
    "SDRS.1605": ErrorSpec(400, "Replication pair attached"),
    "SDRS.1608": ErrorSpec(400, "Replication pair not found"),
    "SDRS.1611": ErrorSpec(400, "Replication pair not in the protection group"),
    "SDRS.1803": ErrorSpec(400, "Null disk"),
    "SDRS.1811": ErrorSpec(400, "Disk already used by a replication pair"),
    "SDRS.1824": ErrorSpec(400, "Operation not allowed due to a system error"),
    # Job error codes (the job's error_code on FAIL, never an HTTP answer here).
    "SDRS.1027": ErrorSpec(400, "Failed to enable protection"),
    "SDRS.1028": ErrorSpec(400, "Failed to disable protection"),
    "SDRS.1029": ErrorSpec(400, "Failed to perform the planned failover"),
    "SDRS.1030": ErrorSpec(400, "Failed to perform the failover"),
    "SDRS.1032": ErrorSpec(400, "Failed to enable protection again"),
    "SDRS.1016": ErrorSpec(500, "Failed to delete the protection group"),
    "SDRS.1606": ErrorSpec(400, "Failed to create the replication pair and status being error"),
    "SDRS.1607": ErrorSpec(400, "Failed to delete the replication pair"),
    "SDRS.1609": ErrorSpec(400, "Replication pair creation failure"),
    "SDRS.1820": ErrorSpec(400, "Failed to expand the capacity"),
}

# The unknown-job answer is undocumented; 404 matches what clients treat as "gone".
UNKNOWN_JOB_HTTP_STATUS = 404


class SdrsError(Exception):
    """An SDRS API error: `code` must be in ERRORS; `http_status` may override the documented one."""

    def __init__(self, code: str, http_status: int | None = None) -> None:
        spec = ERRORS[code]
        super().__init__(f"{code}: {spec.message}")
        self.code = code
        self.message = spec.message
        self.http_status = spec.http_status if http_status is None else http_status

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message}}
