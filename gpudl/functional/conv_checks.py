"""Argument checks and geometry for the convolutions: clear errors before any kernel runs.

Every message names the op, the argument, what was expected, what was given and a fix.
Geometry comes out normalised for the primitives: ``stride (sH, sW)``, ``padding (top,
bottom, left, right)``, ``dilation (dH, dW)``, ``groups``.

Example:
    >>> padding4("same", (3, 4), (1, 1), (1, 1), "F.conv2d")
    (1, 1, 1, 2)
"""

from __future__ import annotations

from gpudl.errors import ShapeError
from gpudl.functional._checks import int_pair, is_int, positive_pair


def padding4(padding, k_hw, stride, dilation, op: str) -> tuple[int, int, int, int]:
    """Normalise conv padding to (top, bottom, left, right)."""
    if isinstance(padding, str):
        mode = padding.lower()
        if mode == "valid":
            return 0, 0, 0, 0
        if mode == "same":
            if tuple(stride) != (1, 1):
                raise ShapeError(f"{op}: padding='same' needs stride 1 (as torch), got stride "
                                 f"{tuple(stride)}; give the padding as numbers instead")
            out: list[int] = []
            for k, d in zip(k_hw, dilation, strict=True):
                total = d * (k - 1)
                out += [total // 2, total - total // 2]  # extra at the bottom/right (TF, torch)
            return tuple(out)  # type: ignore[return-value]
        raise ShapeError(f"{op}: padding must be an int, a pair, ((top, bottom), (left, "
                         f"right)), 'same' or 'valid', got {padding!r}")
    if (isinstance(padding, tuple | list) and len(padding) == 2
            and all(isinstance(p, tuple | list) for p in padding)):
        (t, b), (l, r) = int_pair(padding[0], "padding", op), int_pair(padding[1], "padding", op)
        pads = (t, b, l, r)
    else:
        ph, pw = int_pair(padding, "padding", op)
        pads = (ph, ph, pw, pw)
    if min(pads) < 0:
        raise ShapeError(f"{op}: padding must be >= 0, got {padding!r}")
    return pads


def conv_output_hw(h: int, w: int, k_hw, stride, padding, dilation) -> tuple[int, int]:
    """``floor((n + pA + pB - d(k-1) - 1)/s) + 1`` for each spatial axis."""
    return ((h + padding[0] + padding[1] - dilation[0] * (k_hw[0] - 1) - 1) // stride[0] + 1,
            (w + padding[2] + padding[3] - dilation[1] * (k_hw[1] - 1) - 1) // stride[1] + 1)


def _groups(groups, op: str) -> int:
    if not is_int(groups) or groups < 1:
        raise ShapeError(f"{op}: groups must be an int >= 1, got {groups!r}")
    return int(groups)


def check_conv_geometry(op: str, x_shape, w_shape, b_shape, stride, padding, dilation, groups,
                        g_shape=None, x_name: str = "x", w_name: str = "w") -> dict:
    """Check a conv2d's operand shapes; return the primitives' geometry keyword arguments."""
    if len(x_shape) != 4:
        raise ShapeError(f"{op}: {x_name} must be 4-D (N, C, H, W), got shape {tuple(x_shape)}; "
                         f"for one image use x[None], for sequences F.conv1d")
    if len(w_shape) != 4:
        raise ShapeError(f"{op}: {w_name} must be 4-D (out_channels, in_channels/groups, kH, "
                         f"kW), got shape {tuple(w_shape)}")
    groups = _groups(groups, op)
    n, c, h, w = x_shape
    o, cg, kh, kw = w_shape
    if c % groups:
        raise ShapeError(f"{op}: groups={groups} must divide the {c} input channels of "
                         f"{x_name} {tuple(x_shape)}")
    if o % groups:
        raise ShapeError(f"{op}: groups={groups} must divide the {o} output channels "
                         f"({w_name}.shape[0] of {tuple(w_shape)})")
    if cg * groups != c:
        raise ShapeError(f"{op}: {x_name} has {c} channels but {w_name} {tuple(w_shape)} takes "
                         f"{cg} per group x {groups} groups = {cg * groups}; {w_name} must be "
                         f"({o}, {c // groups}, {kh}, {kw}) for groups={groups}")
    if min(kh, kw) < 1:
        raise ShapeError(f"{op}: kernel size must be >= 1, got {w_name} shape {tuple(w_shape)}")
    if b_shape is not None and tuple(b_shape) != (o,):
        raise ShapeError(f"{op}: b must have shape ({o},) (one bias per output channel), "
                         f"got {tuple(b_shape)}")
    stride = positive_pair(stride, "stride", op)
    dilation = positive_pair(dilation, "dilation", op)
    pads = padding4(padding, (kh, kw), stride, dilation, op)
    ho, wo = conv_output_hw(h, w, (kh, kw), stride, pads, dilation)
    if ho < 1 or wo < 1:
        eh, ew = dilation[0] * (kh - 1) + 1, dilation[1] * (kw - 1) + 1
        raise ShapeError(
            f"{op}: the kernel ({kh}x{kw}, dilation {dilation}, extent {eh}x{ew}) is larger "
            f"than the padded input ({h + pads[0] + pads[1]}x{w + pads[2] + pads[3]} from "
            f"{x_name} {h}x{w} with padding {pads}); the output would be {ho}x{wo}. Use a "
            f"smaller kernel or dilation, or more padding.")
    if g_shape is not None and tuple(g_shape) != (n, o, ho, wo):
        raise ShapeError(f"{op}: g must have conv2d's output shape {(n, o, ho, wo)}, got "
                         f"{tuple(g_shape)}")
    return {"stride": stride, "padding": pads, "dilation": dilation, "groups": groups}


def check_transpose_geometry(op: str, x_shape, w_shape, b_shape, stride, padding,
                             output_padding, dilation, groups):
    """conv_transpose2d's checks. Returns (output (H, W), conv geometry, extra rows/cols).

    The transposed conv is conv2d's backward-data for an input of the output's size. When
    output_padding >= stride (torch allows it if < dilation), that conv2d has more output
    rows than x: the caller pads x with ``extra`` zero rows/columns at the bottom/right.
    """
    if len(x_shape) != 4:
        raise ShapeError(f"{op}: x must be 4-D (N, C_in, H, W), got shape {tuple(x_shape)}")
    if len(w_shape) != 4:
        raise ShapeError(f"{op}: w must be 4-D (C_in, C_out/groups, kH, kW) as torch, got "
                         f"shape {tuple(w_shape)}")
    groups = _groups(groups, op)
    n, cin, h, w = x_shape
    wcin, cog, kh, kw = w_shape
    if cin % groups:
        raise ShapeError(f"{op}: groups={groups} must divide the {cin} input channels of x "
                         f"{tuple(x_shape)}")
    if wcin != cin:
        raise ShapeError(f"{op}: x has {cin} channels but w {tuple(w_shape)} has {wcin} input "
                         f"channels; w must be (C_in, C_out/groups, kH, kW) = ({cin}, {cog}, "
                         f"{kh}, {kw}) (torch layout, not conv2d's OIHW)")
    if b_shape is not None and tuple(b_shape) != (cog * groups,):
        raise ShapeError(f"{op}: b must have shape ({cog * groups},) (C_out), got "
                         f"{tuple(b_shape)}")
    stride = positive_pair(stride, "stride", op)
    dilation = positive_pair(dilation, "dilation", op)
    pads = padding4(padding, (kh, kw), stride, dilation, op)
    op_h, op_w = int_pair(output_padding, "output_padding", op)
    for axis, (o_p, s, d) in enumerate(zip((op_h, op_w), stride, dilation, strict=True)):
        if o_p < 0 or (o_p >= s and o_p >= d):
            raise ShapeError(f"{op}: output_padding {output_padding!r} must be >= 0 and smaller "
                             f"than the stride {stride} or the dilation {dilation} (axis "
                             f"{axis}), as torch")
    out_h = (h - 1) * stride[0] - pads[0] - pads[1] + dilation[0] * (kh - 1) + op_h + 1
    out_w = (w - 1) * stride[1] - pads[2] - pads[3] + dilation[1] * (kw - 1) + op_w + 1
    if out_h < 1 or out_w < 1:
        raise ShapeError(f"{op}: the output would be {out_h}x{out_w} for x {h}x{w}, kernel "
                         f"{kh}x{kw}, stride {stride}, padding {pads}; reduce the padding")
    ho, wo = conv_output_hw(out_h, out_w, (kh, kw), stride, pads, dilation)
    geo = {"stride": stride, "padding": pads, "dilation": dilation, "groups": groups}
    return (out_h, out_w), geo, (ho - h, wo - w)


# Helpers for other modules and for nn: nothing here is an F.<name> function.
__all__: list[str] = []
