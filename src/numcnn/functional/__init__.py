"""Pure array kernels: arrays in, arrays out, each forward next to its backward.

Nothing here owns state or validates input; the layers in :mod:`numcnn.layers` do that.
"""
from .activation import (elu, elu_backward, gelu, gelu_backward, leaky_relu, leaky_relu_backward,
                         log_softmax, log_softmax_backward, relu, relu_backward, sigmoid,
                         sigmoid_backward, silu, silu_backward, softmax, softmax_backward, tanh,
                         tanh_backward)
from .conv import (ConvCache, conv2d, conv2d_backward, conv2d_forward, conv2d_input_grad,
                   conv2d_naive, full_conv_weight, input_grad_by_conv)
from .conv_transpose import (conv_transpose2d_backward, conv_transpose2d_forward,
                             conv_transpose_output_size)
from .dropout import dropout_backward, dropout_forward, dropout_mask
from .im2col import col2im, im2col, pad2d, unpad2d
from .linear import flatten, flatten_backward, linear_backward, linear_forward
from .loss import (cross_entropy_backward, cross_entropy_forward, cross_entropy_general_backward,
                   cross_entropy_general_forward)
from .norm import batch_norm_backward, batch_norm_forward
from .pool import (avg_pool2d_backward, avg_pool2d_forward, global_avg_pool2d,
                   global_avg_pool2d_backward, global_max_pool2d, global_max_pool2d_backward,
                   max_pool2d_backward, max_pool2d_forward)
from .special import erf
from .upsample import (upsample_bilinear2d, upsample_bilinear2d_backward, upsample_nearest2d,
                       upsample_nearest2d_backward)
from ._util import conv_output_size, pads4, pair, pool_output_size

__all__ = [n for n in dir() if not n.startswith("_")]
