"""The user-facing docs stay what a user reads: a README of at most 1,500 words, and no commit
hashes or issue numbers in the README, docs/ or the CHANGELOG (their history is git's)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", ROOT / "CHANGELOG.md", ROOT / "emulator" / "README.md"]
DOCS += sorted((ROOT / "docs").glob("*.md"))


def test_the_readme_is_at_most_1500_words() -> None:
    words = len((ROOT / "README.md").read_text().split())
    assert words <= 1500, f"README.md has {words} words; move reference text to docs/"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_no_commit_hashes_or_issue_numbers(doc: Path) -> None:
    text = doc.read_text()
    # A hex run of 7+ characters with a letter and a digit in it (a commit), outside URLs.
    words = re.findall(r"(?<![\w/.#-])[0-9a-f]{7,40}(?![\w/.-])", re.sub(r"https?://\S+", "", text))
    hashes = [w for w in words if re.search(r"[a-f]", w) and re.search(r"\d", w)]
    assert hashes == [], hashes
    assert re.findall(r"\b(?:issue|Issue|PR) #?\d+", text) == []
