"""Turn pydantic validation errors into one line an operator can act on."""

from __future__ import annotations

from collections.abc import Callable
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


# Which source gave the value at a location, when it was not the file being validated (e.g. the
# environment variable that overrides it); None: the file.
Blame = Callable[[tuple[int | str, ...]], str | None]


def describe_validation_error(source: str, err: ValidationError, blame: Blame | None = None) -> str:
    """One line: `<source>: <key>: <problem>; <key>: <problem>`, each problem under the source that
    gave the value (`blame`), so an operator fixes the right place."""
    by_source: dict[str, list[str]] = {}
    for item in err.errors(include_url=False):
        loc = tuple(item["loc"])
        message = item["msg"]
        if item["type"] in ("missing", "extra_forbidden"):
            message = "required key is missing" if item["type"] == "missing" else "unknown key"
        elif "input" in item and not isinstance(item["input"], (dict, list)):
            message = f"{message} (got {item['input']!r})"
        culprit = (blame(loc) if blame is not None else None) or source
        by_source.setdefault(culprit, []).append(f"{error_location(loc)}: {message}")
    return "; ".join(f"{culprit}: " + "; ".join(problems) for culprit, problems in by_source.items())


class UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice in one mapping is an error: the YAML spec
    requires unique keys, and silently keeping the last one hides a typo'd or pasted-twice section."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first_lines: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *defaults` overrides on purpose
            key = self.construct_object(key_node, deep=True)
            try:
                first = first_lines.get(key)
            except TypeError:
                continue  # an unhashable key: the base class names that problem
            if first is not None:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first given at line {first + 1})", key_node.start_mark)
            first_lines[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep)


def read_yaml(path: Path, what: str) -> Any:
    """Parse one YAML file; ConfigError names the file and where the syntax breaks (or a key repeats)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"{path}: cannot read {what}: {err.strerror or err}") from None
    try:
        return yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}: not valid YAML: {problem}{where}") from None
