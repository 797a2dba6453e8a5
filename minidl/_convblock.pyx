# cython: language_level=3
"""minidl's kernels for the networks' block: a convolution, its ReLU and a 2 x 2 max
pooling (stride 2, no padding), as ``SimpleConvNet`` and ``DeepConvNet`` stack them.

Design
------
Layer by layer, the block streams the convolution's whole output through memory
several times (for ``SimpleConvNet``'s batch of 100, 14 MB in float64, past the
caches). Forward, the convolution writes its images (``_conv.images_from_product``),
the ReLU reads them and writes its output, the pooling reads that;
``product_relu_pool`` takes a group's product rows (in cache) to the ReLU's output,
its 2 x 2 maxima and their cells (``where``, the pooling's one-byte record,
``_conv.maxpool2x2_forward``) two rows at a time, so that the output is written
once and the pooling reads it from L1. Backward, the pooling writes its gradient
(zeros but for each window's maximum), the ReLU reads it with its output and
writes its own, and the convolution copies that into its product's layout
(``_conv.product_from_images``), summing ``db`` on the way.
``unpool_relu_product`` does the three at once for a group of images: each
window's gradient goes to the cell ``where`` names, is zeroed where the ReLU's
output is <= 0, and is written straight into the product's layout (FN, n*H*W),
which ``minidl._conv_cython`` then multiplies for ``dW`` and the input's gradient
as before.

Exactness: the numbers are those of the three layers' kernels, bit for bit
(tests hold it). Forward, the same sum (product + bias), the same ReLU test and
the same pooling rows (``_pool.h``). Backward, the cells are the ones ``_conv.maxpool2x2_backward`` writes,
masked as ``_core.relu_backward`` masks (``0 if out <= 0 else d``), and ``db``
adds the same values in the same order as ``product_from_images`` (row by row of
each image, in double): it skips only the cells that hold +0, and adding +0 to
a sum that starts at +0 never changes it (such a sum is never -0).

Checked as ``minidl._conv``'s kernels: the ``def`` wrapper checks the buffers
against each other (the module runs without bounds checks), ``# IN`` is read,
``# OUT`` written and allocated by the caller.
"""

from cython.parallel cimport prange
from libc.stdint cimport uint8_t

import numpy as np

ctypedef fused floating:
    float
    double


cdef extern from "_pool.h":  # branch-free selects and the 2 x 2 pooling's rows (_conv's)
    int mdl_pool2x2_row_f64(const double* r0, const double* r1, Py_ssize_t OW, double* out,
                            uint8_t* where) noexcept nogil
    int mdl_pool2x2_row_f32(const float* r0, const float* r1, Py_ssize_t OW, float* out,
                            uint8_t* where) noexcept nogil


cdef extern from *:
    """
    /* One row of 2 x 2 windows: the gradient's two rows `r` (2*OW apart) in the
     * product's layout from the windows' gradients `dout`, the maxima's cells `where`
     * (0..3) and the ReLU's output on the same two rows `o`: zeros, then each window's
     * gradient on its maximum's cell, zeroed where the ReLU's output is <= 0 (the cell
     * found by address, not by selects). `total` gets the two rows' values in row
     * order, as the layer-by-layer pass adds them: each window gives one value to one
     * of the rows, listed in that row's list as it goes (OW <= 64; wider rows add
     * every cell, the +0s included, which changes nothing). Returns nonzero if an
     * index was not in 0..3 (its window is then treated as 3). */
    #define MDL_UNPOOL_RELU_ROW(NAME, T, SELECT)                                        \
    static inline int NAME(const T* dout, const uint8_t* where, const T* o,             \
                           Py_ssize_t OW, T* r, double* total) {                        \
        int bad = 0;                                                                    \
        T list0[64], list1[64];                                                         \
        Py_ssize_t k0 = 0, k1 = 0, W = 2 * OW;                                          \
        memset(r, 0, 2 * W * sizeof(T));                                                \
        for (Py_ssize_t ox = 0; ox < OW; ox++) {                                        \
            int j = where[ox];                                                          \
            bad |= j > 3;                                                               \
            j &= 3;                                                                     \
            Py_ssize_t cell = (j >> 1) * W + 2 * ox + (j & 1);                          \
            T v = SELECT(o[cell] <= 0, 0, dout[ox]);                                    \
            r[cell] = v;                                                                \
            if (OW <= 64) {                                                             \
                list0[k0] = v;                                                          \
                list1[k1] = v;                                                          \
                k0 += j < 2;                                                            \
                k1 += j >= 2;                                                           \
            }                                                                           \
        }                                                                               \
        double s = *total;                                                              \
        if (OW <= 64) {                                                                 \
            for (Py_ssize_t i = 0; i < k0; i++) s += list0[i];                          \
            for (Py_ssize_t i = 0; i < k1; i++) s += list1[i];                          \
        } else {                                                                        \
            for (Py_ssize_t c = 0; c < 2 * W; c++) s += r[c];                           \
        }                                                                               \
        *total = s;                                                                     \
        return bad;                                                                     \
    }
    MDL_UNPOOL_RELU_ROW(mdl_unpool_relu_row_f64, double, mdl_select_f64)
    MDL_UNPOOL_RELU_ROW(mdl_unpool_relu_row_f32, float, mdl_select_f32)
    """
    int mdl_unpool_relu_row_f64(const double* dout, const uint8_t* where, const double* o,
                                Py_ssize_t OW, double* r, double* total) noexcept nogil
    int mdl_unpool_relu_row_f32(const float* dout, const uint8_t* where, const float* o,
                                Py_ssize_t OW, float* r, double* total) noexcept nogil


# -- forward: the product's rows -> the ReLU's output images, pooled ----------------------

cdef void _relu_pool_plane(
    const floating* prod,       # IN (H*W) one image's plane of one filter, product's row
    floating bias,
    Py_ssize_t OH, Py_ssize_t OW,
    floating* out,              # OUT (H, W): ReLU(prod + bias), the ReLU layer's output
    floating* pooled,           # OUT (OH, OW): each 2 x 2 window's maximum
    uint8_t* where,             # OUT (OH, OW): its cell, 0..3
) noexcept nogil:
    cdef Py_ssize_t oy, c, ox, k, W = 2 * OW
    cdef floating v
    cdef const floating* src
    cdef floating* dst
    cdef int nan
    for oy in range(OH):  # two rows: ReLU'd, then pooled while they are in L1
        src = prod + 2 * oy * W
        dst = out + 2 * oy * W
        for c in range(2 * W):
            v = src[c] + bias  # images_from_product's sum, then _core.relu_forward's test
            dst[c] = 0 if v <= 0 else v
        if floating is float:
            nan = mdl_pool2x2_row_f32(dst, dst + W, OW, pooled + oy * OW, where + oy * OW)
        else:
            nan = mdl_pool2x2_row_f64(dst, dst + W, OW, pooled + oy * OW, where + oy * OW)
        if nan:  # rare: a window with a NaN gives its first NaN (np.max, np.argmax)
            for ox in range(OW):
                for k in range(4):
                    v = dst[(k >> 1) * W + 2 * ox + (k & 1)]
                    if v != v:
                        pooled[oy * OW + ox] = v
                        where[oy * OW + ox] = <uint8_t>k
                        break


def product_relu_pool(
    const floating[:, ::1] prod,        # IN (FN, N*H*W): the product W @ col
    const floating[::1] b,              # IN (FN,)
    floating[:, :, :, ::1] out,         # OUT (N, FN, H, W): the ReLU's output, H, W even
    floating[:, :, :, ::1] pooled,      # OUT (N, FN, H // 2, W // 2)
    uint8_t[:, :, :, ::1] where,        # OUT (N, FN, H // 2, W // 2)
    int n_threads=1,
):
    """``maxpool2x2_forward(relu_forward(images_from_product(prod, b)))`` in one pass:
    the ReLU's output (the images, bias added, negatives zeroed), its 2 x 2 maxima and
    their cells, the same numbers as the three kernels."""
    cdef Py_ssize_t N = out.shape[0], FN = out.shape[1], H = out.shape[2], W = out.shape[3]
    cdef Py_ssize_t OH = H // 2, OW = W // 2, P_out = H * W, n, f
    if (H % 2 or W % 2 or prod.shape[0] != FN or prod.shape[1] != N * P_out
            or b.shape[0] != FN or tuple(pooled.shape)[:4] != (N, FN, OH, OW)
            or tuple(where.shape)[:4] != (N, FN, OH, OW)):
        raise ValueError(f"product_relu_pool: prod {tuple(prod.shape)[:2]}, b {b.shape[0]}, "
                         f"pooled {tuple(pooled.shape)[:4]}, where {tuple(where.shape)[:4]} "
                         f"do not match out {(N, FN, H, W)} (of even sizes)")
    for n in prange(N, nogil=True, schedule="static", num_threads=max(n_threads, 1)):
        for f in range(FN):
            _relu_pool_plane(&prod[f, 0] + n * P_out, b[f], OH, OW, &out[n, f, 0, 0],
                             &pooled[n, f, 0, 0], &where[n, f, 0, 0])


# -- backward: the pooling's gradient -> the product's layout ----------------------------

cdef int _unpool_relu_plane(
    const floating* dout,       # IN (OH, OW) one image's windows of one filter
    const uint8_t* where,       # IN (OH, OW)
    const floating* out,        # IN (2*OH, 2*OW) the ReLU's output there
    Py_ssize_t OH, Py_ssize_t OW,
    floating* prod,             # OUT (2*OH * 2*OW) the plane in the product's row
    double* total,              # IN/OUT the filter's running sum
) noexcept nogil:
    cdef Py_ssize_t oy, W = 2 * OW
    cdef int bad = 0
    for oy in range(OH):
        if floating is float:
            bad |= mdl_unpool_relu_row_f32(dout + oy * OW, where + oy * OW, out + 2 * oy * W,
                                           OW, prod + 2 * oy * W, total)
        else:
            bad |= mdl_unpool_relu_row_f64(dout + oy * OW, where + oy * OW, out + 2 * oy * W,
                                           OW, prod + 2 * oy * W, total)
    return bad


def unpool_relu_product(
    const floating[:, :, :, ::1] dout,  # IN (N, FN, OH, OW): the pooling's output gradient
    const uint8_t[:, :, :, ::1] where,  # IN (N, FN, OH, OW): its maxima's cells, 0..3
    const floating[:, :, :, ::1] out,   # IN (N, FN, 2*OH, 2*OW): the ReLU's output
    floating[:, ::1] prod,              # OUT (FN, N*4*OH*OW): the gradient, product layout
    floating[::1] db,                   # OUT (FN,): its sum over images and positions
    int n_threads=1,
):
    """``_conv.product_from_images`` of ``relu_backward(maxpool2x2_backward(dout,
    where), out)``, in one pass: the block's gradient at the convolution's output, in
    the layout of its backward products, and ``db``."""
    cdef Py_ssize_t N = dout.shape[0], FN = dout.shape[1], OH = dout.shape[2]
    cdef Py_ssize_t OW = dout.shape[3], P_out = 4 * OH * OW, n, f, part, f0, f1
    cdef int parts = max(1, min(n_threads, FN))
    cdef int bad = 0
    cdef double[::1] total
    if (tuple(where.shape)[:4] != (N, FN, OH, OW)
            or tuple(out.shape)[:4] != (N, FN, 2 * OH, 2 * OW)
            or prod.shape[0] != FN or prod.shape[1] != N * P_out or db.shape[0] != FN):
        raise ValueError(f"unpool_relu_product: where {tuple(where.shape)[:4]}, out "
                         f"{tuple(out.shape)[:4]}, prod {tuple(prod.shape)[:2]}, db "
                         f"{db.shape[0]} do not match dout {(N, FN, OH, OW)}")
    total = np.zeros(FN)  # each filter's sum, in double as product_from_images sums
    # image by image (the arrays are read in their order: plane after plane of one
    # filter across the images left the prefetchers a new stream every 4 KB), each
    # thread a share of the filters; a filter's sum still adds its planes in image order
    for part in prange(parts, nogil=True, schedule="static", num_threads=parts):
        f0 = part * FN // parts
        f1 = (part + 1) * FN // parts
        for n in range(N):
            for f in range(f0, f1):
                bad |= _unpool_relu_plane(&dout[n, f, 0, 0], &where[n, f, 0, 0],
                                          &out[n, f, 0, 0], OH, OW, &prod[f, 0] + n * P_out,
                                          &total[f])
    for f in range(FN):
        db[f] = <floating>total[f]
    if bad:
        raise ValueError("unpool_relu_product: where holds indices outside [0, 4)")
