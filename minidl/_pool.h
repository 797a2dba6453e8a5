/* minidl/_pool.h: the 2 x 2 max pooling's rows (stride 2), for minidl._conv (the
 * pooling layer) and minidl._convblock (the networks' conv - relu - pool block). */
#ifndef MINIDL_POOL_H
#define MINIDL_POOL_H

#include <stdint.h>
#include <string.h>
/* Py_ssize_t: from Python.h, which Cython's C includes first */

/* Branch-free selects (c ? a : b), on the bits: the comparisons of a max pool are
 * data-dependent, and as branches (which compilers keep for plain conditionals
 * here) they were mispredicted about half the time, which made the 2x2 pool over
 * ReLU outputs four times slower and its backward pass five times slower. */
static inline double mdl_select_f64(int c, double a, double b) {
    uint64_t ua, ub, m = -(uint64_t)(c != 0);
    memcpy(&ua, &a, sizeof ua); memcpy(&ub, &b, sizeof ub);
    ua = (ua & m) | (ub & ~m);
    memcpy(&a, &ua, sizeof a);
    return a;
}
static inline float mdl_select_f32(int c, float a, float b) {
    uint32_t ua, ub, m = -(uint32_t)(c != 0);
    memcpy(&ua, &a, sizeof ua); memcpy(&ub, &b, sizeof ub);
    ua = (ua & m) | (ub & ~m);
    memcpy(&a, &ua, sizeof a);
    return a;
}
static inline Py_ssize_t mdl_select_index(int c, Py_ssize_t a, Py_ssize_t b) {
    return b ^ ((a ^ b) & -(Py_ssize_t)(c != 0));
}
/* One row of 2 x 2 windows (stride 2) of rows r0 and r1: each window's maximum, and
 * where it is (0..3, the window's cells in row order) as one byte. The maximum as
 * `b > m ? b : m` in the cells' order (a max instruction, which keeps m on a tie);
 * its place as the first cell equal to it (the first maximum, as np.argmax), counted
 * from comparisons apart from the maxima's: a compiler that sees one comparison
 * serve both makes it a branch, mispredicted on every other window (twice slower).
 * Returns nonzero if the row held a NaN (the caller redoes those windows). */
#define MDL_POOL2X2_ROW(NAME, T)                                                    \
static inline int NAME(const T* r0, const T* r1, Py_ssize_t OW, T* out,             \
                       uint8_t* where) {                                            \
    int nan = 0;                                                                    \
    for (Py_ssize_t ox = 0; ox < OW; ox++) {                                        \
        T a = r0[2 * ox], b = r0[2 * ox + 1], c = r1[2 * ox], d = r1[2 * ox + 1];   \
        T m = b > a ? b : a;                                                        \
        m = c > m ? c : m;                                                          \
        m = d > m ? d : m;                                                          \
        int past0 = a != m, past1 = past0 & (b != m), past2 = past1 & (c != m);     \
        nan |= (a != a) | (b != b) | (c != c) | (d != d);                           \
        out[ox] = m;                                                                \
        where[ox] = (uint8_t)(past0 + past1 + past2);                               \
    }                                                                               \
    return nan;                                                                     \
}
MDL_POOL2X2_ROW(mdl_pool2x2_row_f64, double)
MDL_POOL2X2_ROW(mdl_pool2x2_row_f32, float)
/* Its backward: each window's four pixels written at once, the gradient on the one
 * `where` names and zeros elsewhere. Returns nonzero if an index was not in 0..3. */
#define MDL_UNPOOL2X2_ROW(NAME, T, SELECT)                                          \
static inline int NAME(const T* dout, const uint8_t* where, Py_ssize_t OW, T* r0,   \
                       T* r1) {                                                     \
    int bad = 0;                                                                    \
    for (Py_ssize_t ox = 0; ox < OW; ox++) {                                        \
        int j = where[ox];                                                          \
        T d = dout[ox];                                                             \
        bad |= j > 3;                                                               \
        r0[2 * ox] = SELECT(j == 0, d, 0);                                          \
        r0[2 * ox + 1] = SELECT(j == 1, d, 0);                                      \
        r1[2 * ox] = SELECT(j == 2, d, 0);                                          \
        r1[2 * ox + 1] = SELECT(j == 3, d, 0);                                      \
    }                                                                               \
    return bad;                                                                     \
}
MDL_UNPOOL2X2_ROW(mdl_unpool2x2_row_f64, double, mdl_select_f64)
MDL_UNPOOL2X2_ROW(mdl_unpool2x2_row_f32, float, mdl_select_f32)

#endif
