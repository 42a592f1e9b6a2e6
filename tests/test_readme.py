"""The README's Python examples run as written (with one epoch instead of five, to stay quick)."""
from __future__ import annotations

import re
from pathlib import Path

import warnings

import numpy as np
import pytest

from numcnn.errors import InputRangeWarning

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks():
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def test_readme_python_examples_run_in_order_and_do_what_their_comments_say(tmp_path, monkeypatch):
    blocks = python_blocks()
    assert len(blocks) >= 2, "the README's Python section changed: update this test"
    first, second = blocks[:2]           # the training example, then the step-by-step one
    assert "epochs=5" in first
    monkeypatch.chdir(tmp_path)                     # model.save writes into the current folder
    ns: dict = {}
    exec(compile(first.replace("epochs=5", "epochs=1"), "README block 1", "exec"), ns)
    assert ns["x_train"].dtype == np.uint8 and ns["x_train"].shape[1:] == (1, 28, 28)
    assert (tmp_path / "digits.safetensors").is_file()
    probs = ns["probs"]
    assert probs.shape == (5, 10)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    assert ns["model"].evaluate(ns["x_test"], ns["y_test"])["accuracy"] > 0.8   # one epoch learns

    before = [p.value.copy() for p in ns["model"].parameters()]
    model = ns["model"]
    # what the old snippet did, x / 255 into a model fit normalised by mean/std: warned, and the
    # loss of these 32 training images is several times the prepared one's
    wrong = ns["x_train"][:32].astype("float32") / 255
    with pytest.warns(InputRangeWarning, match="expects prepared input"):
        wrong_loss = ns["numcnn"].losses.CrossEntropy().forward(model.forward(wrong, training=False),
                                                                ns["y_train"][:32])
    model._range_warned = False                     # the snippet's own forward must not warn
    assert "model.prepare_input(x_train[:32])" in second
    with warnings.catch_warnings():
        warnings.simplefilter("error", InputRangeWarning)
        exec(compile(second, "README block 2", "exec"), ns)
    assert ns["l"] < 0.35 and wrong_loss > 2 * ns["l"], (ns["l"], wrong_loss)
    x, y, logits = ns["x"], ns["y"], ns["logits"]
    assert x.dtype == np.float32 and x.shape == (32, 1, 28, 28) and y.shape == (32,)
    assert logits.shape == (32, 10)                                  # (N, classes)
    # the loss is the mean cross-entropy of the logits; the SGD step changed every weight
    z = logits.astype(np.float64)
    logp = z - z.max(axis=1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(axis=1, keepdims=True))
    assert abs(ns["l"] - (-logp[np.arange(32), y].mean())) < 1e-5
    assert all(not np.array_equal(p.value, b) for p, b in zip(ns["model"].parameters(), before))
    assert all(p.grad is None for p in ns["model"].parameters())     # zero_grad ran
