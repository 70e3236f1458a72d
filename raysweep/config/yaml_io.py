"""Reading config files: YAML 1.2 scalars, duplicate keys refused, plain data only (what JSON can hold).

Shared by the sweep config, ``raysweep train`` and ``--set KEY=VALUE`` values.
"""

from __future__ import annotations

import io
import math
import re
from pathlib import Path
from typing import Any, Mapping

import yaml

from ..checks import show

__all__ = ["check_plain", "parse_yaml", "read_yaml_mapping"]

#: Limits of what a config file may expand to (YAML aliases can multiply a small file).
_MAX_NODES = 100_000
_MAX_DEPTH = 32


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2 booleans and duplicate keys refused."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True) if isinstance(key_node, yaml.ScalarNode) else None
                try:
                    if key is not None and key in seen:
                        raise yaml.constructor.ConstructorError(
                            "while constructing a mapping", node.start_mark,
                            f"found duplicate key {key!r} (first at line {seen[key].line + 1}); each key may appear "
                            "once per mapping", key_node.start_mark)
                    if key is not None:
                        seen[key] = key_node.start_mark
                except TypeError:  # unhashable: the base class reports it
                    pass
        return super().construct_mapping(node, deep=deep)


# YAML 1.2 core-schema booleans and floats instead of PyYAML's YAML 1.1 ones: `off`, `no`, `yes`, `on` stay strings,
# and `1e-3` is a float (PyYAML reads it as a string).
_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in ("tag:yaml.org,2002:bool", "tag:yaml.org,2002:float")]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                              list("tTfF"))
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?
                    |[-+]?\.(?:inf|Inf|INF)
                    |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))


def parse_yaml(text: str, source: str = "<string>"):
    """Parse YAML text the way config files are read: YAML 1.2 booleans and floats (``off`` is a string, ``1e-3`` a
    float), a key given twice in one mapping refused. Also for ``--set KEY=VALUE`` values.

    Raises ValueError naming ``source`` and the line for invalid YAML.
    """
    def named():
        stream = io.StringIO(text)
        stream.name = source  # PyYAML names it in its messages
        return stream

    try:
        # The events first (PyYAML's parser is iterative, its composer recursive): a document nested too deeply is
        # refused here, at once, instead of by a RecursionError that takes seconds to unwind.
        depth = 0
        for event in yaml.parse(named(), Loader=_Loader):
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > _MAX_DEPTH:
                    raise ValueError(f"{source}: the YAML is nested too deeply (more than {_MAX_DEPTH} levels at line "
                                     f"{event.start_mark.line + 1})")
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
        return yaml.load(named(), Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except yaml.YAMLError as exc:
        raise ValueError(f"{source} is not valid YAML: {exc}") from None
    except RecursionError:
        raise ValueError(f"{source}: the YAML is nested too deeply") from None


def read_yaml_mapping(path: str | Path, what: str = "config") -> dict:
    """Read a YAML file that must hold a mapping; ``FileNotFoundError`` / ``ValueError`` name the file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what} {path} not found")
    if not path.is_file():
        raise ValueError(f"{what} {path} is not a file; pass the path of a YAML file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"{what} {path} cannot be read: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path} is not a UTF-8 text file (undecodable byte at offset {exc.start}); a {what} is "
                         "YAML text") from None
    raw = parse_yaml(text, str(path))
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ValueError(f"{path}: a {what} is a mapping of keys, got {type(raw).__name__}")
    check_plain(raw, str(path))
    return dict(raw)


def check_plain(value: Any, where: str) -> None:
    """Refuse what JSON cannot hold faithfully (and what no config key takes): non-string keys, NaN/inf, dates,
    bytes, sets; and structures nested or expanded (YAML aliases) past sane limits. Iterative: no recursion."""
    todo = [(value, where, 0)]
    seen = 0
    while todo:
        v, path, depth = todo.pop()
        seen += 1
        if seen > _MAX_NODES or depth > _MAX_DEPTH:
            raise ValueError(f"{where}: the config is too large or nested too deeply (more than {_MAX_NODES} values "
                             f"or {_MAX_DEPTH} levels, e.g. at {path}); YAML aliases may have multiplied it")
        if isinstance(v, Mapping):
            for key, item in v.items():
                if not isinstance(key, str):
                    raise ValueError(f"{path}: key {show(key)} is a {type(key).__name__}; config keys are strings "
                                     "(quote it)")
                todo.append((item, f"{path}.{key}", depth + 1))
        elif isinstance(v, (list, tuple)):
            todo.extend((item, f"{path}[{i}]", depth + 1) for i, item in enumerate(v))
        elif isinstance(v, float):
            if not math.isfinite(v):
                raise ValueError(f"{path}: {v} is not allowed; use a finite number")
        elif v is not None and not isinstance(v, (str, int, bool)):
            raise ValueError(f"{path}: {show(v)} is a {type(v).__name__}; config values are strings, numbers, "
                             "booleans, null, lists or mappings (quote it to make it a string)")


