"""Inspection tools: attributions, adversarial examples, activation maximization, latent
interpolation, loss landscapes, filters/feature maps as images, and splitting a trained
Sequential into a feature extractor and a head (for Grad-CAM).

Every function takes plain NumPy or CuPy arrays (and models as functions of them) and
works on either device; results meant for plotting come back as NumPy arrays and the
plot helpers return ``matplotlib.figure.Figure`` objects (no pyplot).

Example:
    >>> import numpy as np
    >>> from gpudl import inspect
    >>> w = np.array([[1.0, -2.0], [3.0, 0.5]])
    >>> inspect.saliency(lambda x: x @ w.T, np.ones((1, 2)), target=0).tolist()
    [[1.0, -2.0]]
"""

from gpudl.inspect.activation import activation_maximization
from gpudl.inspect.adversarial import fgsm
from gpudl.inspect.attribution import class_score, grad_cam, resize_bilinear, saliency, smoothgrad
from gpudl.inspect.images import (
    feature_map_grid,
    filter_grid,
    grid_figure,
    make_grid,
    normalize_tiles,
)
from gpudl.inspect.landscape import (
    Landscape1D,
    Landscape2D,
    filter_normalized_direction,
    interpolate_params,
    landscape_1d,
    landscape_2d,
    plot_landscape_1d,
    plot_landscape_2d,
)
from gpudl.inspect.latent import interpolate, lerp, slerp
from gpudl.inspect.split import split_sequential

__all__ = [
    "Landscape1D", "Landscape2D", "activation_maximization", "class_score",
    "feature_map_grid", "fgsm", "filter_grid", "filter_normalized_direction", "grad_cam",
    "grid_figure", "interpolate", "interpolate_params", "landscape_1d", "landscape_2d",
    "lerp", "make_grid", "normalize_tiles", "plot_landscape_1d", "plot_landscape_2d",
    "resize_bilinear", "saliency", "slerp", "smoothgrad", "split_sequential",
]
