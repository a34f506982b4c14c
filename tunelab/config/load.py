"""Load a run config: YAML file + `section.key=value` overrides → a validated `RunConfig`.

    cfg = load("configs/lora.yaml", ["train.learning_rate=1e-4", "method.r=8"])

Every problem is collected and raised at once as a `ConfigError` that names the file, the line, the
key and the fix (the nearest valid key for a typo).
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from tunelab.config.methods import METHOD_MODELS, LoraMethod
from tunelab.config.schema import RunConfig
from tunelab.errors import ConfigError


def load(path: str | Path | None, overrides: list[str] | None = None) -> RunConfig:
    """Read YAML (or start empty), apply overrides, validate. Raises ConfigError listing every problem."""
    raw, lines = _read_yaml(Path(path)) if path else ({}, {})
    for item in overrides or []:
        _apply_override(raw, item)
    return validate(raw, source=str(path) if path else "<overrides>", lines=lines)


def validate(raw: dict[str, Any], source: str = "<config>", lines: dict[tuple, int] | None = None) -> RunConfig:
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as exc:
        problems = [_describe(err, raw, source, lines or {}) for err in exc.errors()]
        problems.sort(key=_line_of)
        raise ConfigError(f"{source}: {len(problems)} problem(s) in the config", problems) from None


def dump(cfg: RunConfig) -> str:
    """The resolved config as YAML, every default written out (for the run directory)."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


def _read_yaml(path: Path) -> tuple[dict[str, Any], dict[tuple, int]]:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}", [f"{path}: no such file; check the path"])
    text = path.read_text()
    try:
        raw = yaml.safe_load(text) or {}
        node = yaml.compose(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"{where}: not valid YAML", [f"{where}: {getattr(exc, 'problem', exc)}"]) from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: not a mapping", [f"{path}:1: the config must be a mapping of sections"])
    return raw, _key_lines(node)


def _key_lines(node: yaml.Node | None, prefix: tuple = ()) -> dict[tuple, int]:
    """Map each key path, e.g. ('train', 'learning_rate'), to its 1-based line in the YAML file."""
    found: dict[tuple, int] = {}
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            path = (*prefix, key_node.value)
            found[path] = key_node.start_mark.line + 1
            found.update(_key_lines(value_node, path))
    return found


def _apply_override(raw: dict[str, Any], item: str) -> None:
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"bad override {item!r}", [f"override {item!r}: write it as section.key=value"])
    *parents, leaf = key.strip().split(".")
    target = raw
    for part in parents:
        if not isinstance(target.get(part), dict):
            # `model=foo` then `model.dtype=x`: keep the shorthand's value under its `name`.
            target[part] = {"name": target[part]} if isinstance(target.get(part), str) else {}
        target = target[part]
    try:
        target[leaf] = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError as exc:
        reason = str(exc).splitlines()[0]
        raise ConfigError(
            f"bad override {item!r}: the value is not valid YAML ({reason})",
            [f"override {item!r}: quote it as one shell argument, e.g. 'method={{name: full}}'"],
        ) from None


def _describe(err: dict[str, Any], raw: dict[str, Any], source: str, lines: dict[tuple, int]) -> str:
    loc = tuple(str(p) for p in err["loc"])
    key_path = _user_key_path(loc, raw)
    line = _nearest_line(key_path, lines)
    where = f"{source}:{line}" if line else source
    dotted = ".".join(key_path) or "(top level)"
    if err["type"] == "extra_forbidden":
        return f"{where}: unknown key `{dotted}`{_suggestion(key_path, raw)}"
    if err["type"] == "missing":
        return f"{where}: `{dotted}` is required; add it to the config (or pass {dotted}=...)"
    if err["type"] == "union_tag_invalid":
        return f"{where}: `{dotted}.name`: unknown method; choose one of {', '.join(METHOD_MODELS)}"
    got = _lookup(raw, key_path)
    got_text = f" (got {got!r})" if got is not None else ""
    return f"{where}: `{dotted}`: {err['msg']}{got_text}"


def _line_of(problem: str) -> int:
    head = problem.split(": ", 1)[0]
    return int(head.rsplit(":", 1)[1]) if head.rsplit(":", 1)[-1].isdigit() else 0


def _user_key_path(loc: tuple[str, ...], raw: dict[str, Any]) -> tuple[str, ...]:
    # Pydantic puts the union tag into the location (`method.lora.r`); users wrote `method.r`.
    if len(loc) >= 2 and loc[0] == "method" and loc[1] in METHOD_MODELS:
        return ("method", *loc[2:])
    return loc


def _suggestion(key_path: tuple[str, ...], raw: dict[str, Any]) -> str:
    valid = _valid_keys(key_path[:-1], raw)
    close = difflib.get_close_matches(key_path[-1], valid, n=1, cutoff=0.6)
    if close:
        return f"; did you mean `{'.'.join((*key_path[:-1], close[0]))}`?"
    if key_path[:1] == ("method",):
        method = _lookup(raw, ("method", "name"))
        for other, model in METHOD_MODELS.items():
            if other != method and key_path[-1] in model.model_fields:
                return f"; `{key_path[-1]}` is an option of method `{other}`, not `{method}`"
    return f"; valid keys here: {', '.join(sorted(valid))}" if valid else ""


def _valid_keys(section: tuple[str, ...], raw: dict[str, Any]) -> list[str]:
    model: type[BaseModel] = RunConfig
    for part in section:
        if part == "method":
            model = METHOD_MODELS.get(str(_lookup(raw, ("method", "name"))), LoraMethod)
            continue
        field = model.model_fields.get(part)
        annotation = getattr(field, "annotation", None)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)


def _lookup(raw: Any, key_path: tuple[str, ...]) -> Any:
    for part in key_path:
        if not isinstance(raw, dict) or part not in raw:
            return None
        raw = raw[part]
    return raw


def _nearest_line(key_path: tuple[str, ...], lines: dict[tuple, int]) -> int | None:
    for n in range(len(key_path), 0, -1):
        if key_path[:n] in lines:
            return lines[key_path[:n]]
    return None
