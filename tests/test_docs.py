"""What the README promises about itself: it opens with exactly two commands, CI runs the second verbatim, and its
links (and those between the docs) reach a file and, with an anchor, one of that file's headings."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINK = re.compile(r"\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def opening_commands() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    m = re.match(r"# [^\n]+\n\n```bash\n(.*?)\n```\n", text, re.S)
    assert m, "README.md must open with its title, then one bash block"
    return m.group(1).splitlines()


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, only letters, digits, spaces, hyphens and underscores kept,
    spaces turned into hyphens."""
    return re.sub(r"[^a-z0-9 _-]", "", heading.strip().lower()).replace(" ", "-")


def headings(path: Path) -> set[str]:
    text = FENCE.sub("", path.read_text(encoding="utf-8"))  # a '#' line inside a code block is no heading
    return {github_slug(h) for h in re.findall(r"^#{1,6} (.+)$", text, re.M)}


def test_the_readme_opens_with_two_commands_and_ci_runs_the_second_verbatim():
    main, tests = opening_commands()
    assert main == "pip install -e . && locust -f harness/kairos_load.py --headless"
    assert tests.startswith("pip install -e '.[test]' && ") and "pytest" in tests
    assert tests in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()


def test_links_in_the_readme_and_docs_reach_a_file_and_a_heading():
    docs = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    checked = 0
    for doc in docs:
        for target in LINK.findall(FENCE.sub("", doc.read_text(encoding="utf-8"))):
            if re.match(r"[a-z][a-z0-9+.-]*:", target):
                continue  # http(s), mailto: not this repository's
            path, _, anchor = target.partition("#")
            dest = (doc.parent / path) if path else doc
            assert dest.exists(), f"{doc.relative_to(ROOT)}: link {target!r}: no such file"
            if anchor and dest.suffix == ".md":
                assert anchor in headings(dest), f"{doc.relative_to(ROOT)}: link {target!r}: no such heading"
            checked += 1
    assert checked >= 8  # the README's links into docs/measurements.md and docs/security.md at least


def test_the_slug_is_githubs():
    assert github_slug("Simulator speed with kairos_type at 11 to 1,000 instances") == (
        "simulator-speed-with-kairos_type-at-11-to-1000-instances"
    )
    assert github_slug("One ONNX Runtime server, --mode onnx (dien)") == "one-onnx-runtime-server---mode-onnx-dien"
