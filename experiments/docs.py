r"""The results tables of README.md and docs/*.md, written from the files under results/:
no table of results is ever copied by hand.

    python -m experiments.docs            # rewrite every stale generated block in place
    python -m experiments.docs --check    # write nothing; exit 1 listing the stale blocks

A generated block is the lines between two markers, each on a line of its own:

    <!-- generated from results/article/claims.md (table 1; rows: batch > none; columns: 1, 3, 4, 6) -->
    | article | claim tested (paired by seed) | difference [95% CI] | verdict |
    ...
    <!-- end generated -->

The source is a path under results/, from the repository root: a ``.md`` file (its tables
are the runs of lines that start with ``|``; a cell separator is a pipe between spaces,
and a cell's own pipes, as in ||G||, are escaped in the copy) or a ``.csv`` file (its
header and rows as a table, numbers to 3 significant digits). The parenthesis, optional,
holds options separated by ``; ``:

    table N          the N-th table of a .md source, counted from 1 (default 1)
    rows: REGEX      keep the body rows whose line REGEX matches (re.search); the header stays
    columns: A, B    keep these columns in this order, each a header name or a number from 1

Everything between the markers is replaced by what the source produces now (written
atomically, ``tfnorm.run.atomic``); the text around them is never touched, so the prose that reads
a table is checked by whoever reruns a study. A document's relative links and images must
name files that exist, and heading anchors in .md files (``stale_blocks`` and
``broken_links``, both read by tests/test_docs.py). Bad markers: one line, exit 2.
Imports no TensorFlow.
"""

import csv
import glob
import os
import re

from absl import flags

from experiments import cli
from tfnorm.run import atomic

FLAGS = flags.FLAGS
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BEGIN = re.compile(r"^<!-- generated from (?P<source>\S+)(?: \((?P<options>.*)\))? -->$")
END = "<!-- end generated -->"
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def define_flags(flag_values=flags.FLAGS):
    flags.DEFINE_bool("check", False, "Write nothing; exit 1 if a generated block differs "
                      "from what its source produces now, listing each.",
                      flag_values=flag_values)
    flags.DEFINE_string("root", ROOT, "The checkout whose README.md and docs/*.md are read, "
                        "and whose results/ the markers name (default: this one).",
                        flag_values=flag_values)


def documents(root=ROOT):
    """README.md and every docs/*.md, as paths from ``root``."""
    found = ["README.md"] + sorted(os.path.relpath(p, root)
                                   for p in glob.glob(os.path.join(root, "docs", "*.md")))
    return [p for p in found if os.path.exists(os.path.join(root, p))]


class Block:
    """One generated block: its marker line, source, options, and the line span
    [first, last) of its content, between the two markers."""

    def __init__(self, document, line, source, options, first, last):
        self.document, self.line, self.source, self.options = document, line, source, options
        self.first, self.last = first, last

    def __str__(self):
        return f"{self.document}:{self.line + 1}: {self.source}" + (
            f" ({self.options})" if self.options else "")


def blocks(document, lines):
    """The generated blocks of ``lines``; ConfigError for a marker without its end."""
    found, begin = [], None
    for i, line in enumerate(lines):
        match = BEGIN.match(line.strip())
        if match:
            if begin is not None:
                raise cli.ConfigError(f"{document}:{begin[0] + 1}: generated block not ended "
                                      f"before line {i + 1}")
            begin = (i, match["source"], match["options"] or "")
        elif line.strip() == END:
            if begin is None:
                raise cli.ConfigError(f"{document}:{i + 1}: '{END}' without its marker")
            found.append(Block(document, begin[0], begin[1], begin[2], begin[0] + 1, i))
            begin = None
    if begin is not None:
        raise cli.ConfigError(f"{document}:{begin[0] + 1}: generated block never ended")
    return found


def parse_options(text):
    """{'table': N, 'rows': regex or None, 'columns': [names or numbers] or None}."""
    options = {"table": 1, "rows": None, "columns": None}
    for part in filter(None, (p.strip() for p in text.split("; "))):
        if re.fullmatch(r"table \d+", part):
            options["table"] = int(part.split()[1])
        elif part.startswith("rows: "):
            try:
                options["rows"] = re.compile(part[len("rows: "):])
            except re.error as error:
                raise cli.ConfigError(f"rows: not a regular expression ({error})") from None
        elif part.startswith("columns: "):
            options["columns"] = [c.strip() for c in part[len("columns: "):].split(",")]
        else:
            raise cli.ConfigError(f"unknown option '{part}' (table N; rows: REGEX; "
                                  "columns: A, B)")
    return options


# A cell separator is a pipe with white space on both sides: the results' tables write
# their cells' own pipes (||G - G'||, |rate - 1/4|) unescaped, always touching a character.
SEPARATOR = re.compile(r"(?<=\s)(?<!\\)\|(?=\s)")


def split_row(line):
    """The cells of a markdown table row, each with its own pipes escaped (\\|), so that
    the copy renders as one cell where the results file's line did not."""
    inner = line.strip()[1:-1]
    return [re.sub(r"(?<!\\)\|", r"\\|", cell.strip())
            for cell in SEPARATOR.split(f" {inner} ")]


def join_row(cells):
    return "|" + "|".join(f" {cell} " if cell else " " for cell in cells) + "|"


def md_tables(text):
    """Every table of a markdown text: a list of (header, body rows), rows as cells."""
    tables, run = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            run.append(split_row(line))
        else:
            if len(run) >= 2:
                tables.append((run[0], run[2:]))
            run = []
    return tables


def _number(text):
    try:
        value = float(text)
    except ValueError:
        return text
    return text if value.is_integer() and "." not in text else f"{value:.3g}"


def source_table(path, options, root=ROOT):
    """(header, rows) of the source at ``path`` (from ``root``) with its options applied."""
    full = os.path.join(root, path)
    if not path.startswith("results/") or ".." in path.split("/"):
        raise cli.ConfigError(f"{path}: a generated table's source must be under results/")
    if not os.path.isfile(full):
        raise cli.ConfigError(f"{path}: no such results file")
    if path.endswith(".csv"):
        with open(full, newline="") as f:
            table = list(csv.reader(f))
        header, body = table[0], [[_number(c).replace("|", "\\|") for c in row]
                                  for row in table[1:]]
    else:
        with open(full) as f:
            tables = md_tables(f.read())
        if not 1 <= options["table"] <= len(tables):
            raise cli.ConfigError(f"{path}: has {len(tables)} tables, not a table "
                                  f"{options['table']}")
        header, body = tables[options["table"] - 1]
    if options["rows"] is not None:
        body = [row for row in body if options["rows"].search(join_row(row))]
        if not body:  # a selection its source no longer has: stale, not an empty table
            raise cli.ConfigError(f"{path}: no row matches rows: {options['rows'].pattern}")
    if options["columns"] is not None:
        keep = []
        for column in options["columns"]:
            if column.isdigit() and 1 <= int(column) <= len(header):
                keep.append(int(column) - 1)
            elif column in header:
                keep.append(header.index(column))
            else:
                raise cli.ConfigError(f"{path}: no column '{column}' (has: {', '.join(header)})")
        header, body = [header[k] for k in keep], [[row[k] for k in keep] for row in body]
    return header, body


def generate(block, root=ROOT):
    """The lines ``block``'s source produces now."""
    header, body = source_table(block.source, parse_options(block.options), root)
    return [join_row(header), "|" + "---|" * len(header)] + [join_row(row) for row in body]


def refresh(document, text, root=ROOT):
    """(the document with every block regenerated, the stale blocks); ConfigError naming
    the block if its source is missing or cannot give what the marker asks."""
    lines = text.split("\n")
    stale, out, at = [], [], 0
    for block in blocks(document, lines):
        try:
            now = generate(block, root)
        except cli.ConfigError as error:
            raise cli.ConfigError(f"{block.document}:{block.line + 1}: {error}") from None
        if lines[block.first:block.last] != now:
            stale.append(block)
        out += lines[at:block.first] + now
        at = block.last
    return "\n".join(out + lines[at:]), stale


def stale_blocks(root=ROOT):
    """Every generated block, in every document, that differs from its source now."""
    found = []
    for document in documents(root):
        with open(os.path.join(root, document)) as f:
            found += refresh(document, f.read(), root)[1]
    return found


def _anchors(path):
    """GitHub's heading anchors of a markdown file."""
    with open(path) as f:
        text = re.sub(r"```.*?```", "", f.read(), flags=re.S)  # a shell comment is no heading
    headings = [line.lstrip("#").strip() for line in text.splitlines()
                if re.match(r"#{1,6} ", line)]
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


def broken_links(root=ROOT):
    """'document: target' for every relative link or image whose file (or heading anchor
    in a .md file) does not exist; links with a scheme (https:, mailto:) are not checked."""
    broken = []
    for document in documents(root):
        here = os.path.dirname(os.path.join(root, document))
        with open(os.path.join(root, document)) as f:
            text = re.sub(r"```.*?```|`[^`\n]*`", "", f.read(), flags=re.S)  # code: no link
        for target in LINK.findall(text):
            if re.match(r"[a-z]+:", target):
                continue
            path, _, anchor = target.partition("#")
            full = os.path.normpath(os.path.join(here, path)) if path else \
                os.path.join(root, document)
            if not os.path.exists(full) or (
                    anchor and full.endswith(".md") and anchor not in _anchors(full)):
                broken.append(f"{document}: {target}")
    return broken


@cli.one_line_errors
def main(argv):
    if len(argv) > 1:
        cli.fail(f"unexpected arguments: {' '.join(argv[1:])}")
    root = FLAGS.root
    if not os.path.isdir(root):
        raise cli.ConfigError(f"--root={root}: no such directory")
    stale = []
    for document in documents(root):
        path = os.path.join(root, document)
        with open(path) as f:
            text, found = refresh(document, f.read(), root)
        stale += found
        if found and not FLAGS.check:
            atomic.write_text(path, text)
    for block in stale:
        print(f"{'stale' if FLAGS.check else 'rewrote'}: {block}")
    if FLAGS.check and stale:
        raise SystemExit(1)


if __name__ == "__main__":
    define_flags()
    cli.run(main)
