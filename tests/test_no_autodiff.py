"""Nothing under tfnorm/ uses autodiff: no GradientTape, tf.gradients, custom_gradient,
``.gradient(``, tf.autodiff or ForwardAccumulator -- not in code, and not named in a
comment or string either (the house rule). Code is read with ast, so a name is caught
however it is imported or spelled across lines; comments come from tokenize. Ordinary
words stay legal: "gradients", "autodiff", ``Network.gradients`` and ``backprop``."""

import ast
import io
import pathlib
import re
import tokenize

import pytest

LIBRARY = pathlib.Path(__file__).resolve().parent.parent / "tfnorm"

FORBIDDEN_NAMES = {"GradientTape", "custom_gradient", "ForwardAccumulator", "autodiff"}
FORBIDDEN_MODULES = ("tensorflow.python.eager.backprop", "tensorflow.autodiff",
                     "tensorflow.python.eager.forwardprop")
# In comments and strings: the API spellings, not the plain words.
FORBIDDEN_TEXT = re.compile(
    r"\bGradientTape\b|\bcustom_gradient\b|\bForwardAccumulator\b"
    r"|\b(?:tf|tensorflow)(?:\.compat\.v1)?\.(?:gradients|autodiff)\b|\.gradient\s*\(")


def _root_name(node):
    while isinstance(node, ast.Attribute):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def find_autodiff(source, filename="<source>"):
    """The uses of autodiff in ``source``: a list of 'file:line: what' strings."""
    hits = []
    tree = ast.parse(source, filename)
    for node in ast.walk(tree):
        line = getattr(node, "lineno", 0)
        if isinstance(node, ast.Attribute):
            if node.attr in FORBIDDEN_NAMES - {"autodiff"}:
                hits.append((line, node.attr))
            elif node.attr in ("gradients", "autodiff") and _root_name(node.value) in (
                    "tf", "tensorflow"):
                hits.append((line, f"tf.{node.attr}"))
        elif isinstance(node, ast.Name) and node.id in FORBIDDEN_NAMES - {"autodiff"}:
            hits.append((line, node.id))
        elif isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Attribute) and func.attr == "gradient":
                hits.append((line, ".gradient("))
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            for alias in node.names:
                full_name = f"{module}.{alias.name}"
                if alias.name in FORBIDDEN_NAMES or full_name.startswith(FORBIDDEN_MODULES) or (
                        module.startswith("tensorflow") and alias.name == "gradients"):
                    hits.append((line, f"from {module} import {alias.name}"))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith(FORBIDDEN_MODULES):
                    hits.append((line, f"import {alias.name}"))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            for match in FORBIDDEN_TEXT.finditer(node.value):
                hits.append((line, f"string mentions {match.group(0)!r}"))
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            for match in FORBIDDEN_TEXT.finditer(token.string):
                hits.append((token.start[0], f"comment mentions {match.group(0)!r}"))
    return [f"{filename}:{line}: {what}" for line, what in sorted(set(hits))]


def test_library_uses_no_autodiff():
    files = sorted(LIBRARY.rglob("*.py"))
    assert len(files) >= 8, f"expected the library under {LIBRARY}"
    hits = [hit for path in files for hit in find_autodiff(path.read_text(), str(path))]
    assert not hits, "autodiff in the library:\n" + "\n".join(hits)


@pytest.mark.parametrize("source", [
    "import tensorflow as tf\nwith tf.GradientTape() as tape:\n    pass\n",
    "from tensorflow import GradientTape\n",
    "import tensorflow as tf\ngrads = tf.gradients(y, x)\n",
    "import tensorflow as tf\ng = tf.compat.v1.gradients(y, x)\n",
    "import tensorflow as tf\n@tf.custom_gradient\ndef f(x):\n    return x, None\n",
    "grads = tape.gradient(loss,\n                      variables)\n",
    "grads = tape.gradient (loss, variables)\n",
    "import tensorflow as tf\nacc = tf.autodiff.ForwardAccumulator(x, v)\n",
    "from tensorflow.python.eager import backprop\n",
    "import tensorflow.python.eager.backprop as bp\n",
    "x = 1  # checked with tf.GradientTape\n",
    "def f():\n    '''Equals tf.gradients(loss, x).'''\n",
    "tape_class = getattr(tf, 'GradientTape')\n",
])
def test_checker_finds_autodiff(source, tmp_path):
    path = tmp_path / "offender.py"
    path.write_text(source)
    assert find_autodiff(path.read_text(), str(path)), source


@pytest.mark.parametrize("source", [
    "loss, grads = network.gradients(images, labels)\n",
    "result = network.backprop(images, labels)\n",
    "# the gradients passed back, written by hand: no autodiff\n",
    "def weight_gradient(x):\n    '''The gradient w.r.t. the weights.'''\n",
    "passed_gradient = layer.passed_gradient\n",
])
def test_checker_leaves_ordinary_words_alone(source):
    assert find_autodiff(source) == []
