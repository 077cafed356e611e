"""Every `<page>.md#<section>` that a message, a docstring or a page points at names a section
that exists: a message's `next:` that sends the on-call engineer to a missing section is a dead
end at 3 a.m. Anchors are made as GitHub makes them from headings."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINK = re.compile(r"((?:\.\./|\./)?[\w./-]*?\.md)#([\w-]+)")


def _anchors(page: Path) -> set[str]:
    found: set[str] = set()
    seen: dict[str, int] = {}
    for line in page.read_text(encoding="utf-8").splitlines():
        heading = re.match(r"^#+\s+(.*)", line)
        if heading:
            slug = re.sub(r"[^\w\- ]", "", heading.group(1).strip().lower()).replace(" ", "-")
            n = seen.get(slug, 0)
            seen[slug] = n + 1
            found.add(slug if n == 0 else f"{slug}-{n}")
    return found


def _files() -> list[Path]:
    skip = {".venv", ".git", "test-artifacts", "__pycache__", "node_modules"}
    return [p for p in ROOT.rglob("*") if p.suffix in (".py", ".md", ".sql", ".yaml") and p.is_file()
            and not skip & set(p.relative_to(ROOT).parts)]


def test_every_section_link_names_a_section_that_exists() -> None:
    broken, checked = [], 0
    for source in _files():
        for link in LINK.finditer(source.read_text(encoding="utf-8", errors="ignore")):
            path, anchor = link.group(1), link.group(2)
            target = next((c for c in (source.parent / path, ROOT / path, ROOT / "docs" / path) if c.is_file()), None)
            checked += 1
            if target is None or anchor not in _anchors(target):
                broken.append(f"{source.relative_to(ROOT)}: {path}#{anchor}")
    assert checked > 50, checked  # the pattern still finds the links
    assert not broken, "\n".join(broken)
