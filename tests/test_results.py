"""Every results directory says how it was made, and names no machine's absolute path.

A results directory is results/ itself and each directory directly under it, except the
``panels/`` folders that experiments.article.compare --results_dir writes (results/panels belongs
to results/, as every deeper folder belongs to the directory above it). Each holds a
``commands.txt``: the exact commands, run from the repository root, each followed by a
comment that gives its wall time (a comment line with the word "wall": "# wall 2 s",
"# 08:20 -> 08:26 UTC, wall 412 s", "# wall not recorded" when it was not kept). A study's config.json holds its configuration but neither the
command line nor its time, so it does not replace commands.txt.

No text file under results/ may hold an absolute path (a Unix path of two or more parts
from the root, a home directory "~/", a Windows drive): paths are relative to the
repository, so a file reads the same on every machine."""

import os
import re

import pytest

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(REPOSITORY, "results")
BELONG_TO_PARENT = ("panels",)
COMMAND = re.compile(r"^(python -m \S+|make \S+)")
# A "/" that starts a token (not after a word, ".", ")", "]", "/", "^" or "-": 1/2/4, L^-1/2
# and runs/x/y are not absolute) followed by two parts; "~/"; a drive "C:\".
ABSOLUTE_PATH = re.compile(r"(?<![\w.)\]/^-])/[\w.+-]+/[\w.+-]+|(?<![\w/])~/|\b[A-Za-z]:\\")
WALL = re.compile(r"#.*\bwall\b")


def results_directories(root):
    return [root] + sorted(os.path.join(root, name) for name in os.listdir(root)
                           if os.path.isdir(os.path.join(root, name))
                           and name not in BELONG_TO_PARENT)


def command_problems(directory):
    """What is wrong with ``directory``'s commands.txt ([] if nothing)."""
    path = os.path.join(directory, "commands.txt")
    if not os.path.exists(path):
        return [f"{directory}: no commands.txt"]
    with open(path) as f:
        lines = [line.rstrip("\n") for line in f]
    commands = [i for i, line in enumerate(lines) if COMMAND.match(line)]
    if not commands:
        return [f"{path}: no command (a line starting 'python -m' or 'make')"]
    problems = []
    for start, end in zip(commands, commands[1:] + [len(lines)]):
        if not any(WALL.match(line) for line in lines[start + 1:end]):
            problems.append(f"{path}: no '# wall ...' time after {lines[start]!r}")
    return problems


def absolute_paths(root):
    """[(file, the match)] of every absolute path in the text files under ``root``."""
    found = []
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            try:
                with open(path, encoding="utf-8") as f:
                    text = f.read()
            except UnicodeDecodeError:  # a figure: no text to hold a path
                continue
            # Only the lines that could hold one (the regex is slow on MBs of numbers).
            lines = "\n".join(line for line in text.splitlines() if "/" in line or ":\\" in line)
            found += [(os.path.relpath(path, root), m.group(0))
                      for m in ABSOLUTE_PATH.finditer(lines)]
    return found


def test_every_results_directory_holds_its_commands_with_their_times():
    directories = results_directories(RESULTS)
    assert len(directories) > 10
    problems = [p for d in directories for p in command_problems(d)]
    assert not problems, "\n".join(problems)


def test_no_file_under_results_holds_an_absolute_path():
    found = absolute_paths(RESULTS)
    assert not found, found


@pytest.mark.parametrize("text", [
    "From `/work/runs/article/runs.csv` (5 seeds)", "# Dead logits in /home/me/runs/a, b",
    "path=/tmp/x/y", "see ~/runs/compare", r"C:\Users\me\runs"])
def test_a_planted_absolute_path_is_found(tmp_path, text):
    (tmp_path / "study").mkdir()
    (tmp_path / "study" / "notes.md").write_text(f"depths 1/2/4/8, L^-1/2, ratio 3/4\n{text}\n")
    assert [name for name, _ in absolute_paths(str(tmp_path))] == [
        os.path.join("study", "notes.md")]


def test_ratios_depths_and_relative_paths_are_not_absolute_paths(tmp_path):
    (tmp_path / "a.md").write_text("depths 1/2/4/8/16; L^-1/2; runs/article/runs.csv; "
                                   "![x](panels/none_layer1.png); 0.5/0.25\n")
    assert absolute_paths(str(tmp_path)) == []


def test_a_directory_without_commands_or_times_is_found(tmp_path):
    (tmp_path / "panels").mkdir()
    (tmp_path / "study").mkdir()
    (tmp_path / "timed").mkdir()
    (tmp_path / "commands.txt").write_text("make demo\n# wall 3 min\n")
    (tmp_path / "timed" / "commands.txt").write_text(
        "python -m experiments.a --out_dir=x\n# wall 2 s\n\npython -m experiments.b\n")
    assert results_directories(str(tmp_path)) == [
        str(tmp_path), str(tmp_path / "study"), str(tmp_path / "timed")]
    problems = [p for d in results_directories(str(tmp_path)) for p in command_problems(d)]
    assert problems == [f"{tmp_path / 'study'}: no commands.txt",
                        f"{tmp_path / 'timed' / 'commands.txt'}: no '# wall ...' time after "
                        "'python -m experiments.b'"]
