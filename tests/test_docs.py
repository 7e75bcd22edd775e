"""The README and docs/: short where a newcomer starts, every link lands, nothing points outside the
repository. (docs/cli.md is checked against the parsers in tests/pipelines/test_cli_parse.py.)"""

from __future__ import annotations

import re
from pathlib import Path
from typing import List, Set

import pytest

from tests.conftest import REPO

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def anchors(page: Path) -> Set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to dashes."""
    found = set()
    in_code = False
    for line in page.read_text().splitlines():
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            found.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return found


def broken_links(page: Path, root: Path = REPO) -> List[str]:
    problems = []
    for target in LINK.findall(page.read_text()):
        if re.match(r"[a-z]+://", target) or target.startswith("mailto:"):
            problems.append(f"{target}: points outside the repository")
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            problems.append(f"{target}: no such file")
        elif root not in file.parents:
            problems.append(f"{target}: outside the repository")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            problems.append(f"{target}: no heading #{anchor} in {file.relative_to(root)}")
    return problems


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_link_lands_inside_the_repository(page):
    assert broken_links(page) == []


def test_the_readme_is_a_short_first_read():
    text = (REPO / "README.md").read_text()
    assert len(text.splitlines()) <= 160
    for must in ("make run", "make test", "make test-fast", "make up", "docs/cli.md", "pyenv"):
        assert must in text, must
    assert "../" not in text and "design.md" not in text  # the reader has the repository, nothing beside it


def test_every_docs_page_is_in_the_readmes_map():
    text = (REPO / "README.md").read_text()
    missing = [p.name for p in PAGES[1:] if f"(docs/{p.name})" not in text]
    assert missing == []


def test_the_link_checker_finds_broken_links_anchors_and_links_out(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    (tmp_path / "design.md").write_text("# Beside the repository\n")
    (repo / "other.md").write_text("# Other page\n\n## The layer rule\n")
    page = repo / "page.md"
    page.write_text("[a](other.md#the-layer-rule) [b](missing.md) [c](other.md#nowhere) [d](https://example.org) "
                    "[e](../design.md)\n")
    assert broken_links(page, repo) == ["missing.md: no such file", "other.md#nowhere: no heading #nowhere in other.md",
                                        "https://example.org: points outside the repository",
                                        "../design.md: outside the repository"]
