"""Turn pydantic validation errors into one line an operator can act on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError


class ConfigError(Exception):
    """A configuration or mapping file is unusable; the message is one line naming file, entry and field."""


def error_location(loc: tuple[int | str, ...]) -> str:
    """`('consistency_groups', 2, 'project_id')` -> `consistency_groups[2].project_id`."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text or "(top level)"


def describe_validation_error(source: str, err: ValidationError) -> str:
    """One line: `<source>: <key>: <problem>; <key>: <problem>`."""
    problems = []
    for item in err.errors(include_url=False):
        where = error_location(tuple(item["loc"]))
        message = item["msg"]
        if item["type"] in ("missing", "extra_forbidden"):
            message = "required key is missing" if item["type"] == "missing" else "unknown key"
        elif "input" in item and not isinstance(item["input"], (dict, list)):
            message = f"{message} (got {item['input']!r})"
        problems.append(f"{where}: {message}")
    return f"{source}: " + "; ".join(problems)


def read_yaml(path: Path, what: str) -> Any:
    """Parse one YAML file; ConfigError names the file and where the syntax breaks."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"{path}: cannot read {what}: {err.strerror or err}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}: not valid YAML: {problem}{where}") from None
