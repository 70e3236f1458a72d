"""Small helpers every layer shares: JSON-safe values, one "is this a finite number" rule (:func:`finite`), one
"did you mean" for unknown names, one way to quote a value in a message (:func:`show`), and one converter of a config
model's validation error into the project's message (:func:`config_error`, :class:`Bad`).

Depends on nothing but the standard library: numpy scalars are recognised through the :mod:`numbers` classes numpy
registers with, pydantic models by duck typing.
"""

from __future__ import annotations

import difflib
import math
import numbers
import types
import typing
from typing import Any, Iterable, Mapping


def jsonable(x: Any) -> Any:
    """A value JSON can store, recursively: numpy scalars -> Python, tuples -> lists, keys -> str, NaN -> None,
    +-inf -> ``"inf"`` / ``"-inf"`` (strict JSON has neither; an infinite HD95 must stay distinguishable from a
    missing one)."""
    if isinstance(x, Mapping):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if hasattr(x, "item") and callable(x.item) and getattr(x, "ndim", 1) == 0:
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None if math.isnan(x) else ("inf" if x > 0 else "-inf")
    return x


def did_you_mean(name: Any, known: Iterable[str], n: int = 1) -> str:
    """``" (did you mean 'x'?)"`` for the closest known names, or ``""``; append it to an "unknown ..." message."""
    known = [str(k) for k in known]
    text = str(name)
    close = difflib.get_close_matches(text, known, n=n, cutoff=0.6)
    if not close and text:  # abbreviations ('mit' for 'mit_b0'): fall back to a shared prefix
        close = [k for k in known if k.startswith(text[:3])][:n]
    if not close:
        return ""
    return " (did you mean " + " or ".join(repr(c) for c in close) + "?)"


class Must(str):
    """Field metadata: what a valid value is, for the message (``Annotated[int, Field(ge=1), Must("...")]``);
    without it :func:`config_error` words it from the type and the bounds."""


class Bad(ValueError):
    """An error a config model's validator raises: the message is ``<key path><text>``, the path being the validated
    field's plus ``key`` (a sub-path, dotted); ``kind`` is what the user gets (``FileNotFoundError`` for a folder)."""

    def __init__(self, text: str, key: str = "", kind: type[Exception] = ValueError):
        super().__init__(text)
        self.text, self.key, self.kind = text, key, kind


def config_error(errors: list[dict], model: type, where: str = "", dotted: bool = False) -> Exception:
    """The first of a pydantic ``ValidationError.errors()`` of ``model`` as the exception to raise: a message that
    starts with the key path (``where`` joined with the keys by '.', list items as ``[i]``) and says the fix.

    ``dotted``: unknown keys are named by their full dotted path, and so are the suggestions (the trial config,
    whose keys ``--set`` takes dotted); otherwise ``"<path>: unknown key 'x' (did you mean 'y'?); valid keys: ..."``.
    """
    err = errors[0]
    kind, ctx, value = err["type"], err.get("ctx") or {}, err.get("input")
    parts, info, models, tag = _walk(model, err["loc"])
    path = _join(where, parts)
    if kind == "extra_forbidden":
        known = list(models[0].model_fields) if models else []
        if dotted:
            full, base = _join(where, parts), _join(where, parts[:-1])
            hint = did_you_mean(full, [f"{base}.{k}" if base else k for k in known])
            return ValueError(f"unknown config key {full!r}{hint}; valid keys here: {', '.join(known)}")
        return ValueError(f"{_join(where, parts[:-1]) or 'config'}: unknown key {show(parts[-1])}"
                          f"{did_you_mean(parts[-1], known)}; valid keys: {', '.join(known)}")
    if kind == "missing":
        if tag is not None:
            return ValueError(f"{_join(where, parts[:-1])}: a {tag!r} {parts[-2]} needs {parts[-1]!r}")
        return ValueError(f"{path} is required")
    if kind == "union_tag_invalid":
        return ValueError(f"{path}.{ctx['discriminator'].strip(chr(39))}: unknown {parts[-1]} {ctx['tag']!r}; "
                          f"choose one of {', '.join(_tag(m) for m in models)}")
    if kind == "union_tag_not_found":
        return ValueError(f"{path} must be a mapping with a {ctx['discriminator']} "
                          f"({', '.join(_tag(m) for m in models)}), got {show(value)}")
    if kind in ("value_error", "assertion_error"):
        exc = ctx.get("error")
        if isinstance(exc, Bad):
            return exc.kind(f"{_join(path, [exc.key] if exc.key else [])}{exc.text}")
        if str(exc):
            return ValueError(f"{path or 'config'}: {exc}")
    return ValueError(f"{path or 'config'} must be {_expect(info, models)}, got {show(value)}")


def _walk(model: type, loc) -> tuple[list, Any, list, Any]:
    """The key path of an error location (without union tags), the field's info, the models a value there may be
    (a section's), and the tag of a tagged union on the way."""
    models, info, parts, tag = [model], None, [], None
    for part in loc:
        fields = [m.model_fields for m in models if part in m.model_fields]
        if fields:
            info = fields[0][part]
            models = _models(info.annotation)
        elif isinstance(part, str) and len(models) > 1 and any(_tag(m) == part for m in models):
            models, tag = [m for m in models if _tag(m) == part], part
            continue
        elif info is not None and not models:  # past a leaf: union member labels, not keys
            break
        else:
            info = None
        parts.append(part)
    return parts, info, models, tag


def _models(tp: Any) -> list:
    if isinstance(tp, type) and hasattr(tp, "model_fields"):
        return [tp]
    return [m for arg in typing.get_args(tp) for m in _models(arg)]


def _tag(model: type) -> Any:
    field = model.model_fields.get("kind")
    return None if field is None else field.default


def _join(where: str, parts: list) -> str:
    text = where
    for p in parts:
        text += f"[{p}]" if isinstance(p, int) else (f".{p}" if text else str(p))
    return text


def show(value: Any, limit: int = 80) -> str:
    """``repr(value)`` for an error message, cut to ``limit`` characters (a long value ends in ``" ...]"``)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 5] + " ...]"


def _members(tp: Any) -> tuple[list, list]:
    """The members of a (union) annotation, ``Annotated`` unwrapped, and the metadata found on the way."""
    if typing.get_origin(tp) is typing.Annotated:
        base, *meta = typing.get_args(tp)
        members, more = _members(base)
        return members, [x for m in meta for x in [m, *(getattr(m, "metadata", None) or [])]] + more
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        found = [_members(a) for a in typing.get_args(tp)]
        return [m for f in found for m in f[0]], [x for f in found for x in f[1]]
    return [tp], []


def _expect(info: Any, models: list) -> str:
    """What a valid value is, in words: the field's :class:`Must`, or from its type and bounds."""
    members, meta = _members(getattr(info, "annotation", None))
    meta = list(getattr(info, "metadata", None) or []) + meta
    must = [m for m in meta if isinstance(m, Must)]
    if must:
        return must[0]
    if models:
        return f"a mapping ({', '.join(models[0].model_fields)})"
    null = " or null" if type(None) in members else ""
    bound = {k: getattr(m, k) for m in meta for k in ("ge", "gt", "le", "lt") if getattr(m, k, None) is not None}
    if int in members:
        low = bound.get("ge", bound.get("gt", -1) + 1 if "gt" in bound else None)
        if "le" in bound:
            return f"an integer >= {low} (at most {bound['le']}){null}"
        return {1: "a positive integer", 0: "a non-negative integer"}.get(low, "an integer") + null
    if float in members:
        if "gt" in bound and "lt" in bound:
            return f"a number in ({bound['gt']}, {bound['lt']}){null}"
        if "ge" in bound and "le" in bound:
            return f"a number in [{bound['ge']}, {bound['le']}]{null}"
        return {("gt", 0): "a positive number", ("ge", 0): "a non-negative number"}.get(
            next(iter(bound.items()), None), "a number") + null
    origins = {typing.get_origin(m) or m for m in members}
    words = {bool: "true or false", str: "a string", dict: "a mapping", list: "a list"}
    return next((words[t] for t in words if t in origins), "a valid value") + null


def finite(x: Any) -> bool:
    """Whether ``x`` is a finite real number: an ``int`` or ``float``, or a numpy integer or floating scalar (any
    :class:`numbers.Real`), that is neither NaN nor +-inf. ``None``, bools (``True`` is no score), strings, arrays
    and containers are not. The one rule for a trial's reported scores and times, the Parquet rows and the report's
    cells.
    """
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x)


def finite_or_none(x: Any) -> float | None:
    """``float(x)`` when :func:`finite` holds, else ``None`` (a missing value, as the Parquet tables store it)."""
    return float(x) if finite(x) else None


__all__ = ["Bad", "Must", "config_error", "did_you_mean", "finite", "finite_or_none", "jsonable", "show"]
