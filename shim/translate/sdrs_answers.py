"""Reading SDRS answers (pure): a success answer as its pydantic model, a failure as a legacy error.

Which legacy status each SDRS code or status becomes is data, `mappings/sdrs-errors.yaml`; this module
reads SDRS's error envelopes and applies that table. A success status with a body that is not the
documented shape is a gateway fault (legacy 502).
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from shim.translate.legacy import LegacyError
from shim.translate.sdrs_models import SdrsAnswer, SdrsAnswerTooLarge, SdrsNotSent, SdrsTimeout, SdrsTransportError
from shim.translate.tables import SdrsErrorTable

DEFAULT_RETRY_AFTER_SECONDS = 5

Model = TypeVar("Model", bound=BaseModel)


def parse_answer(answer: SdrsAnswer, model: type[Model], table: SdrsErrorTable, doing: str) -> Model:
    """The documented success body of `answer`, or the legacy error it stands for."""
    if answer.status >= 400:
        raise legacy_error_for_answer(answer, table, doing)
    try:
        return model.model_validate_json(answer.body)
    except ValidationError as err:
        first = err.errors(include_url=False)[0]
        where = ".".join(str(part) for part in first["loc"]) or "body"
        raise unexpected_answer(answer, doing, f"HTTP {answer.status}, {where}: {first['msg']}") from None


def sdrs_error_fields(body: Any) -> tuple[str | None, str | None]:
    """(code, message) from any documented SDRS or API-gateway error envelope, else (None, None).

    Envelopes: `{"error": {"code", "message"}}` (the wrapper key may be any name, e.g. `badrequest`,
    `itemNotFound`), and the gateway's flat `{"error_code", "error_msg"}` (or errorCode/errorMsg).
    """
    if not isinstance(body, dict):
        return None, None
    for code_key, message_key in (("error_code", "error_msg"), ("errorCode", "errorMsg"), ("code", "message")):
        if isinstance(body.get(code_key), str):
            message = body.get(message_key)
            return body[code_key], message if isinstance(message, str) else None
    if len(body) == 1:
        (inner,) = body.values()
        if isinstance(inner, dict) and isinstance(inner.get("code"), str):
            message = inner.get("message")
            return inner["code"], message if isinstance(message, str) else None
    return None, None


def sdrs_error_code(answer: SdrsAnswer) -> str | None:
    return sdrs_error_fields(answer.json())[0]


def legacy_error_for_answer(answer: SdrsAnswer, table: SdrsErrorTable, doing: str) -> LegacyError:
    """An SDRS error answer (status >= 400) as the legacy error the table assigns to it."""
    code, message = sdrs_error_fields(answer.json())
    status = table.legacy_status(answer.status, code)
    documented = table.codes.get(code or "")
    detail = message or (documented.message if documented else None) or "no error message"
    text = f"SDRS refused to {doing}: HTTP {answer.status}"
    text += f", {code}: {detail}" if code else f": {detail}"
    if status == 502 and answer.status < 500:
        # SDRS refused a call the shim built from its configuration (a 404 without SDRS's own
        # not-found code, an invalid id from the mapping): say where to look, not "gone".
        text += (". The shim's configuration does not match this SDRS: check upstreams.sdrs and the "
                 "protection group ids in the mappings")
    retry_after = None
    if status == 503:
        retry_after = _retry_after(answer.headers.get("Retry-After"))
    return LegacyError(status, text, retry_after=retry_after, sdrs_code=code)


def legacy_error_for_transport(err: SdrsTransportError, doing: str) -> LegacyError:
    """Unreachable SDRS -> 503 (try again later); a too-slow SDRS -> 504; an answer larger than the
    shim reads -> 502."""
    if isinstance(err, SdrsTimeout):
        return LegacyError(504, f"SDRS did not answer in time while trying to {doing}.")
    if isinstance(err, SdrsNotSent):
        return LegacyError(503, f"SDRS is unreachable while trying to {doing}: no connection could be made, so "
                                "nothing was sent to it; it is safe to retry.", retry_after=DEFAULT_RETRY_AFTER_SECONDS)
    if isinstance(err, SdrsAnswerTooLarge):
        return LegacyError(502, f"SDRS's answer was too large while trying to {doing} ({err}).")
    # The cause (addresses, exception text) goes to the shim's log, not to the client.
    return LegacyError(
        503, f"SDRS is unreachable while trying to {doing}.", retry_after=DEFAULT_RETRY_AFTER_SECONDS
    )


def unexpected_answer(answer: SdrsAnswer, doing: str, problem: str) -> LegacyError:
    """An SDRS success answer that is not the documented shape: a gateway fault, 502."""
    return LegacyError(
        502, f"SDRS gave an answer that is not the documented shape while trying to {doing}: {problem}"
    )


def _retry_after(value: str | None) -> int:
    if value is not None and value.strip().isdigit():
        return min(int(value.strip()), 3600)
    return DEFAULT_RETRY_AFTER_SECONDS
