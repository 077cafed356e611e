"""The HTML status report (parsed, every section present with real content)."""

from __future__ import annotations

import shutil
from datetime import datetime
from html.parser import HTMLParser
from pathlib import Path

from orchestrator.history import RunRecord
from tests.orchestrator.conftest import Project


class Sections(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: list[str] = []
        self.text: list[str] = []
        self.svg = 0
        self.tags: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        if tag == "section":
            self.ids.append(dict(attrs).get("id") or "")
        if tag == "rect":
            self.svg += 1

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_report_renders_runs_freshness_layers_and_audits(project: Project, small_jaffle: Path, tmp_path: Path) -> None:
    shutil.copytree(small_jaffle, project.root / "data" / "jaffle-data")
    env = {"ELT_JOBS": "jaffle_shop,transform,bad"}
    tick = project.elt("tick", "--now", "2026-11-25T00:05", timeout=600, **env)
    assert "transform: succeeded" in tick.stdout, tick.stdout + tick.stderr
    out = tmp_path / "site" / "status.html"
    proc = project.elt("report", "--out", str(out), **env)
    assert proc.returncode == 0, proc.stderr
    page = Sections()
    page.feed(out.read_text())
    assert page.ids == ["runs", "freshness", "layers", "audits"]
    text = " ".join(page.text)
    assert page.svg >= 2  # bars of succeeded and failed attempts
    assert "jaffle_shop" in text and "failed" in text and "bad" in text
    assert "raw_jaffle_shop.orders" in text and "marts.orders" in text and "staging" in text
    assert "audits passed" in text


def test_report_escapes_markup_in_a_runs_error(project: Project, tmp_path: Path) -> None:
    error = '<script>alert("x")</script> & <b>bold</b>'
    project.history().insert(RunRecord(run_id="r-markup", attempt=1, job="bad", trigger="manual", status="failed",
                                       started_at=datetime(2026, 11, 24, 10), error=error))
    out = tmp_path / "status.html"
    proc = project.elt("report", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    page = Sections()
    page.feed(out.read_text())
    assert "script" not in page.tags and "b" not in page.tags, page.tags  # text, not markup
    assert error in "".join(page.text)  # shown as it was recorded
    assert "&lt;script&gt;" in out.read_text()
