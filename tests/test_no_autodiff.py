"""Nothing under tfnorm/ but the Keras bridge (tfnorm/keras, the single exemption: its layers
hand TensorFlow their hand-written backward through tf.custom_gradient, its panel callback
observes a Keras model with a tape) uses autodiff: no GradientTape, tf.gradients, custom_gradient,
``.gradient(``, tf.autodiff or ForwardAccumulator -- not in code, and not named in a
comment or string either (the house rule); nor gradients_impl/gradients_util,
tf.test.compute_gradient, Keras minimize/apply_gradients, or a dynamic import (importlib,
__import__) of backprop. At run time, one Trainer and one DistributedTrainer step run with
every autodiff entry point patched to raise. Code is read with ast, so a name is caught
however it is imported or spelled across lines; comments come from tokenize. Ordinary
words stay legal: "gradients", "autodiff", ``Network.gradients`` and ``backprop``."""

import ast
import io
import pathlib
import re
import shutil
import tokenize

import pytest

LIBRARY = pathlib.Path(__file__).resolve().parent.parent / "tfnorm"
# The one package the scan leaves out, relative to the library.
EXEMPT = pathlib.Path("keras")

FORBIDDEN_NAMES = {"GradientTape", "custom_gradient", "ForwardAccumulator", "autodiff",
                   "compute_gradient", "gradient_checker", "gradient_checker_v2",
                   "gradients_impl", "gradients_util"}
FORBIDDEN_MODULES = ("tensorflow.python.eager.backprop", "tensorflow.autodiff",
                     "tensorflow.python.eager.forwardprop", "tensorflow.python.ops.gradients",
                     "tensorflow.python.ops.gradient_checker", "tensorflow.test")
# Keras optimizers differentiate for you (minimize tapes the loss) or apply what a tape
# gave (apply_gradients); the library's optimizers are its own (tfnorm.optimizers).
FORBIDDEN_CALLS = {"minimize", "apply_gradients"}
# Modules an importlib.import_module / __import__ string must not name.
FORBIDDEN_DYNAMIC = re.compile(r"backprop|forwardprop|gradients_impl|gradients_util"
                               r"|gradient_checker|autodiff")
# In comments and strings: the API spellings, not the plain words.
FORBIDDEN_TEXT = re.compile(
    r"\bGradientTape\b|\bcustom_gradient\b|\bForwardAccumulator\b"
    r"|\b(?:tf|tensorflow)(?:\.compat\.v1)?\.(?:gradients|autodiff)\b|\.gradient\s*\("
    r"|\bcompute_gradient\b|\bgradients_impl\b|\bgradients_util\b|\bgradient_checker"
    r"|eager\.backprop\b|\.minimize\s*\(|\bapply_gradients\b")


def _constant_text(node):
    """Every string constant inside an argument, joined: a literal, an f-string's parts,
    a concatenation ('tensorflow.python.eager.' + 'backprop')."""
    return "".join(n.value for n in ast.walk(node)
                   if isinstance(n, ast.Constant) and isinstance(n.value, str))


def _is_dynamic_import(func):
    if isinstance(func, ast.Name):
        return func.id in ("__import__", "import_module")
    return isinstance(func, ast.Attribute) and func.attr in ("__import__", "import_module")


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
            if isinstance(func, ast.Attribute) and func.attr in FORBIDDEN_CALLS:
                hits.append((line, f".{func.attr}("))
            if _is_dynamic_import(func):
                for arg in list(node.args) + [k.value for k in node.keywords]:
                    if FORBIDDEN_DYNAMIC.search(_constant_text(arg)):
                        hits.append((line, f"dynamic import of {_constant_text(arg)!r}"))
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


def scanned_files(library=LIBRARY):
    """Every source file of ``library`` but those of the exempt package."""
    exempt = library / EXEMPT
    return sorted(path for path in library.rglob("*.py") if exempt not in path.parents)


def scan(library=LIBRARY):
    return [hit for path in scanned_files(library)
            for hit in find_autodiff(path.read_text(), str(path))]


def test_library_uses_no_autodiff():
    files = scanned_files()
    assert len(files) >= 8, f"expected the library under {LIBRARY}"
    hits = scan()
    assert not hits, "autodiff in the library:\n" + "\n".join(hits)


def test_the_keras_bridge_is_the_only_exemption():
    exempt = {path for path in LIBRARY.rglob("*.py") if path not in scanned_files()}
    assert exempt and all(path.parent == LIBRARY / EXEMPT for path in exempt), exempt
    # It needs the exemption (the hook and the tape are there), so the scan really skips it.
    assert any(find_autodiff(path.read_text(), str(path)) for path in exempt)


PLANTED = "import tensorflow as tf\n\n\ndef planted(f, x):\n    with tf.GradientTape() as t:\n" \
          "        y = f(x)\n    return t.gradient(y, x)\n"


@pytest.mark.parametrize("where", ["planted.py", "norms/planted.py", "probes/planted.py",
                                   "keras_planted.py", "norms/keras/planted.py",
                                   "kerasx/planted.py"])
def test_a_tape_planted_anywhere_else_under_the_library_fails_the_scan(where, tmp_path):
    library = tmp_path / "tfnorm"
    shutil.copytree(LIBRARY, library, ignore=shutil.ignore_patterns("__pycache__"))
    assert scan(library) == []
    (library / where).parent.mkdir(parents=True, exist_ok=True)
    (library / where).write_text(PLANTED)
    hits = scan(library)
    assert hits and all(where in hit for hit in hits), hits


def test_a_tape_in_the_keras_bridge_is_allowed(tmp_path):
    library = tmp_path / "tfnorm"
    shutil.copytree(LIBRARY, library, ignore=shutil.ignore_patterns("__pycache__"))
    (library / EXEMPT / "planted.py").write_text(PLANTED)
    assert scan(library) == []


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
    "from tensorflow.python.ops import gradients_impl\n",
    "import tensorflow.python.ops.gradients_impl as gi\n",
    "from tensorflow.python.ops.gradients_util import _GradientsHelper\n",
    "import importlib\nbp = importlib.import_module('tensorflow.python.eager.backprop')\n",
    "bp = __import__('tensorflow.python.eager.' + 'backprop')\n",
    "import importlib\nm = importlib.import_module(f'tensorflow.python.eager.{\"backprop\"}')\n",
    "from importlib import import_module\nm = import_module(name='tensorflow.python.ops.gradients_impl')\n",
    "optimizer.minimize(loss, variables, tape=tape)\n",
    "optimizer.apply_gradients(zip(grads, variables))\n",
    "import tensorflow as tf\nt, n = tf.test.compute_gradient(f, [x])\n",
    "from tensorflow.python.ops import gradient_checker_v2\n",
    "from tensorflow import test\nt, n = test.compute_gradient(f, [x])\n",
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


# ----------------------------------------------------------------------------
# Beside the scan, at run time: one compiled Trainer step and one DistributedTrainer
# step (a 1-replica MirroredStrategy) traced and run with every door to autodiff
# patched to raise: GradientTape (construction and .gradient), tf.gradients and
# gradients_impl, ForwardAccumulator, and the gradient registry (ops.get_gradient_function
# and its _gradient_registry.lookup, which any differentiation of a graph op goes through).


class AutodiffUsed(AssertionError):
    pass


def _forbid_autodiff(monkeypatch):
    import tensorflow as tf
    from tensorflow.python.eager import backprop, forwardprop
    from tensorflow.python.framework import ops
    from tensorflow.python.ops import gradients_impl

    def refuse(what):
        def raiser(*args, **kwargs):
            raise AutodiffUsed(f"autodiff used at run time: {what}")
        return raiser

    monkeypatch.setattr(backprop.GradientTape, "__init__", refuse("GradientTape()"))
    monkeypatch.setattr(backprop.GradientTape, "gradient", refuse("GradientTape.gradient"))
    monkeypatch.setattr(backprop.GradientTape, "jacobian", refuse("GradientTape.jacobian"))
    monkeypatch.setattr(forwardprop.ForwardAccumulator, "__init__", refuse("ForwardAccumulator"))
    monkeypatch.setattr(gradients_impl, "gradients", refuse("gradients_impl.gradients"))
    monkeypatch.setattr(gradients_impl, "gradients_v2", refuse("gradients_impl.gradients_v2"))
    monkeypatch.setattr(tf, "gradients", refuse("tf.gradients"))
    monkeypatch.setattr(tf.compat.v1, "gradients", refuse("tf.compat.v1.gradients"))
    monkeypatch.setattr(ops, "get_gradient_function", refuse("ops.get_gradient_function"))
    gradient_registry, registry_class = ops._gradient_registry, type(ops._gradient_registry)
    real_lookup = registry_class.lookup

    def lookup(self, name):  # Registry has __slots__: patched on the class, for this one
        if self is gradient_registry:
            raise AutodiffUsed(f"autodiff used at run time: the gradient registry ({name})")
        return real_lookup(self, name)

    monkeypatch.setattr(registry_class, "lookup", lookup)


def raises_autodiff(what):
    # Raised inside a traced function, AutodiffUsed reaches the caller wrapped in
    # autograph's StagingError: matched by its message.
    return pytest.raises(Exception, match="autodiff used at run time: " + what)


def _batch(side=16, batch=4):
    import numpy as np
    import tensorflow as tf

    generator = np.random.default_rng(0)
    return (tf.constant(generator.integers(0, 256, (batch, side, side, 3)).astype(np.uint8)),
            tf.constant(generator.integers(0, 10, batch).astype(np.int32)))


def _trainer(scheme="batch"):
    import tfnorm
    from tfnorm import optimizers, training

    network = tfnorm.article_network(scheme, depth=3, seed=1)
    return training.Trainer(network, optimizers.make_optimizer("adam", 0.01), bins=8)


def _distributed_trainer(scheme="batch"):
    import tensorflow as tf

    import tfnorm
    from tfnorm import distributed, optimizers

    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with distributed.scope(strategy):
        network = distributed.synchronize(tfnorm.article_network(scheme, depth=3, seed=1))
        optimizer = optimizers.make_optimizer("adam", 0.01)
        return distributed.DistributedTrainer(network, optimizer, strategy, bins=8)


def test_the_guard_refuses_every_door(monkeypatch):
    import tensorflow as tf

    _forbid_autodiff(monkeypatch)
    x = tf.constant(1.0)
    with raises_autodiff("GradientTape"):
        tf.GradientTape()
    with raises_autodiff("tf.gradients"):
        tf.function(lambda: tf.gradients(x * x, x))()
    with raises_autodiff("ForwardAccumulator"):
        tf.autodiff.ForwardAccumulator(x, x)
    with raises_autodiff(""):  # tf.test.compute_gradient differentiates with a tape
        tf.test.compute_gradient(lambda x: x * x, [x])
    # Below tf.gradients, graph differentiation looks every op up in the registry.
    from tensorflow.python.ops import gradients_util
    with raises_autodiff("ops.get_gradient_function|autodiff used at run time: the gradient"):
        tf.function(lambda: gradients_util._GradientsHelper([x * x], [x]))()


@pytest.mark.parametrize("scheme", ["batch"])
def test_a_trainer_step_runs_without_autodiff(monkeypatch, scheme):
    import numpy as np

    images, labels = _batch()
    _forbid_autodiff(monkeypatch)
    trainer = _trainer(scheme)
    for step in (trainer.train_step, trainer.record_step):
        out = step(images, labels)
        assert np.isfinite(out["loss"].numpy()) and out["finite"].numpy().all()


def test_a_distributed_step_runs_without_autodiff(monkeypatch):
    import numpy as np

    images, labels = _batch()
    _forbid_autodiff(monkeypatch)
    trainer = _distributed_trainer("meanonly")
    for step in (trainer.train_step, trainer.record_step):
        out = step(images, labels)
        assert np.isfinite(out["loss"].numpy()) and out["finite"].numpy().all()


def test_the_guard_catches_a_tape_inside_a_step(monkeypatch):
    # A step whose gradients came from a tape (the breakage the guard is for) fails.
    import tensorflow as tf

    images, labels = _batch()
    trainer = _trainer("batch")
    network = trainer.network

    def taped_backprop(images, labels, first_passed_gradient=False):
        with tf.GradientTape() as tape:
            network.loss(images, labels)
        raise AssertionError("unreachable: the tape was allowed")

    monkeypatch.setattr(network, "backprop", taped_backprop)
    _forbid_autodiff(monkeypatch)
    with raises_autodiff("GradientTape"):
        trainer.train_step(images, labels)


def test_the_guard_catches_tf_gradients_inside_a_distributed_step(monkeypatch):
    import tensorflow as tf

    from tfnorm import distributed

    images, labels = _batch()
    trainer = _distributed_trainer("batch")
    real = distributed.DistributedTrainer._replica_backprop

    def backprop_by_tf_gradients(self, images, labels, **kwargs):
        result, batch = real(self, images, labels, **kwargs)
        tf.gradients(result.loss, self.network.trainable_variables)
        return result, batch

    monkeypatch.setattr(distributed.DistributedTrainer, "_replica_backprop",
                        backprop_by_tf_gradients)
    _forbid_autodiff(monkeypatch)
    with raises_autodiff("tf.gradients"):
        trainer.train_step(images, labels)
