"""Pictures: the deck's convolution demo (:mod:`.convdemo`) and training plots (:mod:`.plots`).

    from numcnn import viz
    x, w, b, stride, padding = viz.deck_example()
    steps, out = viz.conv_steps(x, w, b, stride, padding)
    print(viz.format_step(steps[5]))
    viz.render_gif(x, w, b, stride, padding, "conv.gif")       # 18 frames, one per output value
    viz.kernel_gallery(viz.sample_image(), "kernels.png")      # blur, sharpen, edges...

Everything writes files (GIF with Pillow, PNG with matplotlib's Agg canvas); nothing opens a
window.  matplotlib is imported only when a plot is drawn.
"""
from .convdemo import (DECK_SEED, MAX_DEMO_SIZE, ConvStep, DemoResult, apply_kernels,
                       classic_kernels, conv_steps, deck_example, format_step, kernel_gallery,
                       render_frames, render_gif, sample_image, user_demo, user_demo_inputs)
from .plots import plot_confusion, plot_feature_maps, plot_filters, plot_history

__all__ = ["ConvStep", "DemoResult", "MAX_DEMO_SIZE", "DECK_SEED", "deck_example", "conv_steps",
           "format_step", "render_frames", "render_gif", "classic_kernels", "apply_kernels",
           "kernel_gallery", "sample_image", "user_demo", "user_demo_inputs", "plot_history",
           "plot_confusion", "plot_filters", "plot_feature_maps"]
