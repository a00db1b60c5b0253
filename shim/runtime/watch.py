"""File changes without SIGHUP: the config file and the mapping tables are watched, and a change is
reloaded as a SIGHUP would (README, Signals and lifecycle).

Polling, not inotify: a mounted Kubernetes ConfigMap changes by an atomic swap of the `..data`
symlink, which inotify on the file itself does not see, while `stat` (following symlinks) sees the
new file's inode, size and mtime. Every `WATCH_SECONDS`, one `stat` per file: nothing is read unless
something changed.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path

log = logging.getLogger("shim.reload")

WATCH_SECONDS = 1.0

Signature = tuple[tuple[int, int, int, int, str] | None, ...]


def signature(paths: Iterable[Path]) -> Signature:
    """What changes when a file is edited, replaced or swapped under a symlink (None: missing)."""
    found: list[tuple[int, int, int, int, str] | None] = []
    for path in paths:
        try:
            info = os.stat(path)
            found.append((info.st_dev, info.st_ino, info.st_mtime_ns, info.st_size, os.path.realpath(path)))
        except OSError:
            found.append(None)
    return tuple(found)


def watched_paths(config_path: Path, mappings_dir: Path | None) -> list[Path]:
    from shim.mappings import CONSISTENCY_GROUPS_FILE, SDRS_ERRORS_FILE, STATUSES_FILE

    tables = [] if mappings_dir is None else [mappings_dir / name for name in (
        CONSISTENCY_GROUPS_FILE, SDRS_ERRORS_FILE, STATUSES_FILE)]
    return [config_path, *tables]


async def watch_files(config_path: Path, changed: Callable[[], None],
                      mappings_dir: Callable[[], Path | None] = lambda: None) -> None:
    """Call `changed` (the SIGHUP handler: debounced, spaced) whenever a watched file changes."""
    seen = signature(watched_paths(config_path, mappings_dir()))
    while True:
        await asyncio.sleep(WATCH_SECONDS)
        now = signature(watched_paths(config_path, mappings_dir()))
        if now != seen:
            seen = now
            log.info("a config or mapping file changed: reloading")
            changed()
