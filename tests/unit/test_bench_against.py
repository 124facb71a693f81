"""``bench/check.py --against REF``'s parts that are not measurements: unpacking a ref's
``appd`` package from a real git repository, and the alternating order of the rounds."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import against


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True,
        env={"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org",
             "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.org",
             "HOME": str(repo), "PATH": "/usr/bin:/bin:/usr/local/bin"},
    ).stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    (root / "appd").mkdir(parents=True)
    (root / "other").mkdir()
    git(root, "init", "-q")
    (root / "appd" / "__init__.py").write_text("VERSION = 1\n")
    (root / "other" / "file.txt").write_text("not appd\n")
    git(root, "add", ".")
    git(root, "commit", "-q", "-m", "one")
    (root / "appd" / "__init__.py").write_text("VERSION = 2\n")
    git(root, "commit", "-q", "-am", "two")
    return root


def test_extract_unpacks_the_refs_appd_package_only(repo: Path, tmp_path: Path) -> None:
    into = against.extract("HEAD~1", tmp_path / "ref", root=repo)
    assert (into / "appd" / "__init__.py").read_text() == "VERSION = 1\n"
    assert not (into / "other").exists()
    later = against.extract("HEAD", tmp_path / "head", root=repo)
    assert (later / "appd" / "__init__.py").read_text() == "VERSION = 2\n"


def test_extract_of_an_unknown_ref_says_which(repo: Path, tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="cannot read appd/ at 'no-such-ref'"):
        against.extract("no-such-ref", tmp_path / "ref", root=repo)


def test_rounds_alternate_which_side_goes_first() -> None:
    order: list[tuple[str, int]] = []

    def measure(name: str, path: Path, index: int) -> dict[str, float]:
        order.append((name, index))
        return {"figure": float(len(order))}

    figures = against.alternate({"main": Path("a"), "tree": Path("b")}, 3, measure)
    assert order == [("main", 0), ("tree", 0), ("tree", 1), ("main", 1), ("main", 2),
                     ("tree", 2)]
    assert figures == {"main": [{"figure": 1.0}, {"figure": 4.0}, {"figure": 5.0}],
                       "tree": [{"figure": 2.0}, {"figure": 3.0}, {"figure": 6.0}]}
    assert against.medians(figures["main"]) == {"figure": 4.0}
