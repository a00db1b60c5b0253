"""Which raw request paths the shim serves as translated URLs, and which it refuses (pure).

The rule is closed: a path that names a translated collection (`os-vendor-replication...`) in *any*
reading a server could give it (every escape decoded, again and again; `%uXXXX`; overlong UTF-8; any
case; Unicode compatibility forms; whitespace, control and format characters dropped) is served only
when it is spelled exactly as one of the translated routes (shim/translate/url_space.py). Every other
spelling is refused, never relayed: a legacy endpoint that reads `…/action%3F`, `…/action%23`, a
trailing dot, `;x`, `%2F`, `//` or `V2` as the route would act on a migrated group's stale copy
behind the shim's back. Nothing here enumerates normalisations one by one: whatever a server might
strip or decode, the path still holds the collection's name, and only the exact spelling passes.
"""

from __future__ import annotations

import functools
import re
import unicodedata

from shim.translate.legacy import PAIR_COLLECTION, RCG_COLLECTION

# What both collection names start with: a path in which no reading holds it names neither.
COLLECTION_STEM = "os-vendor-replication"
assert RCG_COLLECTION.startswith(COLLECTION_STEM) and PAIR_COLLECTION.startswith(COLLECTION_STEM)

# The translated routes, spelled exactly (shim/translate/url_space.py): `v2`, the collection names and
# `action` in lower case; the project and the ids letters, digits and dashes only (what an id may be
# spelled with: the handlers then check it is a UUID), so nothing in them can be decoded or stripped.
_ID = r"[0-9A-Za-z-]+"
_CANONICAL_ROUTE = re.compile(
    rf"/v2/{_ID}/(?:{re.escape(RCG_COLLECTION)}(?:/{_ID}(?:/action)?)?|{re.escape(PAIR_COLLECTION)}(?:/{_ID})?)"
)

_PERCENT = re.compile(rb"%([0-9A-Fa-f]{2})")
_PERCENT_U = re.compile(rb"%[uU]([0-9A-Fa-f]{4})")  # IIS's `%u006F`
# Overlong UTF-8 (`%C1%AF` for `o`), which lenient decoders read as the ASCII character.
_OVERLONG_2 = re.compile(rb"[\xc0\xc1][\x80-\xbf]")
_OVERLONG_3 = re.compile(rb"\xe0[\x80-\x9f][\x80-\xbf]")
# Dropped by some server on the way (whitespace, controls, format characters such as U+200B).
_DROPPED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zs", "Zl", "Zp"})
_REMEMBERED_PATH_LENGTH = 512  # at most 512 paths of 512 characters: a quarter of a megabyte


def _plain(raw_path: str) -> bool:
    """Printable ASCII without spaces or escapes: its only other reading is another case."""
    return "%" not in raw_path and raw_path.isascii() and raw_path.isprintable() and " " not in raw_path


def is_canonical_route(raw_path: str) -> bool:
    """The path is exactly one of the translated routes (any project, any id spelled plainly)."""
    return _CANONICAL_ROUTE.fullmatch(raw_path) is not None


def names_a_translated_collection(raw_path: str) -> bool:
    """Whether some reading of the raw path holds a translated collection's name (its stem)."""
    if _plain(raw_path):
        return COLLECTION_STEM in raw_path.lower()
    if len(raw_path) > _REMEMBERED_PATH_LENGTH:
        return _any_reading_names_a_collection(raw_path)
    return _remembered_reading(raw_path)


def _fully_decoded(raw_path: str) -> bytes:
    """Every escape decoded, and the result decoded again, until nothing changes (each round that
    changes something shortens the bytes, so this ends)."""
    data = raw_path.encode("utf-8", "surrogateescape")
    while True:
        decoded = _PERCENT.sub(lambda match: bytes([int(match[1], 16)]), data)
        decoded = _PERCENT_U.sub(lambda match: chr(int(match[1], 16)).encode("utf-8", "surrogatepass"), decoded)
        if decoded == data:
            return data
        data = decoded


def _overlong_as_ascii(data: bytes) -> bytes:
    def two(match: re.Match[bytes]) -> bytes:
        return bytes([(match[0][0] & 0x1F) << 6 | (match[0][1] & 0x3F)])  # C0/C1: always below 0x80

    def three(match: re.Match[bytes]) -> bytes:
        value = (match[0][1] & 0x3F) << 6 | (match[0][2] & 0x3F)
        return bytes([value]) if value < 0x80 else match[0]

    return _OVERLONG_3.sub(three, _OVERLONG_2.sub(two, data))


def _folded(text: str) -> str:
    """Compatibility forms and case folded, dashes of any kind read as `-`, dropped characters gone."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    return "".join("-" if unicodedata.category(char) == "Pd" else char for char in folded
                   if unicodedata.category(char) not in _DROPPED_CATEGORIES)


def _any_reading_names_a_collection(raw_path: str) -> bool:
    data = _fully_decoded(raw_path)
    readings = (data.decode("utf-8", "ignore"), _overlong_as_ascii(data).decode("utf-8", "ignore"),
                data.decode("latin-1"))
    return any(COLLECTION_STEM in _folded(reading) for reading in readings)


_remembered_reading = functools.lru_cache(maxsize=512)(_any_reading_names_a_collection)


def disguises_a_translated_url(raw_path: str) -> bool:
    """A path the shim refuses (legacy 400) and never relays: some reading of it names a translated
    collection, and it is not spelled exactly as a translated route. A few string tests, no call, for
    the paths of ordinary passthrough traffic (plain ASCII without the collection stem)."""
    if "%" not in raw_path and raw_path.isascii() and raw_path.isprintable() and " " not in raw_path:  # _plain
        return COLLECTION_STEM in raw_path.lower() and _CANONICAL_ROUTE.fullmatch(raw_path) is None
    return names_a_translated_collection(raw_path) and _CANONICAL_ROUTE.fullmatch(raw_path) is None


def names_a_translated_url(raw_path: str) -> bool:
    """Whether the path is a translated URL: exactly one of the translated routes."""
    return is_canonical_route(raw_path)


CANONICAL_FORMS = (f"/v2/{{project_id}}/{RCG_COLLECTION}[/{{id}}[/action]] or "
                   f"/v2/{{project_id}}/{PAIR_COLLECTION}[/{{id}}]")
REFUSED_SPELLING = ("Malformed request url: replication consistency group and replication URLs are served only "
                    f"in their canonical form, {CANONICAL_FORMS}, spelled exactly so (the ids in letters, digits "
                    "and dashes; no escapes, dot segments, empty segments, parameters, suffixes or other case).")
