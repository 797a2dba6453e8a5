# cython: language_level=3
"""minidl's convolution kernels: im2col / col2im (the book's layout and its
transpose), the cuts between a product's layout and the images', and max pooling.

Design
------
The book turns a convolution into one matrix product: ``im2col`` copies every
FH x FW window of the (zero-padded) input into a row, so that
``col @ W.reshape(FN, -1).T`` is the convolution, in (N, out_h, out_w, FN)
order, which the book then transposes to (N, FN, out_h, out_w).

The layers here keep the product and move the transposes to where they are
cheap. ``unfold`` writes every window of a group of images as a *column*,
``col`` of shape (C*FH*FW, n*out_h*out_w) (the book's ``im2col`` transposed), so
that ``W.reshape(FN, -1) @ col`` is the group's whole convolution in one BLAS
call, rows by filter; ``images_from_product`` cuts those rows into the book's
(N, FN, out_h, out_w) images and adds the bias in the same pass, and
``product_from_images`` is the way back for the backward products (``dW`` and
the windows' gradient), with ``db`` summed on the way. A group's products are
large, not one per image: NumPy's batched ``matmul`` makes a small BLAS call per
image, between which OpenBLAS's threads spin, and on a busy two-core machine a
DeepConvNet forward pass of 500 images took 30 s that way (the book's: 24 s).
``fold`` is ``unfold``'s adjoint (the book's ``col2im`` for that layout): it adds
the columns back into the images. ``im2col`` / ``col2im`` are the book's own
layout, for ``minidl.util``. ``maxpool_forward`` / ``maxpool_backward`` read and
write the images directly instead of going through ``im2col``.

Exactness. Copies are exact. Where windows overlap, ``col2im``, ``fold`` and
``maxpool_backward`` add a pixel's contributions in the book's order (its
``col2im`` adds the window offsets (ky, kx) one after the other), so float64
results are the book's bit for bit; ``maxpool_forward`` keeps the first
maximum of a window, as ``np.argmax`` does (and a NaN, as ``np.max`` does).
Zero padding takes part in the max, as in the book (its ``im2col`` pads with
zeros); gradients that fall on the padding are dropped, as its ``col2im`` does.

Every kernel is a ``noexcept nogil`` C function over the ``floating`` fused
type, for one image; the ``def`` wrappers check that the buffers they are given
agree with the geometry (so that nothing can index out of bounds: the module is
compiled without bounds checks, see ``setup.py``) and share the images out
between ``n_threads`` OpenMP threads. Arguments marked ``# IN`` are read,
``# OUT`` are written and allocated by the caller. The NumPy reference for each
is in ``minidl._conv_numpy``; the tests hold every kernel to it and to the
book's code.
"""

from cython.parallel cimport prange
from libc.stdint cimport int64_t, uint8_t
from libc.string cimport memcpy, memset

ctypedef fused floating:
    float
    double


# -- geometry helpers -------------------------------------------------------------------

cdef inline Py_ssize_t _first_inside(Py_ssize_t k, Py_ssize_t S, Py_ssize_t P) noexcept nogil:
    """The first output position o with o*S + k - P >= 0."""
    if k >= P:
        return 0
    return (P - k + S - 1) // S


cdef inline Py_ssize_t _end_inside(Py_ssize_t k, Py_ssize_t S, Py_ssize_t P, Py_ssize_t size,
                                   Py_ssize_t O) noexcept nogil:
    """One past the last output position o (< O) with o*S + k - P < size."""
    cdef Py_ssize_t last = size - 1 - k + P  # o*S <= last
    if last < 0:
        return 0
    return min(O, last // S + 1)


# -- unfold / fold: windows as columns, one image at a time ------------------------------

cdef void _unfold(
    const floating* x,          # IN (C, H, W) one image
    Py_ssize_t C, Py_ssize_t H, Py_ssize_t W,
    Py_ssize_t FH, Py_ssize_t FW, Py_ssize_t S, Py_ssize_t P,
    Py_ssize_t OH, Py_ssize_t OW,
    floating* col,              # OUT (C*FH*FW, OH*OW) the image's columns, rows ld apart
    Py_ssize_t ld,
) noexcept nogil:
    cdef Py_ssize_t c, ky, kx, oy, ox, iy, ox0, ox1
    cdef floating* dst
    cdef const floating* src
    for c in range(C):
        for ky in range(FH):
            for kx in range(FW):
                # a filter wider than the image (over the padding) can leave no output
                # inside: ox0 then lies past OW, and the zeros below must stop at OW
                ox0 = min(_first_inside(kx, S, P), OW)
                ox1 = _end_inside(kx, S, P, W, OW)
                if ox1 < ox0:
                    ox1 = ox0
                for oy in range(OH):
                    dst = col + ((c * FH + ky) * FW + kx) * ld + oy * OW
                    iy = oy * S + ky - P
                    if iy < 0 or iy >= H:
                        memset(dst, 0, OW * sizeof(floating))
                        continue
                    src = x + (c * H + iy) * W  # row iy; output ox reads pixel ox*S + kx - P
                    for ox in range(ox0):
                        dst[ox] = 0
                    if S == 1 and ox1 > ox0:
                        memcpy(dst + ox0, src + ox0 + kx - P, (ox1 - ox0) * sizeof(floating))
                    else:
                        for ox in range(ox0, ox1):
                            dst[ox] = src[ox * S + kx - P]
                    for ox in range(ox1, OW):
                        dst[ox] = 0


cdef void _fold(
    const floating* col,        # IN (C*FH*FW, OH*OW) the image's columns, rows ld apart
    Py_ssize_t ld,
    Py_ssize_t C, Py_ssize_t H, Py_ssize_t W,
    Py_ssize_t FH, Py_ssize_t FW, Py_ssize_t S, Py_ssize_t P,
    Py_ssize_t OH, Py_ssize_t OW,
    floating* img,              # OUT (C, H, W) one image, overwritten
) noexcept nogil:
    cdef Py_ssize_t c, ky, kx, oy, ox, iy, ox0, ox1
    cdef const floating* src
    cdef floating* dst
    memset(img, 0, C * H * W * sizeof(floating))
    for c in range(C):
        for ky in range(FH):  # (ky, kx) outermost: each pixel's sum in the book's order
            for kx in range(FW):
                ox0 = _first_inside(kx, S, P)
                ox1 = _end_inside(kx, S, P, W, OW)
                for oy in range(OH):
                    iy = oy * S + ky - P
                    if iy < 0 or iy >= H:
                        continue
                    src = col + ((c * FH + ky) * FW + kx) * ld + oy * OW
                    dst = img + (c * H + iy) * W
                    for ox in range(ox0, ox1):
                        dst[ox * S + kx - P] += src[ox]


cdef void _check_geometry(tuple x_shape, Py_ssize_t FH, Py_ssize_t FW, Py_ssize_t S,
                          Py_ssize_t P, Py_ssize_t OH, Py_ssize_t OW) except *:
    cdef Py_ssize_t H = x_shape[2], W = x_shape[3]
    if FH < 1 or FW < 1 or S < 1 or P < 0 or OH < 1 or OW < 1:
        raise ValueError(f"bad geometry: filter {FH}x{FW}, stride {S}, pad {P}, out {OH}x{OW}")
    if (OH - 1) * S + FH > H + 2 * P or (OW - 1) * S + FW > W + 2 * P:
        raise ValueError(f"windows of {FH}x{FW}, stride {S}, pad {P} do not give {OH}x{OW} "
                         f"outputs on a {H}x{W} input")


def unfold(
    const floating[:, :, :, ::1] x,     # IN (N, C, H, W)
    Py_ssize_t FH, Py_ssize_t FW, Py_ssize_t S, Py_ssize_t P,
    floating[:, ::1] col,               # OUT (C*FH*FW, N*OH*OW)
    Py_ssize_t OH, Py_ssize_t OW,
    int n_threads=1,
):
    """Every FH x FW window (stride S, zero padding P) of the batch as a column of
    ``col``, in (n, oy, ox) order: the book's ``im2col`` transposed."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t n, P_out = OH * OW
    _check_geometry((N, C, H, W), FH, FW, S, P, OH, OW)
    if col.shape[0] != C * FH * FW or col.shape[1] != N * P_out:
        raise ValueError(f"unfold: col has shape {tuple(col.shape)[:2]}, "
                         f"expected {(C * FH * FW, N * P_out)}")
    if N == 0:
        return
    for n in prange(N, nogil=True, schedule="static", num_threads=max(n_threads, 1)):
        _unfold(&x[n, 0, 0, 0], C, H, W, FH, FW, S, P, OH, OW, &col[0, 0] + n * P_out,
                N * P_out)


def fold(
    const floating[:, ::1] col,         # IN (C*FH*FW, N*OH*OW)
    Py_ssize_t FH, Py_ssize_t FW, Py_ssize_t S, Py_ssize_t P,
    floating[:, :, :, ::1] img,         # OUT (N, C, H, W), overwritten
    Py_ssize_t OH, Py_ssize_t OW,
    int n_threads=1,
):
    """The adjoint of ``unfold``: every column added back into its window of ``img``."""
    cdef Py_ssize_t N = img.shape[0], C = img.shape[1], H = img.shape[2], W = img.shape[3]
    cdef Py_ssize_t n, P_out = OH * OW
    _check_geometry((N, C, H, W), FH, FW, S, P, OH, OW)
    if col.shape[0] != C * FH * FW or col.shape[1] != N * P_out:
        raise ValueError(f"fold: col has shape {tuple(col.shape)[:2]}, "
                         f"expected {(C * FH * FW, N * P_out)}")
    if N == 0:
        return
    for n in prange(N, nogil=True, schedule="static", num_threads=max(n_threads, 1)):
        _fold(&col[0, 0] + n * P_out, N * P_out, C, H, W, FH, FW, S, P, OH, OW,
              &img[n, 0, 0, 0])


# -- between the product's layout (FN, N*OH*OW) and the images' (N, FN, OH*OW) -----------

def images_from_product(
    const floating[:, ::1] prod,        # IN (FN, N*P): the product W @ col
    const floating[::1] b,              # IN (FN,)
    floating[:, :, ::1] out,            # OUT (N, FN, P): the images, bias added
    int n_threads=1,
):
    """``out[n, f] = prod[f, n*P:(n+1)*P] + b[f]``: the product's rows cut into images."""
    cdef Py_ssize_t N = out.shape[0], FN = out.shape[1], P_out = out.shape[2], n, f, p
    cdef const floating* src
    cdef floating* dst
    cdef floating bias
    if prod.shape[0] != FN or prod.shape[1] != N * P_out or b.shape[0] != FN:
        raise ValueError(f"images_from_product: prod {tuple(prod.shape)[:2]}, b "
                         f"{b.shape[0]} do not match out {tuple(out.shape)[:3]}")
    for n in prange(N, nogil=True, schedule="static", num_threads=max(n_threads, 1)):
        for f in range(FN):
            src = &prod[f, 0] + n * P_out
            dst = &out[n, f, 0]
            bias = b[f]
            for p in range(P_out):
                dst[p] = src[p] + bias


def product_from_images(
    const floating[:, :, ::1] dout,     # IN (N, FN, P): the output's gradient
    floating[:, ::1] prod,              # OUT (FN, N*P): it in the product's layout
    floating[::1] db,                   # OUT (FN,): its sum over images and positions
):
    """The inverse cut, for the backward products, and ``db`` from the same pass."""
    cdef Py_ssize_t N = dout.shape[0], FN = dout.shape[1], P_out = dout.shape[2], n, f, p
    cdef const floating* src
    cdef floating* dst
    cdef double total
    if prod.shape[0] != FN or prod.shape[1] != N * P_out or db.shape[0] != FN:
        raise ValueError(f"product_from_images: prod {tuple(prod.shape)[:2]}, db "
                         f"{db.shape[0]} do not match dout {tuple(dout.shape)[:3]}")
    with nogil:
        for f in range(FN):
            total = 0  # in double: a float32 sum of N*P terms would lose digits
            for n in range(N):
                src = &dout[n, f, 0]
                dst = &prod[f, 0] + n * P_out
                for p in range(P_out):
                    dst[p] = src[p]
                    total = total + src[p]
            db[f] = <floating>total


# -- the book's layout: one row per window ---------------------------------------------

cdef void _im2col(
    const floating* x,          # IN (C, H, W) one image
    Py_ssize_t C, Py_ssize_t H, Py_ssize_t W,
    Py_ssize_t FH, Py_ssize_t FW, Py_ssize_t S, Py_ssize_t P,
    Py_ssize_t OH, Py_ssize_t OW,
    floating* col,              # OUT (OH*OW, C*FH*FW): the image's rows of the book's col
) noexcept nogil:
    cdef Py_ssize_t c, ky, kx, oy, ox, iy, ix
    cdef floating* row
    for oy in range(OH):
        for ox in range(OW):
            row = col + (oy * OW + ox) * C * FH * FW
            for c in range(C):
                for ky in range(FH):
                    iy = oy * S + ky - P
                    for kx in range(FW):
                        ix = ox * S + kx - P
                        if iy < 0 or iy >= H or ix < 0 or ix >= W:
                            row[0] = 0
                        else:
                            row[0] = x[(c * H + iy) * W + ix]
                        row += 1


cdef void _col2im(
    const floating* col,        # IN (OH*OW, C*FH*FW): the image's rows
    Py_ssize_t C, Py_ssize_t H, Py_ssize_t W,
    Py_ssize_t FH, Py_ssize_t FW, Py_ssize_t S, Py_ssize_t P,
    Py_ssize_t OH, Py_ssize_t OW,
    floating* img,              # OUT (C, H, W) one image, overwritten
) noexcept nogil:
    cdef Py_ssize_t c, ky, kx, oy, ox, iy, ix
    cdef const floating* row
    memset(img, 0, C * H * W * sizeof(floating))
    # windows from the last to the first: a pixel then receives its contributions
    # in the order of their offsets (ky, kx), the order of the book's col2im
    for oy in range(OH - 1, -1, -1):
        for ox in range(OW - 1, -1, -1):
            row = col + (oy * OW + ox) * C * FH * FW
            for c in range(C):
                for ky in range(FH):
                    iy = oy * S + ky - P
                    for kx in range(FW):
                        ix = ox * S + kx - P
                        if iy >= 0 and iy < H and ix >= 0 and ix < W:
                            img[(c * H + iy) * W + ix] += row[0]
                        row += 1


def im2col(
    const floating[:, :, :, ::1] x,     # IN (N, C, H, W)
    Py_ssize_t FH, Py_ssize_t FW, Py_ssize_t S, Py_ssize_t P,
    floating[:, ::1] col,               # OUT (N*OH*OW, C*FH*FW)
    Py_ssize_t OH, Py_ssize_t OW,
    int n_threads=1,
):
    """The book's ``im2col`` into ``col``."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t n
    _check_geometry((N, C, H, W), FH, FW, S, P, OH, OW)
    if col.shape[0] != N * OH * OW or col.shape[1] != C * FH * FW:
        raise ValueError(f"im2col: col has shape {tuple(col.shape)[:2]}, "
                         f"expected {(N * OH * OW, C * FH * FW)}")
    if N == 0:
        return
    for n in prange(N, nogil=True, schedule="static", num_threads=max(n_threads, 1)):
        _im2col(&x[n, 0, 0, 0], C, H, W, FH, FW, S, P, OH, OW, &col[n * OH * OW, 0])


def col2im(
    const floating[:, ::1] col,         # IN (N*OH*OW, C*FH*FW)
    Py_ssize_t FH, Py_ssize_t FW, Py_ssize_t S, Py_ssize_t P,
    floating[:, :, :, ::1] img,         # OUT (N, C, H, W), overwritten
    Py_ssize_t OH, Py_ssize_t OW,
    int n_threads=1,
):
    """The book's ``col2im`` into ``img`` (the padding dropped)."""
    cdef Py_ssize_t N = img.shape[0], C = img.shape[1], H = img.shape[2], W = img.shape[3]
    cdef Py_ssize_t n
    _check_geometry((N, C, H, W), FH, FW, S, P, OH, OW)
    if col.shape[0] != N * OH * OW or col.shape[1] != C * FH * FW:
        raise ValueError(f"col2im: col has shape {tuple(col.shape)[:2]}, "
                         f"expected {(N * OH * OW, C * FH * FW)}")
    if N == 0:
        return
    for n in prange(N, nogil=True, schedule="static", num_threads=max(n_threads, 1)):
        _col2im(&col[n * OH * OW, 0], C, H, W, FH, FW, S, P, OH, OW, &img[n, 0, 0, 0])


# -- max pooling -------------------------------------------------------------------------

cdef extern from "_pool.h":  # branch-free selects and the 2 x 2 rows, shared with _convblock
    double mdl_select_f64(int c, double a, double b) noexcept nogil
    float mdl_select_f32(int c, float a, float b) noexcept nogil
    Py_ssize_t mdl_select_index(int c, Py_ssize_t a, Py_ssize_t b) noexcept nogil
    int mdl_pool2x2_row_f64(const double* r0, const double* r1, Py_ssize_t OW, double* out,
                            uint8_t* where) noexcept nogil
    int mdl_pool2x2_row_f32(const float* r0, const float* r1, Py_ssize_t OW, float* out,
                            uint8_t* where) noexcept nogil
    int mdl_unpool2x2_row_f64(const double* dout, const uint8_t* where, Py_ssize_t OW,
                              double* r0, double* r1) noexcept nogil
    int mdl_unpool2x2_row_f32(const float* dout, const uint8_t* where, Py_ssize_t OW,
                              float* r0, float* r1) noexcept nogil


cdef inline floating _select(int c, floating a, floating b) noexcept nogil:
    if floating is float:
        return mdl_select_f32(c, a, b)
    else:
        return mdl_select_f64(c, a, b)


cdef void _maxpool_window_nan(
    const floating* x, Py_ssize_t H, Py_ssize_t W, Py_ssize_t iy0, Py_ssize_t ix0,
    Py_ssize_t PH, Py_ssize_t PW, floating* m_out, Py_ssize_t* best_out,
) noexcept nogil:
    """A window that holds a NaN: np.max gives NaN, np.argmax the first NaN."""
    cdef Py_ssize_t ky, kx, iy, ix
    for ky in range(PH):
        iy = iy0 + ky
        for kx in range(PW):
            ix = ix0 + kx
            if iy >= 0 and iy < H and ix >= 0 and ix < W:
                if x[iy * W + ix] != x[iy * W + ix]:
                    m_out[0] = x[iy * W + ix]
                    best_out[0] = ky * PW + kx
                    return


cdef void _maxpool_forward(
    const floating* x,          # IN (C, H, W) one image
    Py_ssize_t C, Py_ssize_t H, Py_ssize_t W,
    Py_ssize_t PH, Py_ssize_t PW, Py_ssize_t S, Py_ssize_t P,
    Py_ssize_t OH, Py_ssize_t OW,
    floating* out,              # OUT (C, OH, OW)
    int64_t* arg,               # OUT (OH, OW, C): the book's arg_max rows for this image
) noexcept nogil:
    cdef Py_ssize_t c, ky, kx, oy, ox, iy, ix, iy0, ix0, j, best
    cdef floating m = 0, v
    cdef const floating* xc
    cdef int gt, nan
    for c in range(C):
        xc = x + c * H * W
        for oy in range(OH):
            iy0 = oy * S - P
            for ox in range(OW):
                ix0 = ox * S - P
                # the first maximum (a later value must be larger), as np.argmax;
                # the zero padding takes part, as in the book (its im2col pads zeros)
                j = 0
                best = 0
                nan = 0
                for ky in range(PH):
                    iy = iy0 + ky
                    for kx in range(PW):
                        ix = ix0 + kx
                        if P == 0 or (iy >= 0 and iy < H and ix >= 0 and ix < W):
                            v = xc[iy * W + ix]
                        else:
                            v = 0
                        if j == 0:
                            m = v
                        nan = nan | (v != v)
                        gt = v > m
                        best = mdl_select_index(gt, j, best)
                        m = _select(gt, v, m)
                        j += 1
                if nan:  # rare: NaN compares false, so the selects above skipped it
                    _maxpool_window_nan(xc, H, W, iy0, ix0, PH, PW, &m, &best)
                out[(c * OH + oy) * OW + ox] = m
                arg[(oy * OW + ox) * C + c] = best


cdef int _maxpool_backward(
    const floating* dout,       # IN (C, OH, OW) one image
    const int64_t* arg,         # IN (OH, OW, C): window index of each maximum
    Py_ssize_t C, Py_ssize_t H, Py_ssize_t W,
    Py_ssize_t PH, Py_ssize_t PW, Py_ssize_t S, Py_ssize_t P,
    Py_ssize_t OH, Py_ssize_t OW,
    floating* dx,               # OUT (C, H, W), overwritten
) noexcept nogil:
    """Returns 1 if ``arg`` held an index outside the window (skipped), else 0."""
    cdef Py_ssize_t c, oy, ox, iy, ix
    cdef int64_t j
    cdef int bad = 0
    memset(dx, 0, C * H * W * sizeof(floating))
    for c in range(C):
        # windows from the last to the first: the book's order of addition (see _col2im)
        for oy in range(OH - 1, -1, -1):
            for ox in range(OW - 1, -1, -1):
                j = arg[(oy * OW + ox) * C + c]
                if j < 0 or j >= PH * PW:  # a student may have set arg_max
                    bad = 1
                    continue
                iy = oy * S + j // PW - P
                ix = ox * S + j % PW - P
                if iy >= 0 and iy < H and ix >= 0 and ix < W:
                    dx[(c * H + iy) * W + ix] += dout[(c * OH + oy) * OW + ox]
    return bad


def maxpool_forward(
    const floating[:, :, :, ::1] x,     # IN (N, C, H, W)
    Py_ssize_t PH, Py_ssize_t PW, Py_ssize_t S, Py_ssize_t P,
    floating[:, :, :, ::1] out,         # OUT (N, C, OH, OW)
    int64_t[::1] arg,                   # OUT (N*OH*OW*C,) the book's arg_max
    int n_threads=1,
):
    """Max over PH x PW windows (stride S, zero padding P), and where each maximum is."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t OH = out.shape[2], OW = out.shape[3], n
    _check_geometry((N, C, H, W), PH, PW, S, P, OH, OW)
    if out.shape[0] != N or out.shape[1] != C or arg.shape[0] != N * OH * OW * C:
        raise ValueError("maxpool_forward: out or arg does not match the input")
    if N == 0:
        return
    for n in prange(N, nogil=True, schedule="static", num_threads=max(n_threads, 1)):
        _maxpool_forward(&x[n, 0, 0, 0], C, H, W, PH, PW, S, P, OH, OW, &out[n, 0, 0, 0],
                         &arg[n * OH * OW * C])


def maxpool_backward(
    const floating[:, :, :, ::1] dout,  # IN (N, C, OH, OW)
    const int64_t[::1] arg,             # IN (N*OH*OW*C,) from maxpool_forward, in [0, PH*PW)
    Py_ssize_t PH, Py_ssize_t PW, Py_ssize_t S, Py_ssize_t P,
    floating[:, :, :, ::1] dx,          # OUT (N, C, H, W), overwritten
    int n_threads=1,
):
    """Each window's gradient added to the pixel that was its maximum."""
    cdef Py_ssize_t N = dx.shape[0], C = dx.shape[1], H = dx.shape[2], W = dx.shape[3]
    cdef Py_ssize_t OH = dout.shape[2], OW = dout.shape[3], n
    _check_geometry((N, C, H, W), PH, PW, S, P, OH, OW)
    if dout.shape[0] != N or dout.shape[1] != C or arg.shape[0] != N * OH * OW * C:
        raise ValueError("maxpool_backward: dout or arg does not match dx")
    if N == 0:
        return
    # arg comes from maxpool_forward (the layer keeps it), but a student may have set
    # it: the kernels skip an index outside the window (it would write outside dx)
    cdef int bad = 0
    for n in prange(N, nogil=True, schedule="static", num_threads=max(n_threads, 1)):
        bad |= _maxpool_backward(&dout[n, 0, 0, 0], &arg[n * OH * OW * C], C, H, W, PH, PW,
                                 S, P, OH, OW, &dx[n, 0, 0, 0])
    if bad:
        raise ValueError(f"maxpool_backward: arg_max holds indices outside [0, {PH * PW})")


# -- 2 x 2 max pooling, stride 2 (the networks' pooling), with a compact argmax ---------
#
# The book keeps each window's argmax as int64 in (N, out_h, out_w, C) order. Written
# from a pass over the images (channel by channel), that is one 8-byte store C entries
# apart per window; here ``where`` is one byte per window in the images' own order
# (N, C, out_h, out_w), written beside the maxima: a sixteenth of the book's bytes, and
# the backward pass reads it in the order it writes. ``minidl.layers.Pooling`` turns it
# into the book's ``arg_max`` when someone reads that.

cdef void _maxpool2x2_forward(
    const floating* x,          # IN (C, H, W) one image, H >= 2*OH, W >= 2*OW
    Py_ssize_t C, Py_ssize_t H, Py_ssize_t W, Py_ssize_t OH, Py_ssize_t OW,
    floating* out,              # OUT (C, OH, OW)
    uint8_t* where,             # OUT (C, OH, OW): 0..3, the maximum's cell in its window
) noexcept nogil:
    cdef Py_ssize_t c, oy, ox
    cdef const floating* r0
    cdef floating* o
    cdef uint8_t* w
    cdef Py_ssize_t best
    cdef int nan
    for c in range(C):
        for oy in range(OH):
            r0 = x + (c * H + 2 * oy) * W
            o = out + (c * OH + oy) * OW
            w = where + (c * OH + oy) * OW
            if floating is float:
                nan = mdl_pool2x2_row_f32(r0, r0 + W, OW, o, w)
            else:
                nan = mdl_pool2x2_row_f64(r0, r0 + W, OW, o, w)
            if nan:  # rare: NaN compares false, so the row's maxima skipped it
                for ox in range(OW):
                    best = w[ox]
                    _maxpool_window_nan(x + c * H * W, H, W, 2 * oy, 2 * ox, 2, 2,
                                        &o[ox], &best)
                    w[ox] = <uint8_t>best


cdef int _maxpool2x2_backward(
    const floating* dout,       # IN (C, OH, OW) one image
    const uint8_t* where,       # IN (C, OH, OW) from _maxpool2x2_forward
    Py_ssize_t C, Py_ssize_t H, Py_ssize_t W, Py_ssize_t OH, Py_ssize_t OW,
    floating* dx,               # OUT (C, H, W), overwritten
) noexcept nogil:
    """Returns nonzero if ``where`` held an index outside 0..3."""
    cdef Py_ssize_t c, oy
    cdef floating* r0
    cdef int bad = 0
    for c in range(C):
        for oy in range(OH):
            r0 = dx + (c * H + 2 * oy) * W
            if floating is float:
                bad |= mdl_unpool2x2_row_f32(dout + (c * OH + oy) * OW,
                                             where + (c * OH + oy) * OW, OW, r0, r0 + W)
            else:
                bad |= mdl_unpool2x2_row_f64(dout + (c * OH + oy) * OW,
                                             where + (c * OH + oy) * OW, OW, r0, r0 + W)
            if W > 2 * OW:  # an odd width: the last column is in no window
                r0[W - 1] = 0
                r0[2 * W - 1] = 0
        if H > 2 * OH:  # an odd height: the last row is in no window
            memset(dx + (c * H + H - 1) * W, 0, W * sizeof(floating))
    return bad


cdef void _check_2x2(str name, tuple images, str other, tuple other_shape,
                     tuple where_shape) except *:
    """The 2 x 2 kernels' buffers: ``other`` (the pooled values or their gradient) and
    ``where`` of shape (N, C, H // 2, W // 2) for the images (N, C, H, W)."""
    cdef Py_ssize_t N = images[0], C = images[1], H = images[2], W = images[3]
    _check_geometry(images, 2, 2, 2, 0, H // 2, W // 2)
    if other_shape != (N, C, H // 2, W // 2) or where_shape != (N, C, H // 2, W // 2):
        raise ValueError(f"{name}: {other} {other_shape} and where {where_shape} must be "
                         f"{(N, C, H // 2, W // 2)}")


def maxpool2x2_forward(
    const floating[:, :, :, ::1] x,     # IN (N, C, H, W)
    floating[:, :, :, ::1] out,         # OUT (N, C, H // 2, W // 2)
    uint8_t[:, :, :, ::1] where,        # OUT (N, C, H // 2, W // 2)
    int n_threads=1,
):
    """Max over 2 x 2 windows, stride 2, no padding, and where each maximum is in its
    window (0..3, row by row): ``maxpool_forward(x, 2, 2, 2, 0, ...)`` with the argmax
    in the images' order, one byte per window."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t OH = H // 2, OW = W // 2, n
    _check_2x2("maxpool2x2_forward", (N, C, H, W), "out", tuple(out.shape)[:4],
               tuple(where.shape)[:4])
    if N == 0:
        return
    for n in prange(N, nogil=True, schedule="static", num_threads=max(n_threads, 1)):
        _maxpool2x2_forward(&x[n, 0, 0, 0], C, H, W, OH, OW, &out[n, 0, 0, 0],
                            &where[n, 0, 0, 0])


def maxpool2x2_backward(
    const floating[:, :, :, ::1] dout,  # IN (N, C, OH, OW)
    const uint8_t[:, :, :, ::1] where,  # IN (N, C, OH, OW) from maxpool2x2_forward
    floating[:, :, :, ::1] dx,          # OUT (N, C, H, W), H // 2 == OH, W // 2 == OW
    int n_threads=1,
):
    """Each window's gradient to the pixel ``where`` names, zeros elsewhere."""
    cdef Py_ssize_t N = dx.shape[0], C = dx.shape[1], H = dx.shape[2], W = dx.shape[3]
    cdef Py_ssize_t OH = H // 2, OW = W // 2, n
    _check_2x2("maxpool2x2_backward", (N, C, H, W), "dout", tuple(dout.shape)[:4],
               tuple(where.shape)[:4])
    if N == 0:
        return
    cdef int bad = 0
    for n in prange(N, nogil=True, schedule="static", num_threads=max(n_threads, 1)):
        bad |= _maxpool2x2_backward(&dout[n, 0, 0, 0], &where[n, 0, 0, 0], C, H, W, OH, OW,
                                    &dx[n, 0, 0, 0])
    if bad:
        raise ValueError("maxpool2x2_backward: where holds indices outside [0, 4)")
