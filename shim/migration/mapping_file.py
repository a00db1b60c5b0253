"""Adding discovered entries to `consistency-groups.yaml` without losing what an operator wrote.

The new entries are appended as text to the `consistency_groups` list when it is the file's last block
(comments, order and spelling of everything else kept); the result is parsed back and must be exactly
the old data plus the new entries. When appending cannot give that (the list is written `[]` or in flow
style, or another key follows it), the file is written again from its data: the comments are then
lost, and the backup keeps them. `--write` always backs the live file up first.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from shim.mappings import check_consistency_groups
from shim.validation import ConfigError

_LIST_KEY = re.compile(r"^consistency_groups:[ \t]*(#.*)?$", re.MULTILINE)  # a block list follows
_ANY_KEY = re.compile(r"^consistency_groups[ \t]*:", re.MULTILINE)
_ITEM = re.compile(r"^([ \t]*)- ", re.MULTILINE)
ENTRY_KEYS = ("project_id", "replication_consistency_group_id", "protection_group_id", "mode")
BLOCK_KEYS = ("legacy",)  # nested: written as YAML blocks under the entry


def with_entries(text: str, entries: list[dict[str, Any]], comments: list[str]) -> tuple[str, bool]:
    """The file's new text and whether its comments were kept. `comments[i]` goes above `entries[i]`."""
    data = yaml.safe_load(text) if text.strip() else None
    data = dict(data) if isinstance(data, dict) else {}
    expected = {**data, "consistency_groups": [*(data.get("consistency_groups") or []), *entries]}
    if not entries:
        return text, True
    appended = _appended(text, entries, comments)
    try:
        if appended is not None and yaml.safe_load(appended) == expected:
            return appended, True
    except yaml.YAMLError:
        pass  # another key follows the list: appending broke the document
    header = "# Written by `shim discover` from the file's data; the previous file (with its comments) is the backup.\n"
    return header + yaml.safe_dump(expected, sort_keys=False, default_flow_style=False), False


def _appended(text: str, entries: list[dict[str, Any]], comments: list[str]) -> str | None:
    if _ANY_KEY.search(text) and not _LIST_KEY.search(text):
        return None  # written in flow style (`[]`): no text to append to
    if not _LIST_KEY.search(text):
        prefix, indent = text.rstrip("\n") + ("\n" if text.strip() else "") + "consistency_groups:\n", "  "
    else:
        after = text[_LIST_KEY.search(text).end():]  # type: ignore[union-attr]
        item = _ITEM.search(after)
        indent = item.group(1) if item else "  "
        prefix = text.rstrip("\n") + "\n"
    blocks = []
    for entry, comment in zip(entries, comments, strict=True):
        lines = [f"{indent}# {comment}"] if comment else []
        keys = [key for key in ENTRY_KEYS if key in entry]
        lines.append(f"{indent}- {keys[0]}: {entry[keys[0]]}")
        lines += [f"{indent}  {key}: {entry[key]}" for key in keys[1:]]
        for key in BLOCK_KEYS:
            if key in entry:  # names and descriptions are any text: quoted by the YAML dumper
                dumped = yaml.safe_dump({key: entry[key]}, sort_keys=False, default_flow_style=False,
                                        allow_unicode=True, width=1000)
                lines += [f"{indent}  {line}" for line in dumped.splitlines()]
        blocks.append("\n".join(lines))
    return prefix + "\n".join(blocks) + "\n"


def write_with_backup(path: Path, text: str) -> Path | None:
    """Validate `text` as a mapping file, back the live file up next to it, then replace it atomically.
    Returns the backup's path (None when there was no file)."""
    check_consistency_groups(path, yaml.safe_load(text))
    backup = None
    if path.exists():
        backup = path.with_name(f"{path.name}.{time.strftime('%Y%m%dT%H%M%S')}.bak")
        shutil.copy2(path, backup)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(text)
        if path.exists():
            shutil.copymode(path, temporary)
        os.replace(temporary, path)
    except OSError as err:
        Path(temporary).unlink(missing_ok=True)
        raise ConfigError(f"{path}: cannot write the mapping file: {err.strerror or err}") from None
    return backup


def entry_comment(discovered: Any) -> str:
    """The comment above a discovered entry: what matched, so a reviewer can check it."""
    pg_name = f" {discovered.protection_group_name!r}" if discovered.protection_group_name else ""
    legacy_name = f" {discovered.rcg_name!r}" if discovered.rcg_name else ""
    return (f"discovered {time.strftime('%Y-%m-%d')}: legacy{legacy_name} and SDRS{pg_name} share "
            f"{len(discovered.volumes)} production volume(s)")
