"""Table cells and tables for the report's template: display text plus a sort key and a CSS class."""

from __future__ import annotations

from typing import Any

from ..checks import finite

__all__ = ["cell", "duration", "loss_cell", "num", "pvalue", "table"]


def cell(text: Any, v: Any = None, cls: str = "", title: str = "") -> dict[str, Any]:
    """A table cell: displayed ``text``, sort value ``v`` (numbers sort numerically, blanks last)."""
    return {"text": "" if text is None else str(text), "v": "" if v is None else v, "cls": cls, "title": title}


def num(v: Any, fmt: str = "{:.3f}", cls: str = "") -> dict[str, Any]:
    if not finite(v):
        return cell("–", None, "na " + cls)
    return cell(fmt.format(float(v)), repr(float(v)), "num " + cls)


def pvalue(p: Any) -> str:
    if not finite(p):
        return "–"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def duration(seconds: Any) -> str:
    if not finite(seconds):
        return "–"
    s = int(round(float(seconds)))
    return f"{s // 3600} h {s % 3600 // 60:02d} min" if s >= 3600 else f"{s // 60} min {s % 60:02d} s"


def table(columns: list[tuple[str, str]], rows: list[list[dict]], row_classes: list[str] | None = None
           ) -> dict[str, Any]:
    """``columns``: (label, tooltip); ``rows``: lists of :func:`_cell` dicts."""
    return {"columns": [{"label": c, "title": t} for c, t in columns], "rows": rows,
            "row_classes": row_classes or [""] * len(rows)}


def loss_cell(title: str, loss: str, in_survey: bool = True) -> dict[str, Any]:
    text = title if title == loss else f"{title} ({loss})"
    return cell(text + ("" if in_survey else " [baseline]"), title.lower())


# -- sections ----------------------------------------------------------------------------------------------------
