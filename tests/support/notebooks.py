"""Running a Databricks source-format notebook here, cell by cell (tests/jobs/test_notebooks.py
and the pipeline module, whose one pipeline run is the quickstart notebook's).

Every Python cell runs in one namespace holding the suite's Spark session and stand-ins
for what Databricks provides: `dbutils.widgets` (with the values a test sets), `display`
(collects the DataFrame) and `displayHTML` (records the HTML). Markdown and `%pip` cells
(`# MAGIC` lines) are skipped: the test environment has the packages.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HEADER = "# Databricks notebook source"
SEPARATOR = "# COMMAND ----------"


def cells(path: Path) -> list[str]:
    text = path.read_text()
    assert text.startswith(HEADER + "\n"), f"{path.name}: first line must be {HEADER!r}"
    body = text[len(HEADER) + 1:]
    return [c.strip("\n") for c in re.split(rf"^{re.escape(SEPARATOR)}$", body, flags=re.M)]


def is_magic(cell: str) -> bool:
    lines = [line for line in cell.splitlines() if line.strip()]
    return bool(lines) and lines[0].startswith("# MAGIC")


class Widgets:
    """dbutils.widgets: a widget's value is the test's override, else its default."""

    def __init__(self, values: dict[str, str]):
        self.values = dict(values)
        self.defined: dict[str, str] = {}

    def text(self, name: str, default: str, label: str | None = None) -> None:
        self.defined[name] = str(default)

    def dropdown(self, name: str, default: str, choices, label: str | None = None) -> None:
        choices = [str(c) for c in choices]
        assert str(default) in choices, f"widget {name}: default {default!r} not a choice"
        if name in self.values:
            assert self.values[name] in choices, f"widget {name}: {self.values[name]!r}"
        self.defined[name] = str(default)

    def get(self, name: str) -> str:
        if name not in self.defined:  # Databricks: InputWidgetNotDefined
            raise KeyError(f"no widget named {name!r} is defined")
        return self.values.get(name, self.defined[name])


@dataclass
class Ran:
    html: list[str] = field(default_factory=list)
    displayed: list[list] = field(default_factory=list)
    namespace: dict = field(default_factory=dict)
    widgets: Widgets | None = None


def run_notebook(name: str, spark, widgets: dict[str, str], monkeypatch) -> Ran:
    """Every Python cell of notebooks/`name`, in order, in the notebook's own folder
    (where Databricks runs it)."""
    ran = Ran(widgets=Widgets(widgets))

    def display(df) -> None:
        ran.displayed.append(df.collect())

    def display_html(html: str) -> None:
        assert isinstance(html, str)
        ran.html.append(html)

    dbutils = type("DBUtils", (), {"widgets": ran.widgets})()
    ran.namespace.update(__name__="__main__", spark=spark, dbutils=dbutils,
                         display=display, displayHTML=display_html)
    monkeypatch.chdir(ROOT / "notebooks")
    path = ROOT / "notebooks" / name
    for i, cell in enumerate(cells(path)):
        if cell.strip() and not is_magic(cell):
            exec(compile(cell, f"{path}[cell {i}]", "exec"), ran.namespace)  # noqa: S102
    unused = set(widgets) - set(ran.widgets.defined)
    assert not unused, f"{name} defines no widget {sorted(unused)}"
    return ran


def funnel_parts(html: str) -> dict[str, int]:
    """The funnel's own sum line: input = subset + rejects (+ pending)."""
    m = re.search(r"input = (\d+) = subset (\d+) \+ rejects (\d+)\s*(?:\+ pending (\d+))?",
                  html)
    assert m, "no funnel in the HTML"
    return {"input": int(m[1]), "kept": int(m[2]), "rejects": int(m[3]),
            "pending": int(m[4] or 0)}
