/* minidl/_vmath.h: the sigmoid and softmax's exp over arrays, four lanes at a time,
 * for minidl's kernel modules.
 *
 * sigmoid(v) = 1 / (1 + e) for v >= 0 and e / (1 + e) for v < 0, with
 * e = exp(-|v|) <= 1: the two-branch form of _core's scalar _sigmoid, so that
 * exp never overflows. Here exp runs on vectors of four doubles (float32 input
 * is widened): Cody-Waite reduction x = k ln2 + r, |r| <= ln2 / 2, with ln2 split
 * in two so that k * ln2_hi is exact, then Taylor to degree 13 (truncation below
 * 1e-17 relative) and a scale by 2^k built in the exponent bits. The result is
 * within 2 ulp of libm's exp. Lanes where |v| > 708 (where exp(-|v|) leaves the
 * normal range) or v is NaN take the scalar code, so extremes and NaN behave
 * exactly as before.
 *
 * Compiled twice (AVX2+FMA and the baseline ISA) like _sparse.h; the dispatch in
 * minidl_vmath_init follows minidl_sparse_init's level.
 */
#ifndef MINIDL_VMATH_H
#define MINIDL_VMATH_H

#include <math.h>
#include <stdint.h>
#include <string.h>

static inline double mdl_sigmoid_scalar(double v)
{
    double e;
    if (v >= 0)
        return 1 / (1 + exp(-v));
    e = exp(v);
    return e / (1 + e);
}

static void mdl_sigmoid_plain_f64(const double *x, double *out, Py_ssize_t n)
{
    for (Py_ssize_t i = 0; i < n; i++)
        out[i] = mdl_sigmoid_scalar(x[i]);
}

/* float32 in double precision, rounded once, as the vector lanes compute it */
static void mdl_sigmoid_plain_f32(const float *x, float *out, Py_ssize_t n)
{
    for (Py_ssize_t i = 0; i < n; i++)
        out[i] = (float)mdl_sigmoid_scalar(x[i]);
}

/* softmax's shifted exp, as _core's scalar loop computed it (exp in double) */
static void mdl_exp_shifted_plain_f64(const double *x, double m, double *out, Py_ssize_t n)
{
    for (Py_ssize_t i = 0; i < n; i++)
        out[i] = exp(x[i] - m);
}

static void mdl_exp_shifted_plain_f32(const float *x, float m, float *out, Py_ssize_t n)
{
    for (Py_ssize_t i = 0; i < n; i++)
        out[i] = (float)exp((double)(x[i] - m));
}

#if defined(__GNUC__)
typedef double mdl_v4d __attribute__((vector_size(32)));
typedef int64_t mdl_v4l __attribute__((vector_size(32)));
typedef float mdl_v4f __attribute__((vector_size(16)));

/* exp(x) for x in [-708, 0], four lanes. */
#define MDL_DEFINE_VEXP(SUF, ATTR)                                                       \
ATTR static inline mdl_v4d mdl_vexp_##SUF(mdl_v4d x)                                     \
{                                                                                        \
    const double ln2_hi = 6.93147180369123816490e-01, ln2_lo = 1.90821492927058770002e-10; \
    const double shifter = 6755399441055744.0; /* 1.5 * 2^52: adding it rounds to integer */ \
    mdl_v4d kf = (x * 1.44269504088896338700e+00 + shifter) - shifter;                   \
    mdl_v4d r = (x - kf * ln2_hi) - kf * ln2_lo;                                         \
    mdl_v4d p = r * (1.0 / 6227020800.0) + (1.0 / 479001600.0);                           \
    p = p * r + (1.0 / 39916800.0);                                                      \
    p = p * r + (1.0 / 3628800.0);                                                       \
    p = p * r + (1.0 / 362880.0);                                                        \
    p = p * r + (1.0 / 40320.0);                                                         \
    p = p * r + (1.0 / 5040.0);                                                          \
    p = p * r + (1.0 / 720.0);                                                           \
    p = p * r + (1.0 / 120.0);                                                           \
    p = p * r + (1.0 / 24.0);                                                            \
    p = p * r + (1.0 / 6.0);                                                             \
    p = p * r + 0.5;                                                                     \
    p = p * r + 1.0;                                                                     \
    p = p * r + 1.0;                                                                     \
    mdl_v4l bits = (__builtin_convertvector(kf, mdl_v4l) + 1023) << 52;                  \
    mdl_v4d scale;                                                                       \
    memcpy(&scale, &bits, sizeof scale);                                                 \
    return p * scale;                                                                    \
}                                                                                        \
/* sigmoid of four lanes; returns 0 (and writes nothing) when a lane needs the     */   \
/* scalar code                                                                     */   \
ATTR static inline int mdl_vsigmoid_##SUF(mdl_v4d v, mdl_v4d *res)                        \
{                                                                                        \
    mdl_v4d a = v;                                                                       \
    mdl_v4l neg = v < 0.0;                                                                 \
    mdl_v4l a_bits, v_bits;                                                              \
    memcpy(&v_bits, &v, sizeof v_bits);                                                  \
    a_bits = v_bits & ~((mdl_v4l){0} + INT64_MIN); /* |v| */                             \
    memcpy(&a, &a_bits, sizeof a);                                                       \
    mdl_v4l ok = a <= 708.0; /* false for NaN */                                          \
    if (!(ok[0] & ok[1] & ok[2] & ok[3]))                                                \
        return 0;                                                                        \
    mdl_v4d e = mdl_vexp_##SUF(-a);                                                      \
    mdl_v4d pos = 1.0 / (1.0 + e), negv = e * pos; /* one division */                   \
    mdl_v4l pb, nb, out;                                                                 \
    memcpy(&pb, &pos, sizeof pb);                                                        \
    memcpy(&nb, &negv, sizeof nb);                                                       \
    out = (nb & neg) | (pb & ~neg);                                                      \
    memcpy(res, &out, sizeof out);                                                       \
    return 1;                                                                            \
}                                                                                        \
/* four entries x[0..4) as doubles, four shifted ones x[0..4) - m (float32: the      */ \
/* difference in float), and four results stored in the array's type                 */ \
ATTR static inline mdl_v4d mdl_load4_f64_##SUF(const double *x)                          \
{                                                                                        \
    mdl_v4d v;                                                                           \
    memcpy(&v, x, sizeof v);                                                             \
    return v;                                                                            \
}                                                                                        \
ATTR static inline mdl_v4d mdl_load4_f32_##SUF(const float *x)                           \
{                                                                                        \
    mdl_v4f v;                                                                           \
    memcpy(&v, x, sizeof v);                                                             \
    return __builtin_convertvector(v, mdl_v4d);                                          \
}                                                                                        \
ATTR static inline mdl_v4d mdl_shift4_f64_##SUF(const double *x, double m)               \
{                                                                                        \
    return mdl_load4_f64_##SUF(x) - m;                                                   \
}                                                                                        \
ATTR static inline mdl_v4d mdl_shift4_f32_##SUF(const float *x, float m)                 \
{                                                                                        \
    mdl_v4f v;                                                                           \
    memcpy(&v, x, sizeof v);                                                             \
    return __builtin_convertvector(v - m, mdl_v4d);                                      \
}                                                                                        \
ATTR static inline void mdl_put4_f64_##SUF(double *out, mdl_v4d e)                       \
{                                                                                        \
    memcpy(out, &e, sizeof e);                                                           \
}                                                                                        \
ATTR static inline void mdl_put4_f32_##SUF(float *out, mdl_v4d e)                        \
{                                                                                        \
    mdl_v4f f = __builtin_convertvector(e, mdl_v4f);                                     \
    memcpy(out, &f, sizeof f);                                                           \
}

/* out = sigmoid(x) for arrays of T (TN: f64 or f32), four lanes at a time; blocks
 * with an extreme or NaN lane, and the last n % 4 entries, take the scalar code. */
#define MDL_DEFINE_SIGMOID(TN, T, SUF, ATTR)                                             \
ATTR static void mdl_sigmoid_##TN##_##SUF(const T *x, T *out, Py_ssize_t n)              \
{                                                                                        \
    Py_ssize_t i = 0;                                                                    \
    for (; i + 4 <= n; i += 4) {                                                         \
        mdl_v4d s;                                                                       \
        if (mdl_vsigmoid_##SUF(mdl_load4_##TN##_##SUF(x + i), &s))                       \
            mdl_put4_##TN##_##SUF(out + i, s);                                           \
        else                                                                             \
            mdl_sigmoid_plain_##TN(x + i, out + i, 4);                                   \
    }                                                                                    \
    mdl_sigmoid_plain_##TN(x + i, out + i, n - i);                                       \
}

/* out[j] = exp(x[j] - m) (softmax's shifted exp: m >= every x[j], so the arguments
 * are <= 0) for arrays of T (TN: f64 or f32); blocks with an argument below -708
 * or NaN take libm's exp, and a row's last block overlaps the one before rather
 * than falling to scalar code. */
#define MDL_DEFINE_EXP_SHIFTED(TN, T, SUF, ATTR)                                         \
ATTR static void mdl_exp_shifted_##TN##_##SUF(const T *x, T m, T *out, Py_ssize_t n)     \
{                                                                                        \
    for (Py_ssize_t i = 0; i < n; i += 4) {                                              \
        Py_ssize_t s = i + 4 <= n ? i : n - 4;                                           \
        if (s < 0) {                                                                     \
            mdl_exp_shifted_plain_##TN(x, m, out, n);                                    \
            return;                                                                      \
        }                                                                                \
        mdl_v4d v = mdl_shift4_##TN##_##SUF(x + s, m);                                   \
        mdl_v4l ok = v >= -708.0; /* false for NaN */                                    \
        if (ok[0] & ok[1] & ok[2] & ok[3])                                               \
            mdl_put4_##TN##_##SUF(out + s, mdl_vexp_##SUF(v));                           \
        else                                                                             \
            mdl_exp_shifted_plain_##TN(x + s, m, out + s, 4);                            \
    }                                                                                    \
}

/* 32-byte vectors passed between these static functions of one file: GCC's note
 * about the ABI of such calls across files does not apply. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"
MDL_DEFINE_VEXP(base, )
MDL_DEFINE_SIGMOID(f64, double, base, )
MDL_DEFINE_SIGMOID(f32, float, base, )
MDL_DEFINE_EXP_SHIFTED(f64, double, base, )
MDL_DEFINE_EXP_SHIFTED(f32, float, base, )
#pragma GCC diagnostic pop
#if defined(__x86_64__)
#define MDL_AVX2_FMA __attribute__((target("avx2,fma")))
MDL_DEFINE_VEXP(avx2, MDL_AVX2_FMA)
MDL_DEFINE_SIGMOID(f64, double, avx2, MDL_AVX2_FMA)
MDL_DEFINE_SIGMOID(f32, float, avx2, MDL_AVX2_FMA)
MDL_DEFINE_EXP_SHIFTED(f64, double, avx2, MDL_AVX2_FMA)
MDL_DEFINE_EXP_SHIFTED(f32, float, avx2, MDL_AVX2_FMA)
#endif
#endif /* __GNUC__ */

typedef void (*mdl_sigmoid_f64_t)(const double *, double *, Py_ssize_t);
typedef void (*mdl_sigmoid_f32_t)(const float *, float *, Py_ssize_t);
typedef void (*mdl_exp_shifted_f64_t)(const double *, double, double *, Py_ssize_t);
typedef void (*mdl_exp_shifted_f32_t)(const float *, float, float *, Py_ssize_t);
static mdl_sigmoid_f64_t minidl_sigmoid_f64 = mdl_sigmoid_plain_f64;
static mdl_sigmoid_f32_t minidl_sigmoid_f32 = mdl_sigmoid_plain_f32;
static mdl_exp_shifted_f64_t minidl_exp_shifted_f64 = mdl_exp_shifted_plain_f64;
static mdl_exp_shifted_f32_t minidl_exp_shifted_f32 = mdl_exp_shifted_plain_f32;

/* isa: 0 plain C, 1 the baseline vectors, 2 AVX2+FMA when the CPU has them. */
static void minidl_vmath_init(int isa)
{
    minidl_sigmoid_f64 = mdl_sigmoid_plain_f64;
    minidl_sigmoid_f32 = mdl_sigmoid_plain_f32;
    minidl_exp_shifted_f64 = mdl_exp_shifted_plain_f64;
    minidl_exp_shifted_f32 = mdl_exp_shifted_plain_f32;
#if defined(__GNUC__)
    if (isa < 1)
        return;
    minidl_sigmoid_f64 = mdl_sigmoid_f64_base;
    minidl_sigmoid_f32 = mdl_sigmoid_f32_base;
    minidl_exp_shifted_f64 = mdl_exp_shifted_f64_base;
    minidl_exp_shifted_f32 = mdl_exp_shifted_f32_base;
#if defined(__x86_64__)
    __builtin_cpu_init();
    if (isa >= 2 && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
        minidl_sigmoid_f64 = mdl_sigmoid_f64_avx2;
        minidl_sigmoid_f32 = mdl_sigmoid_f32_avx2;
        minidl_exp_shifted_f64 = mdl_exp_shifted_f64_avx2;
        minidl_exp_shifted_f32 = mdl_exp_shifted_f32_avx2;
    }
#endif
#else
    (void)isa;
#endif
}

/* Whether sum(x ** 2), in x's dtype, is finite: x holds no NaN and no infinity and
 * its squares do not overflow. The zero-skipping kernels skip the weight rows of
 * zero inputs, which is exact only for finite weights (NumPy's 0 * inf is NaN),
 * and the book's MultiLayerNet adds 0 * sum(W ** 2) to its loss even without
 * weight decay (NaN once the squares overflow): both hold when this does. Four
 * independent 16-byte vectors of partial sums keep the loop near the speed of
 * reading x (about 8 us for a 784 x 50 float64 matrix). */
#define MDL_DEFINE_FINITE_NORM(SUF, T, LANES)                                           \
static int minidl_finite_norm_##SUF(const T *x, Py_ssize_t n)                           \
{                                                                                       \
    T s = 0;                                                                            \
    Py_ssize_t i = 0;                                                                   \
    MDL_FINITE_NORM_VECTORS(T, LANES)                                                   \
    for (; i < n; i++)                                                                  \
        s += x[i] * x[i];                                                               \
    return s - s == 0;                                                                  \
}

#if defined(__GNUC__)
#define MDL_FINITE_NORM_VECTORS(T, LANES)                                               \
    typedef T vt __attribute__((vector_size(16)));                                      \
    vt a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0}, v0, v1, v2, v3;                          \
    int lane;                                                                           \
    for (; i + 4 * LANES <= n; i += 4 * LANES) {                                        \
        memcpy(&v0, x + i, 16);                                                         \
        memcpy(&v1, x + i + LANES, 16);                                                 \
        memcpy(&v2, x + i + 2 * LANES, 16);                                             \
        memcpy(&v3, x + i + 3 * LANES, 16);                                             \
        a0 += v0 * v0;                                                                  \
        a1 += v1 * v1;                                                                  \
        a2 += v2 * v2;                                                                  \
        a3 += v3 * v3;                                                                  \
    }                                                                                   \
    a0 += a1 + a2 + a3;                                                                 \
    for (lane = 0; lane < LANES; lane++)                                                \
        s += a0[lane];
#else
#define MDL_FINITE_NORM_VECTORS(T, LANES)
#endif

MDL_DEFINE_FINITE_NORM(f64, double, 2)
MDL_DEFINE_FINITE_NORM(f32, float, 4)

#endif /* MINIDL_VMATH_H */
