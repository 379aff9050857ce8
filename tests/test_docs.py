"""The documentation cites only what ships: every relative link and every repository path it names exists.

Checked in the docs, the configs, the README and the changelog, and in the package's and tools' docstrings
and comments. A path is "a repository path" when its first folder is one of the repository's own
(`SOURCE_DIRS`) or `reference/`, a folder of measured facts that lives outside the repository (its facts
are restated in the docs, e.g. docs/training.md, "Why this recipe"). Paths that runs write (`runs/…`,
`data/…`, `predictions/…`) are not checked.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE_DIRS = (".ci", "configs", "docs", "pdgen", "tests", "tools", "reference")
"""First folders of the paths that must exist: the repository's own, and one that it must not cite."""

LINK = re.compile(r"\]\(([^)\s]+)\)")
PATH = re.compile(r"(?<![\w/.-])((?:[\w.-]+/)+[\w.-]*)")


def cited_files() -> list[Path]:
    texts = [ROOT / "README.md", ROOT / "CHANGELOG.md"]
    texts += sorted((ROOT / "docs").rglob("*.md")) + sorted((ROOT / "configs").rglob("*.yaml"))
    return texts + sorted((ROOT / "pdgen").rglob("*.py")) + sorted((ROOT / "tools").rglob("*.py"))


def missing_links(file: Path) -> list[str]:
    """The relative Markdown link targets of `file` that do not exist (anchors ignored)."""
    targets = LINK.findall(file.read_text(encoding="utf-8")) if file.suffix == ".md" else []
    return [
        target
        for target in targets
        if not re.match(r"[a-z]+:|#", target) and not (file.parent / target.split("#")[0]).exists()
    ]


def missing_paths(file: Path) -> list[str]:
    """The repository paths named in `file` (see the module docstring) that do not exist."""
    found = (path.rstrip(".,:;") for path in PATH.findall(file.read_text(encoding="utf-8")))
    return [path for path in found if path.split("/")[0] in SOURCE_DIRS and not (ROOT / path).exists()]


def test_every_relative_link_and_cited_path_exists() -> None:
    broken = {
        str(file.relative_to(ROOT)): missing_links(file) + missing_paths(file) for file in cited_files()
    }
    assert {file: paths for file, paths in broken.items() if paths} == {}


def test_the_checks_catch_a_dead_link_and_a_path_outside_the_repository(tmp_path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "See [the guide](guide.md#setup), [the site](https://example.org) and [below](#below); measured in\n"
        "`reference/environment.md`, configured in configs/full.yaml, written to runs/full/.\n"
    )
    assert missing_links(page) == ["guide.md#setup"]
    assert missing_paths(page) == ["reference/environment.md"]
