"""The README and docs/ say only what is true: every path they name exists, every `limelight`
command they show answers --help, every make target they show exists, and the README stays short."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from limelight.cli import main

REPO = Path(__file__).resolve().parent.parent
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
# Paths a page may name without them being in the repository: made by a run, or examples.
MADE = ("demo/", ".venv/", "bench/out", "out/", "clips/", "faces/", "model_opt/work")


def _paths(text: str) -> set[str]:
    links = set(re.findall(r"\]\(([^)#:]+)\)", text))
    code = {m for m in re.findall(r"`([^`\s]+)`", text) if "/" in m and re.match(r"^[\w.][\w./-]*$", m)}
    return links | code


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_path_a_page_names_exists(page):
    missing = []
    for ref in sorted(_paths(page.read_text())):
        if ref.startswith(MADE) or ref.startswith("../shared") or "NAME" in ref or ref.endswith("/"):
            continue
        here, root = (page.parent / ref), (REPO / ref)
        if not (here.exists() or root.exists() or (REPO / "functions" / ref).exists() or (REPO / "functions" / "limelight" / ref).exists()):
            missing.append(ref)
    assert missing == []


def test_every_command_the_pages_show_answers_help():
    commands = set()
    targets = set()
    for page in PAGES:
        text = page.read_text()
        commands |= set(re.findall(r"limelight (analyze|anonymize|render|review|detect|submit)\b", text))
        targets |= set(re.findall(r"\bmake ([a-z][\w-]*)", text))
    assert {"anonymize", "analyze", "render", "review", "submit"} <= commands
    for command in sorted(commands):
        result = CliRunner().invoke(main, [command, "--help"])
        assert result.exit_code == 0 and "Usage:" in result.output, command
    makefile = (REPO / "Makefile").read_text()
    assert {"demo", "test"} <= targets
    for target in sorted(targets):
        assert re.search(rf"^{re.escape(target)}:", makefile, re.M), f"make {target} is not a target of the Makefile"


def test_the_readme_is_short_and_leads_with_the_two_commands():
    text = (REPO / "README.md").read_text()
    assert len(text.splitlines()) <= 120
    head = text[:1200]
    assert "make demo" in head and "make test" in head


def test_every_entry_of_the_layout_tree_exists():
    text = (REPO / "docs" / "how-it-works.md").read_text()
    tree = text.split("## Layout", 1)[1].split("```")[1]
    parent, missing = "", []
    for line in tree.strip().splitlines():
        name = line.split()[0]
        if line.startswith("  "):
            path = parent + name
        else:
            path, parent = name, name if name.endswith("/") else parent
        if not (REPO / path).exists():
            missing.append(path)
    assert len(tree.strip().splitlines()) > 20 and missing == []
