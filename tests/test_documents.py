"""The documents: the README a user reads first, its links, and every number the pipeline
produces that a document quotes, written by `aepipe docs` and checked here against the outputs."""

from __future__ import annotations

import re
import subprocess

import pytest

from pipeline.audit import documents
from tests.conftest import REPO_ROOT

LINK = re.compile(r"\]\(([^)#\s]+)(#[^)\s]*)?\)")


def committed() -> documents.Outputs:
    """The committed outputs and documents (after `dvc exp run -S ...` the workspace holds an
    experiment's), or the files themselves outside a git checkout."""
    inside = subprocess.run(
        ["git", "rev-parse", "--verify", "--quiet", "HEAD"], cwd=REPO_ROOT, capture_output=True
    )
    return documents.Outputs(REPO_ROOT, "HEAD" if inside.returncode == 0 else None)


def test_every_quoted_number_is_what_the_outputs_say():
    outputs = committed()
    for path in documents.documents(REPO_ROOT):
        where = path.relative_to(REPO_ROOT).as_posix()
        text = path.read_text() if outputs.revision is None else outputs.text(where)
        assert documents.differing(text, outputs, where) == [], f"{where}: run `aepipe docs`"


def test_a_number_edited_by_hand_is_caught_and_aepipe_docs_restores_it():
    outputs = committed()
    text = outputs.text("docs/results.md") if outputs.revision else ""
    text = text or (REPO_ROOT / "docs/results.md").read_text()
    edited = re.sub(r"\| 19\.\d\d \|", "| 19.99 |", text, count=1)
    assert edited != text
    assert documents.differing(edited, outputs, "docs/results.md") == ["test-metrics"]
    assert documents.rewritten(edited, outputs, "docs/results.md") == text


def test_every_block_has_a_writer_and_every_writer_is_used():
    used = set()
    for path in documents.documents(REPO_ROOT):
        used |= {m["name"] for m in documents.BLOCK.finditer(path.read_text())}
    assert used == set(documents.BLOCKS)


def test_the_readme_is_short_and_names_the_two_commands():
    readme = (REPO_ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    assert "make repro" in readme and "make test" in readme
    assert "make test" in (REPO_ROOT / ".ci/run").read_text()


@pytest.mark.parametrize(
    "document", [p.relative_to(REPO_ROOT) for p in documents.documents(REPO_ROOT)], ids=str
)
def test_every_link_resolves(document):
    text = (REPO_ROOT / document).read_text()
    for target, anchor in LINK.findall(text):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        resolved = (REPO_ROOT / document).parent / target
        assert resolved.exists(), f"{document}: {target}"
        if anchor and resolved.suffix == ".md":
            headings = {
                re.sub(r"[^\w\- ]", "", line.lstrip("# ").strip()).lower().replace(" ", "-")
                for line in resolved.read_text().splitlines()
                if line.startswith("#")
            }
            assert anchor[1:] in headings, f"{document}: {target}{anchor}"


def test_no_document_tells_the_history_of_the_project():
    for path in documents.documents(REPO_ROOT):
        text = path.read_text().lower()
        for phrase in ("this session", "the issue", "at commit", "this vm", "before (7"):
            assert phrase not in text, f"{path.relative_to(REPO_ROOT)}: {phrase!r}"
