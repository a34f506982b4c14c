"""Load a run config: YAML file + `section.key=value` overrides → a validated `RunConfig`.

    cfg = load("configs/lora.yaml", ["train.learning_rate=1e-4", "method.r=8"])

Every problem is collected and raised at once as a `ConfigError` that names the file, the line (or the override
that set the key), the key and the fix (the nearest valid key for a typo).
"""

from __future__ import annotations

import difflib
import errno
import os
import stat
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from tunelab.config.methods import METHOD_MODELS, LoraMethod
from tunelab.config.objectives import OBJECTIVE_MODELS, REWARD_CLASSES, SftObjective
from tunelab.config.schema import RunConfig
from tunelab.errors import ConfigError

REWARD_NAMES = {cls.model_fields["name"].annotation.__args__[0] for cls in REWARD_CLASSES}
# The sections that are a discriminated union on `name`: their classes by name, and the default class.
UNIONS: dict[str, tuple[dict[str, type[BaseModel]], type[BaseModel]]] = {
    "method": (METHOD_MODELS, LoraMethod),
    "objective": (OBJECTIVE_MODELS, SftObjective),
}

# "Billion laughs": a few hundred bytes of nested aliases (`b: &b [*a, *a, ...]`, `c: &c [*b, *b, ...]`) expand to
# 10^9 values. PyYAML shares aliased objects, so reading is cheap, but validation, the key-line walk and `dump`
# visit every expanded value. Real configs hold a few hundred; this cap costs one integer per node to enforce.
MAX_EXPANDED_NODES = 100_000
MERGE_TAG = "tag:yaml.org,2002:merge"


def load(path: str | Path | None, overrides: list[str] | None = None) -> RunConfig:
    """Read YAML (or start empty), apply overrides, validate. Raises ConfigError listing every problem."""
    raw, lines = _read_yaml(Path(path)) if path else ({}, {})
    origins: dict[tuple, str] = {}  # key path -> the override that last set it
    for item in overrides or []:
        _record_origin(origins, _apply_override(raw, item), item)
    source = str(path) if path else "<overrides>"
    cfg = validate(raw, source=source, lines=lines, origins=origins)
    if path:
        where = _where(("train", "output_dir"), source, lines, origins)
        _check_output_dir(cfg, Path(path), _lookup(raw, ("train", "output_dir")), where)
    return cfg


def validate(
    raw: dict[str, Any],
    source: str = "<config>",
    lines: dict[tuple, int] | None = None,
    origins: dict[tuple, str] | None = None,
) -> RunConfig:
    """Validate a raw mapping; `lines` (key path -> line) and `origins` (key path -> override) place each problem."""
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as exc:
        problems = [_describe(err, raw, source, lines or {}, origins or {}) for err in exc.errors()]
        problems.sort(key=lambda p: (p.startswith("override "), _line_of(p)))  # file problems by line, then overrides
        raise ConfigError(f"{source}: {len(problems)} problem(s) in the config", problems) from None


def dump(cfg: RunConfig) -> str:
    """The resolved config as YAML, every default written out (for the run directory)."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


def _read_yaml(path: Path) -> tuple[dict[str, Any], dict[tuple, int]]:
    text = _read_text(path)
    loader = None
    try:
        loader = _CheckedLoader(text)  # refuses control characters here, before parsing
        node = loader.get_single_node()
        if loader.problems:
            problems = [f"{path}:{line}: {what}" for line, what in sorted(loader.problems)]
            raise ConfigError(f"{path}: {len(problems)} problem(s) in the config", problems)
        raw = (loader.construct_document(node) if node is not None else None) or {}
    except yaml.YAMLError as exc:
        line, problem = _yaml_problem(exc, text)
        where = f"{path}:{line}" if line else str(path)
        raise ConfigError(f"{where}: not valid YAML", [f"{where}: {problem}"]) from None
    except RecursionError:  # PyYAML composes nested blocks recursively: `[[[[...` thousands deep
        where = f"{path}:{loader.line + 1}" if loader else str(path)
        raise ConfigError(f"{where}: nested too deeply", [f"{where}: nested too deeply to read; flatten it"]) from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: not a mapping", [f"{path}:1: the config must be a mapping of sections"])
    return raw, _key_lines(node)


def _read_text(path: Path) -> str:
    """The file's text, or a ConfigError that says why it cannot be read (missing, a folder, a link loop, ...)."""
    try:
        if stat.S_ISDIR(path.stat().st_mode):
            raise ConfigError(
                f"{path}: is a directory", [f"{path}: is a directory; give the YAML file (e.g. configs/lora.yaml)"]
            )
        data = path.read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        raise ConfigError(f"config file not found: {path}", [f"{path}: no such file; check the path"]) from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ConfigError(
                f"{path}: is a symlink loop", [f"{path}: is a symlink loop; point the link at the YAML file"]
            ) from None
        raise ConfigError(
            f"{path}: cannot be read", [f"{path}: cannot be read ({exc.strerror}); check its permissions"]
        ) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        where = f"{path}:{line}"
        fix = f"{where}: not UTF-8 text (byte 0x{data[exc.start]:02x}); save it as UTF-8"
        raise ConfigError(f"{where}: not UTF-8 text", [fix]) from None


def _yaml_problem(exc: yaml.YAMLError, text: str) -> tuple[int | None, str]:
    """(1-based line or None, one-line reason) for a PyYAML error."""
    if isinstance(exc, yaml.reader.ReaderError):  # a control character: it has a position, not a mark
        return text.count("\n", 0, exc.position) + 1, f"unacceptable character #x{exc.character:04x}: {exc.reason}"
    mark = getattr(exc, "problem_mark", None)
    return (mark.line + 1 if mark else None), str(getattr(exc, "problem", None) or exc).splitlines()[0]


class _CheckedLoader(yaml.SafeLoader):
    """PyYAML's safe loader, plus what it lets through: a duplicate key (it keeps the last and drops the first in
    silence), an alias inside the node it names (`a: &x [*x]`: endless recursion later) and alias expansion past
    MAX_EXPANDED_NODES. Problems are collected as (line, text) so all are reported at once."""

    def __init__(self, text: str):
        super().__init__(text)
        self.problems: list[tuple[int, str]] = []
        self._path: list[str] = []  # key path of the node being composed, for messages
        self._open: set[str] = set()  # anchors whose node is still being composed
        self._sizes: dict[int, int] = {}  # id(node) -> nodes it stands for once aliases are expanded
        self._too_big = False

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) and event.anchor in self._open:
            self.get_event()
            loop = f"alias `*{event.anchor}` is inside the node it names, so it never ends; write the values out"
            self.problems.append((event.start_mark.line + 1, loop))
            node: yaml.Node = yaml.ScalarNode("tag:yaml.org,2002:null", "", event.start_mark, event.end_mark)
        else:
            node = self._compose_tracked(parent, index, None if isinstance(event, yaml.AliasEvent) else event.anchor)
        self._count(node)
        return node

    def _compose_tracked(self, parent: yaml.Node | None, index: Any, anchor: str | None) -> yaml.Node:
        step = index.value if isinstance(index, yaml.ScalarNode) else str(index) if isinstance(index, int) else None
        if step is not None:
            self._path.append(step)
        if anchor is not None:
            self._open.add(anchor)
        try:
            return super().compose_node(parent, index)
        finally:
            self._open.discard(anchor)
            if step is not None:
                self._path.pop()

    def compose_mapping_node(self, anchor: str | None) -> yaml.MappingNode:
        node = super().compose_mapping_node(anchor)
        first: dict[tuple[str, str], yaml.Node] = {}
        for key_node, _ in node.value:
            # `<<` merge keys may repeat, and keys they bring in may be overridden: both are how merges work.
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == MERGE_TAG:
                continue
            seen = first.setdefault((key_node.tag, key_node.value), key_node)
            if seen is not key_node:
                dotted = ".".join((*self._path, key_node.value))
                twice = f"duplicate key `{dotted}` (first at line {seen.start_mark.line + 1}); merge the two into one"
                self.problems.append((key_node.start_mark.line + 1, twice))
        return node

    def _count(self, node: yaml.Node) -> None:
        if id(node) in self._sizes:  # an alias: counted where its anchor was
            return
        children = node.value if isinstance(node, yaml.SequenceNode) else []
        if isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        size = 1 + sum(self._sizes.get(id(child), 1) for child in children)
        self._sizes[id(node)] = size
        if size > MAX_EXPANDED_NODES and not self._too_big:  # report the first (innermost) node past the cap
            too_big = f"aliases here expand to over {MAX_EXPANDED_NODES:,} values; write the config out without them"
            self.problems.append((node.start_mark.line + 1, too_big))
            self._too_big = True


def _key_lines(root: yaml.Node | None) -> dict[tuple, int]:
    """Map each key path, e.g. ('train', 'learning_rate'), to its 1-based line in the YAML file.

    Walks the node graph after construction (merge keys already flattened in), with a stack rather than recursion:
    the loader has refused alias loops and expansion past MAX_EXPANDED_NODES, so the walk ends and is small."""
    found: dict[tuple, int] = {}
    stack: list[tuple[yaml.Node | None, tuple]] = [(root, ())]
    while stack:
        node, prefix = stack.pop()
        if not isinstance(node, yaml.MappingNode):
            continue
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                path = (*prefix, key_node.value)
                found[path] = key_node.start_mark.line + 1  # later keys win, as in the constructed mapping
                stack.append((value_node, path))
    return found


def _apply_override(raw: dict[str, Any], item: str) -> tuple[str, ...]:
    """Set one `section.key=value` in `raw`; returns the key path it set."""
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
    return (*parents, leaf)


def _record_origin(origins: dict[tuple, str], key_path: tuple[str, ...], item: str) -> None:
    # `train={...}` replaces every key an earlier `train.x=...` set, so those no longer come from that override.
    for earlier in [k for k in origins if k[: len(key_path)] == key_path]:
        del origins[earlier]
    origins[key_path] = item


def _where(key_path: tuple[str, ...], source: str, lines: dict[tuple, int], origins: dict[tuple, str]) -> str:
    """Where a key was set: the override that last set it (or a section above it), else its file line."""
    for n in range(len(key_path), 0, -1):
        if key_path[:n] in origins:
            return f"override {origins[key_path[:n]]}"
    line = _nearest_line(key_path, lines)
    return f"{source}:{line}" if line else source


def _check_output_dir(cfg: RunConfig, path: Path, written: Any, where: str) -> None:
    """Refuse an output_dir that is the config's folder or one above it: `train.overwrite_output_dir` empties the
    run dir, and a project's source folder was lost that way. Relative paths resolve against the current
    directory, as training does; realpath, so a link to the project folder is caught too (and loops never raise)."""
    out = Path(os.path.realpath(Path.cwd() / cfg.train.output_dir))
    config_file = Path(os.path.realpath(path))
    folders = {Path(os.path.realpath(path.absolute().parent)), config_file.parent}
    if not any(out == folder or out in folder.parents for folder in folders):
        return
    # A run's own saved config (runs/x/config.yaml beside the versions.json that artifacts.start writes) names its
    # own folder: `tunelab train runs/x/config.yaml --resume` is how an interrupted run is resumed.
    if out / "config.yaml" == config_file and (out / "versions.json").is_file():
        return
    value = written if written is not None else cfg.train.output_dir
    fix = (
        f"{where}: train.output_dir={value} is the folder that holds this config (or one above it); "
        "a run needs a folder of its own, e.g. train.output_dir=runs/NAME"
    )
    raise ConfigError(f"{where}: train.output_dir would hold the config", [fix])


def _describe(
    err: dict[str, Any], raw: dict[str, Any], source: str, lines: dict[tuple, int], origins: dict[tuple, str]
) -> str:
    loc = tuple(str(p) for p in err["loc"])
    key_path = _user_key_path(loc, raw)
    # An unknown method is reported at `method`, but it is `method.name` that the file or an override set.
    set_at = (*key_path, "name") if err["type"] == "union_tag_invalid" else key_path
    where = _where(set_at, source, lines, origins)
    dotted = ".".join(key_path) or "(top level)"
    if err["type"] == "extra_forbidden":
        return f"{where}: unknown key `{dotted}`{_suggestion(key_path, raw)}"
    if err["type"] == "missing":
        return f"{where}: `{dotted}` is required; add it to the config (or pass {dotted}=...)"
    if err["type"] == "union_tag_invalid":
        kind = key_path[0] if key_path[:1] == ("objective",) else "method"
        return f"{where}: `{dotted}.name`: unknown {kind}; choose one of {', '.join(UNIONS[kind][0])}"
    got = _lookup(raw, key_path)
    got_text = f" (got {got!r})" if got is not None else ""
    return f"{where}: `{dotted}`: {err['msg']}{got_text}"


def _line_of(problem: str) -> int:
    head = problem.split(": ", 1)[0]
    return int(head.rsplit(":", 1)[1]) if head.rsplit(":", 1)[-1].isdigit() else 0


def _user_key_path(loc: tuple[str, ...], raw: dict[str, Any]) -> tuple[str, ...]:
    # Pydantic puts the union tag into the location (`method.lora.r`); users wrote `method.r`.
    if len(loc) >= 2 and loc[0] in UNIONS and loc[1] in UNIONS[loc[0]][0]:
        loc = (loc[0], *loc[2:])
    # Likewise inside a list of a union (`objective.rewards.0.regex.pattern`): users wrote `rewards.0.pattern`.
    return tuple(p for i, p in enumerate(loc) if not (i and loc[i - 1].isdigit() and p in REWARD_NAMES))


def _suggestion(key_path: tuple[str, ...], raw: dict[str, Any]) -> str:
    valid = _valid_keys(key_path[:-1], raw)
    close = difflib.get_close_matches(key_path[-1], valid, n=1, cutoff=0.6)
    if close:
        return f"; did you mean `{'.'.join((*key_path[:-1], close[0]))}`?"
    if key_path[:1] and key_path[0] in UNIONS:
        kind = key_path[0]
        chosen = _lookup(raw, (kind, "name"))
        for other, model in UNIONS[kind][0].items():
            if other != chosen and key_path[-1] in model.model_fields:
                return f"; `{key_path[-1]}` is an option of {kind} `{other}`, not `{chosen}`"
    return f"; valid keys here: {', '.join(sorted(valid))}" if valid else ""


def _valid_keys(section: tuple[str, ...], raw: dict[str, Any]) -> list[str]:
    model: type[BaseModel] = RunConfig
    for part in section:
        if part in UNIONS:
            models, default = UNIONS[part]
            model = models.get(str(_lookup(raw, (part, "name"))), default)
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
