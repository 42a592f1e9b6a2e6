"""What a notebook shows, checked without a kernel: models as tables, summary() as its text,
the convolution animation as an embedded GIF (no JavaScript), progress bars from tqdm.auto."""
from __future__ import annotations

import base64
import inspect
import io
import re

import numpy as np
from PIL import Image

from numcnn import models
from numcnn.training import trainer
from numcnn.viz import convdemo


def test_a_model_shows_as_a_table_of_its_layers():
    model = models.lenet5()
    model.classes = [str(i) for i in range(10)]
    html = model._repr_html_()
    rows = re.findall(r"<tr><td>(\d+)</td><td><code>(.*?)</code></td><td>(.*?)</td>"
                      r"<td style='text-align:right'>([\d,]+)</td></tr>", html)
    assert len(rows) == len(model.layers) == 12
    assert rows[0] == ("0", "Conv2D(1, 6, kernel_size=5, padding=2)", "6x28x28", "156")
    assert sum(int(r[3].replace(",", "")) for r in rows) == 61706
    assert "61,706 parameters" in html and "classes: 0, 1, 2" in html


def test_summary_displays_as_its_table_not_a_quoted_string():
    s = models.lenet5().summary()
    assert isinstance(s, str) and repr(s) == str(s) and not repr(s).startswith("'")
    assert s._repr_html_().startswith("<pre>input: 1x28x28")


def test_the_animation_plays_inline_as_an_embedded_gif(tmp_path):
    anim = convdemo.animate()
    assert anim.frames == 18
    html = anim._repr_html_()
    assert "<script" not in html
    data = base64.b64decode(re.search(r'base64,([^"]+)"', html).group(1))
    assert data == anim.data
    gif = Image.open(io.BytesIO(data))
    assert gif.format == "GIF" and gif.n_frames == 18
    assert anim.save(tmp_path / "a.gif") == str(tmp_path / "a.gif")
    assert (tmp_path / "a.gif").read_bytes() == data


def test_a_user_demo_shows_its_gif_or_its_steps(tmp_path):
    demo = convdemo.user_demo(np.eye(5) * 255, [[1, 0], [0, 1]], path=tmp_path / "u.gif")
    assert base64.b64decode(re.search(r'base64,([^"]+)"', demo._repr_html_()).group(1)) == \
        (tmp_path / "u.gif").read_bytes()
    text_only = convdemo.user_demo(np.eye(4), [[2]])
    assert text_only._repr_html_().startswith("<pre>o[0][0,0] = sum(window * w0) + b0 = (2) + 0 = 2")


def test_progress_bars_come_from_tqdm_auto():
    """tqdm.auto picks the notebook widget in Jupyter and the text bar in a terminal."""
    src = inspect.getsource(trainer)
    assert "from tqdm.auto import tqdm" in src and "from tqdm import tqdm" not in src
