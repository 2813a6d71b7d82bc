"""The public student repository (tools/publish.py): what it holds, and a README whose every path is there."""
from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tools import colab_header, course_format, publish  # noqa: E402

SLUGS = course_format.find_slugs(REPO / "release", ".ipynb")


@pytest.fixture(scope="module")
def public(tmp_path_factory):
    dest = tmp_path_factory.mktemp("public")
    (dest / ".git").mkdir()                 # a clone: its git folder stays
    (dest / "release").mkdir()
    (dest / "release" / "old.ipynb").write_text("{}")          # a notebook the course no longer has: gone
    assert publish.main([str(dest)]) == 0
    return dest


def test_the_public_tree_holds_the_release_autograder_and_nothing_else(public):
    assert sorted(p.name for p in public.iterdir()) == [".git", "README.md", "autograder", "pyproject.toml", "release"]
    assert sorted(p.name for p in (public / "release").iterdir()) == SLUGS
    assert not list(public.rglob("__pycache__"))
    assert publish.leaks(public) == []


def test_every_path_and_link_in_the_public_readme_exists(public):
    text = (public / "README.md").read_text()
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    local = [t for t in links if not t.startswith(("http://", "https://", "#"))]
    code = [t for t in re.findall(r"`([^`\s]+)`", text) if "/" in t or "." in t.strip(".")]
    paths = [t.split("#")[0] for t in local] + [t for t in code if not t.startswith(("-", "."))]
    missing = [p for p in paths if p and not (public / p.rstrip("/")).exists()]
    assert not missing, f"the public README names paths the public tree does not have: {missing}"
    # Colab opens each badge's notebook from the public repository: every one is in release/
    colab = [t for t in links if t.startswith("https://colab.research.google.com/github/")]
    assert len(colab) == len(SLUGS), colab
    for url in colab:
        path = url.split(f"/blob/{colab_header.COURSE_BRANCH}/", 1)[1]
        assert (public / path).is_file(), url
    for private in ("make ", "solutions/", "docs/", "tools/", "notebooks/", "tests/"):
        assert private not in text, f"the public README mentions {private!r}, which is not published"


def test_a_hidden_test_marker_in_the_public_tree_is_found(tmp_path):
    (tmp_path / "release").mkdir()
    (tmp_path / "release" / "nb.ipynb").write_text('{"source": "### BEGIN HIDDEN TESTS\\n"}')
    (tmp_path / "ok.py").write_text("x = 1\n")
    assert publish.leaks(tmp_path) == ['release/nb.ipynb:1: {"source": "### BEGIN HIDDEN TESTS\\n"}']


def test_publishing_into_this_repository_is_refused(capsys):
    assert publish.main([str(REPO / "public")]) == 2
    assert "outside this repository" in capsys.readouterr().err
