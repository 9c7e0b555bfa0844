"""The documents' results tables are generated, never copied: every block between
``<!-- generated from results/... -->`` and ``<!-- end generated -->`` in README.md and
docs/*.md equals what ``experiments.docs`` makes of its results file now, every marker
names a file under results/, and every relative link resolves. No TensorFlow."""

import os
import re
import shutil
import subprocess
import sys

import pytest

from experiments import cli, docs

ROOT = docs.ROOT


def _all_blocks(root=ROOT):
    found = []
    for document in docs.documents(root):
        with open(os.path.join(root, document)) as f:
            found += docs.blocks(document, f.read().split("\n"))
    return found


def test_every_generated_table_equals_what_its_results_file_gives_now():
    stale = docs.stale_blocks()
    assert not stale, ("stale generated tables (run python -m experiments.docs): "
                       + "; ".join(map(str, stale)))


def test_every_marker_names_an_existing_results_file():
    found = _all_blocks()
    assert len(found) >= 20  # the README's and every docs page's tables
    assert {"README.md", "docs/article.md", "docs/papers.md", "docs/speed.md"} <= \
        {b.document for b in found}
    for block in found:
        assert block.source.startswith("results/"), block
        assert os.path.isfile(os.path.join(ROOT, block.source)), block


def test_every_generated_row_has_its_headers_cells():
    """A pipe inside a results cell (||G||, |rate - 1/4|) is escaped in the copy, so no row
    of a generated table spills into extra cells."""
    for block in _all_blocks():
        with open(os.path.join(ROOT, block.document)) as f:
            lines = f.read().split("\n")[block.first:block.last]
        assert len({_rendered_cells(line) for line in lines}) == 1, block


def _rendered_cells(line):
    """How many cells GitHub's renderer sees: every unescaped pipe separates."""
    return len(re.split(r"(?<!\\)\|", line.strip())) - 2


def test_every_relative_link_and_image_resolves():
    assert docs.broken_links() == []


def test_the_readme_stays_short():
    with open(os.path.join(ROOT, "README.md")) as f:
        assert len(f.read().splitlines()) <= 250


@pytest.fixture
def checkout(tmp_path):
    """README.md and docs/ copied, results/ the real one (linked, not copied)."""
    shutil.copy(os.path.join(ROOT, "README.md"), tmp_path / "README.md")
    shutil.copytree(os.path.join(ROOT, "docs"), tmp_path / "docs")
    os.symlink(os.path.join(ROOT, "results"), tmp_path / "results")
    return tmp_path


def test_a_table_edited_by_hand_is_stale_and_regenerated(checkout):
    readme = checkout / "README.md"
    text = readme.read_text()
    # Parameter counts, equal for three schemes, not for Box-Cox, in the first setting:
    # edited to four "supported", as a hand copy could drift.
    assert "| S 3 · C 1 |" in text
    readme.write_text(text.replace("| S 3 · C 1 |", "| S 4 |", 1))
    stale = docs.stale_blocks(str(checkout))
    assert [(b.document, b.source) for b in stale] == [("README.md",
                                                        "results/article/claims.md")]
    command = [sys.executable, "-m", "experiments.docs", f"--root={checkout}"]
    checked = subprocess.run(command + ["--check"], cwd=ROOT, capture_output=True, text=True,
                             timeout=60)
    assert checked.returncode == 1, checked.stderr
    assert checked.stdout.startswith("stale: README.md:"), checked.stdout
    assert "| S 4 |" in readme.read_text()  # --check writes nothing
    rewritten = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert rewritten.returncode == 0, rewritten.stderr
    assert readme.read_text() == text
    assert docs.stale_blocks(str(checkout)) == []


def test_the_text_around_a_block_is_kept_and_rows_and_columns_select(checkout):
    page = checkout / "docs" / "new.md"
    page.write_text("before\n<!-- generated from results/quirk/quirk.md (table 1; rows: "
                    "final_test_acc; columns: scheme, 5, verdict) -->\nold\n"
                    "<!-- end generated -->\nafter\n")
    text, stale = docs.refresh("docs/new.md", page.read_text(), str(checkout))
    assert len(stale) == 1
    assert text.splitlines() == [
        "before", page.read_text().splitlines()[1],
        "| scheme | on - off [95% CI] | verdict |", "|---|---|---|",
        "| batch | 0 [0, 0] | inconclusive |",
        "| layer | -0.0204 [-0.0427, 0.00192] | inconclusive |",
        "| instance | -0.241 [-0.329, -0.154] | supported |",
        "<!-- end generated -->", "after"]


@pytest.mark.parametrize("marker, message", [
    ("results/missing.md", "no such results file"),
    ("README.md", "must be under results/"),
    ("results/quirk/quirk.md (table 9)", "has 1 tables"),
    ("results/quirk/quirk.md (columns: nothing)", "no column 'nothing'"),
    ("results/quirk/quirk.md (sorted)", "unknown option 'sorted'"),
    ("results/quirk/quirk.md (rows: [)", "not a regular expression"),
    ("results/quirk/quirk.md (rows: no such row)", "no row matches rows: no such row"),
])
def test_a_bad_marker_is_one_error_naming_it(checkout, marker, message):
    text = f"<!-- generated from {marker} -->\n<!-- end generated -->\n"
    with pytest.raises(cli.ConfigError, match=message):
        docs.refresh("docs/x.md", text, str(checkout))


def test_a_marker_without_its_end_is_refused():
    with pytest.raises(cli.ConfigError, match="never ended"):
        docs.blocks("x.md", ["<!-- generated from results/quirk/quirk.md -->", "| a |"])


def test_a_broken_link_is_found(checkout):
    (checkout / "docs" / "new.md").write_text(
        "[ok](library.md) [gone](nowhere.md) ![fig](../results/accuracy.png) "
        "[bad anchor](library.md#no-such-heading) `[code](not-a-link)` [web](https://x.org)\n")
    assert docs.broken_links(str(checkout)) == ["docs/new.md: nowhere.md",
                                                "docs/new.md: library.md#no-such-heading"]
