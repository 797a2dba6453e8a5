# cython: language_level=3
"""minidl's kernels for the networks' block: a convolution, its ReLU and a 2 x 2 max
pooling (stride 2, no padding), as ``SimpleConvNet`` and ``DeepConvNet`` stack them.

Design
------
Layer by layer, the backward pass of the block streams the convolution's whole
output through memory four times (for ``SimpleConvNet``'s batch of 100, 14 MB in
float64, past the caches): the pooling writes its gradient (zeros but for each
window's maximum), the ReLU reads it with its output and writes its own, and the
convolution copies that into its product's layout (``_conv.product_from_images``),
summing ``db`` on the way. ``unpool_relu_product`` does the three at once for a
group of images: each window's gradient goes to the cell ``where`` names (the
pooling's one-byte record, ``_conv.maxpool2x2_forward``), is zeroed where the
ReLU's output is <= 0, and is written straight into the product's layout
(FN, n*H*W), which ``minidl._conv_cython`` then multiplies for ``dW`` and the
input's gradient as before.

Exactness: the numbers are those of the three layers' kernels, bit for bit
(tests hold it). The cells are the ones ``_conv.maxpool2x2_backward`` writes,
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


cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>
    /* c ? a : b on the bits (see minidl/_conv.pyx): data-dependent choices as branches
     * are mispredicted on about every other window */
    static inline double mdl_cb_select_f64(int c, double a, double b) {
        uint64_t ua, ub, m = -(uint64_t)(c != 0);
        memcpy(&ua, &a, sizeof ua); memcpy(&ub, &b, sizeof ub);
        ua = (ua & m) | (ub & ~m);
        memcpy(&a, &ua, sizeof a);
        return a;
    }
    static inline float mdl_cb_select_f32(int c, float a, float b) {
        uint32_t ua, ub, m = -(uint32_t)(c != 0);
        memcpy(&ua, &a, sizeof ua); memcpy(&ub, &b, sizeof ub);
        ua = (ua & m) | (ub & ~m);
        memcpy(&a, &ua, sizeof a);
        return a;
    }
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
    MDL_UNPOOL_RELU_ROW(mdl_unpool_relu_row_f64, double, mdl_cb_select_f64)
    MDL_UNPOOL_RELU_ROW(mdl_unpool_relu_row_f32, float, mdl_cb_select_f32)
    """
    int mdl_unpool_relu_row_f64(const double* dout, const uint8_t* where, const double* o,
                                Py_ssize_t OW, double* r, double* total) noexcept nogil
    int mdl_unpool_relu_row_f32(const float* dout, const uint8_t* where, const float* o,
                                Py_ssize_t OW, float* r, double* total) noexcept nogil


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
