"""Watch a convolution happen: the deck's animated demo, step by step.

The deck's "Convolutions" slide is CS231n's "toggle movement" figure: a 5x5x3 input padded by 1,
two 3x3x3 filters sliding with stride 2, giving a 3x3x2 output.  Each output number is

    o[o][y, x] = sum(window * w_o) + b_o

where ``window`` is the (C, kh, kw) block of the padded input under the filter when it sits at
output position ``(y, x)``: rows ``y*stride .. y*stride + kh - 1`` and columns
``x*stride .. x*stride + kw - 1``.  Multiply the window and the filter number by number, add all
C*kh*kw products and the filter's bias: that is one output value.  Doing it for every position
and every filter gives the output volume, whose depth is the number of filters.

The package, one idea a file:

* :mod:`.steps`: the arithmetic, :func:`conv_steps`, one output value at a time, checked against
  :func:`numcnn.functional.conv2d` (the fast one-matrix-multiply version the layers use), the
  deck's example (:func:`deck_example`) and the input checks;
* :mod:`.text`: :func:`format_step`, a step as the terminal shows it;
* :mod:`.gif`: :func:`render_gif` / :func:`render_frames`, the animation; :func:`animate`, the
  same as an :class:`Animation` that plays inline in a notebook;
* :mod:`.gallery`: :func:`classic_kernels`, :func:`apply_kernels`, :func:`kernel_gallery`: what
  hand-made 3x3 kernels (blur, sharpen, edges) do to an image, how convolutions "highlight
  aspects of an image";
* :mod:`.user`: :func:`user_demo`, the demo on your own small image and kernel.

Arrays follow PyTorch's layout: ``x`` is (N, C, H, W) and ``weight`` is (O, C, kh, kw), so
``weight[o, c, i, j]`` is the deck's ``w_o[i, j, c]`` (the deck writes ``w1[:,:,c]`` for the
3x3 slice of channel c; here that slice is ``weight[0, c]``).
"""
from .gallery import apply_kernels, classic_kernels, kernel_gallery, sample_image
from .gif import Animation, animate, render_frames, render_gif
from .steps import DECK_SEED, DEMO_MAX_VALUE, MAX_DEMO_SIZE, ConvStep, conv_steps, deck_example
from .text import format_setup, format_step, format_volume
from .user import DemoResult, user_demo, user_demo_inputs

__all__ = ["Animation", "animate", "ConvStep", "DemoResult", "deck_example", "conv_steps", "format_step", "format_setup", "format_volume", "render_frames",
           "render_gif", "classic_kernels", "apply_kernels", "kernel_gallery", "sample_image",
           "user_demo", "user_demo_inputs", "MAX_DEMO_SIZE", "DEMO_MAX_VALUE", "DECK_SEED"]
