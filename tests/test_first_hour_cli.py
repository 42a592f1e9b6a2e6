"""Issue 16's dead ends and friction, each a test: --help shows defaults and says what every
argument is; near dataset names are suggested; digits with the default model, --flip on digits;
errors in user words; an interrupted start leaves no empty run folder; convdemo's terminal
output and gallery."""
from __future__ import annotations

import argparse
import io
import os
from contextlib import redirect_stderr, redirect_stdout

import numpy as np
import pytest
from PIL import Image

from numcnn import cli
from numcnn.training import TrainingRun


def main_capture(*args):
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        rc = cli.main([str(a) for a in args])
    return rc, out.getvalue(), err.getvalue()


def _subparsers():
    parser = cli.build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices


@pytest.mark.parametrize("command", sorted(_subparsers()))
def test_help_says_what_every_argument_is_and_its_default(command):
    sub = _subparsers()[command]
    text = sub.format_help()
    for action in sub._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        assert action.help, f"numcnn {command}: {action.dest} has no help text"
        shown = sub._get_formatter()._expand_help(action) if action.help else ""
        if action.option_strings and not isinstance(action, argparse._StoreTrueAction) \
                and not action.required:                 # a required option has no default
            assert "default" in shown, f"numcnn {command} {action.option_strings[0]}: no default in {shown!r}"
            if action.default not in (None, False):
                assert str(action.default) in shown
    assert "%(default)" not in text


def test_train_help_shows_the_real_defaults():
    text = _subparsers()["train"].format_help()
    for snippet in ("(default: mnist-5k)", "(default: lenet5)", "(default: 32)", "(default: adam)",
                    "default 30", "default cosine", "(default: 0)"):
        assert snippet in " ".join(text.split()), snippet


def test_convdemo_help_says_the_default_kernel_and_that_colour_turns_grey():
    text = " ".join(_subparsers()["convdemo"].format_help().split())
    assert "colour is turned grey" in text
    assert "Laplacian" in text and "-1 -1 -1; -1 8 -1; -1 -1 -1" in text


@pytest.mark.parametrize("typo, name", [("cifar", "cifar10"), ("mnist-5", "mnist-5k"),
                                        ("fashion-minst", "fashion-mnist"), ("digit", "digits")])
def test_a_near_dataset_name_is_suggested(typo, name):
    rc, _, err = main_capture("train", "--data", typo, "--epochs", 1)
    assert rc == 2 and f"did you mean {name}?" in err


def test_digits_with_the_default_model_says_to_use_digits_cnn(tmp_path):
    rc, _, err = main_capture("train", "--data", "digits", "--out", tmp_path / "r")
    assert rc == 2 and "use --model digits-cnn" in err
    assert not (tmp_path / "r").exists()


def test_flip_on_digits_is_refused_as_its_help_says(tmp_path):
    rc, _, err = main_capture("train", "--data", "digits", "--model", "digits-cnn", "--flip",
                              "--out", tmp_path / "r")
    assert rc == 2 and "--flip" in err and "digit" in err
    assert "refused for digits" in " ".join(_subparsers()["train"].format_help().split())


def test_a_double_ctrl_c_at_the_start_leaves_no_empty_run_folder(tmp_path):
    out = tmp_path / "run"

    def second_ctrl_c(event, info):          # what the second SIGINT does: KeyboardInterrupt
        raise KeyboardInterrupt

    run = TrainingRun(data="digits", model="digits-cnn", epochs=1, out=str(out), progress=False,
                      callback=second_ctrl_c, log=lambda line: None)
    with pytest.raises(KeyboardInterrupt):
        run.run()
    assert not out.exists()
    # a folder that was there before is left alone (only what the run made is cleaned up)
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    run = TrainingRun(data="digits", model="digits-cnn", epochs=1, out=str(out), progress=False,
                      callback=second_ctrl_c, log=lambda line: None)
    with pytest.raises(KeyboardInterrupt):
        run.run()
    assert (out / "mine.txt").read_text() == "keep"


def test_json_into_an_unwritable_place_names_the_file_not_a_temp_file(tmp_path, monkeypatch):
    """(The tests run as root, where permissions do not stop writes: a file where the folder
    should be does.)"""
    from numcnn import files
    blocker = tmp_path / "plain-file"
    blocker.write_text("x")
    with pytest.raises(OSError) as info:
        files.atomic_write(str(blocker / "r.json"), b"{}")
    assert ".tmp-" not in str(info.value)

    def denied(folder):
        raise PermissionError(13, "Permission denied", os.path.join(folder, ".tmp-abc.part"))
    monkeypatch.setattr(files, "_temp_file", denied)
    with pytest.raises(OSError) as info:               # numcnn's StorageError, an OSError too
        files.atomic_write(str(tmp_path / "r.json"), b"{}")
    assert info.value.errno == 13
    assert str(tmp_path / "r.json") in str(info.value) and ".tmp-" not in str(info.value)


def _square(path, size=8):
    a = np.zeros((size, size), np.uint8)
    a[2:6, 2:6] = 255
    Image.fromarray(a).save(path)
    return path


def test_convdemo_shows_its_inputs_first_and_the_output_volume_last(tmp_path):
    rc, out, err = main_capture("convdemo", "--out", tmp_path)
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[0] == "input volume 5x5x3 (height x width x depth), zero padding 1 -> 7x7x3:"
    assert "2 filters of 3x3x3, stride 2, bias b0 = 0, bias b1 = 1:" in lines
    assert any(ln.startswith("output size: H' = 1 + (H + 2*padding - kh) // stride = 1 + (5 + 2*1 - 3) // 2 = 3")
               for ln in lines)
    first_step = next(i for i, ln in enumerate(lines) if ln.startswith("o[0][0,0] ="))
    assert first_step > 10
    tail = lines[-6:]
    assert tail[0] == "output volume 3x3x2 (height x width x depth; depth = number of filters):"
    assert tail[1].split() == ["o[:,:,0]", "o[:,:,1]"]
    # the printed volume is the conv's output, row by row
    from numcnn.viz import convdemo
    _, ref = convdemo.conv_steps(*convdemo.deck_example())
    for r in range(3):
        nums = [int(v) for v in tail[2 + r].replace("[", " ").replace("]", " ").split()]
        assert nums == list(ref[0, 0, r].astype(int)) + list(ref[0, 1, r].astype(int))


def test_convdemo_errors_speak_to_the_user_not_of_internal_functions(tmp_path):
    big = tmp_path / "big.png"
    Image.fromarray(np.zeros((40, 40), np.uint8)).save(big)
    cases = [("--image", big), ("--image", _square(tmp_path / "sq.png"), "--kernel", "1 2; 3 4 5"),
             ("--image", tmp_path / "sq.png", "--padding", "9"),
             ("--image", tmp_path / "sq.png", "--stride", "0")]
    for args in cases:
        rc, _, err = main_capture("convdemo", *args, "--out", tmp_path / "o")
        assert rc == 2, (args, err)
        for internal in ("user_demo", "conv_steps", "_check", "apply_kernels"):
            assert internal not in err, (args, err)


def test_gallery_uses_the_image_given_with_image(tmp_path):
    pic = _square(tmp_path / "sq.png", 32)
    rc, out, err = main_capture("convdemo", "--gallery", "--image", pic, "--out", tmp_path / "g")
    assert rc == 0, err
    assert f"to {pic}" in out and (tmp_path / "g" / "kernels.png").is_file()
    rc, _, err = main_capture("convdemo", "--gallery", pic, "--image", tmp_path / "other.png",
                              "--out", tmp_path / "g")
    assert rc == 2 and "two pictures" in err


def test_a_bad_history_file_is_named_not_the_plot_function(tmp_path):
    from numcnn.models import digits_cnn
    model = digits_cnn()
    model.save(tmp_path / "m.safetensors")
    (tmp_path / "h.json").write_text('{"epoch": [1, 2], "train_loss": [1]}')
    rc, _, err = main_capture("plot", tmp_path / "m.safetensors", "--history", tmp_path / "h.json",
                              "--data", "digits", "--out", tmp_path / "p")
    assert rc == 2 and "plot_history" not in err
    assert f"{tmp_path / 'h.json'}: the history's lists have different lengths [1, 2]" in err
