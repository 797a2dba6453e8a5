/* minidl/_norm.h: the book's BatchNormalization passes, for minidl._norm.
 *
 * The loops of _norm.pyx's design, in C so that the compiler may vectorise them:
 * every pointer is restrict (the callers pass buffers that do not overlap: the
 * outputs are allocated by minidl._norm_cython), which is what lets GCC and clang
 * turn the row loops into SIMD code (with a dozen arrays in a loop, they would
 * otherwise give up on the run-time overlap checks and run it one element at a
 * time). Each element's operations are the same, in the same order, as before:
 * no contraction into fused multiply-adds (the pragmas below), IEEE +, -, *, /
 * round the same in SIMD lanes as in scalar code, so the results do not change.
 *
 * Compiled twice, for AVX2 and the baseline ISA, on x86-64 GCC/clang (chosen at
 * import by mdl_norm_init); elsewhere the baseline copy only.
 */
#ifndef MINIDL_NORM_H
#define MINIDL_NORM_H

#include <math.h>
#include <stddef.h>

#if defined(__clang__)
#define MDL_BN_NO_CONTRACT _Pragma("clang fp contract(off)")
#elif defined(__GNUC__)
#pragma GCC push_options
#pragma GCC optimize("fp-contract=off")
#define MDL_BN_NO_CONTRACT
#else
#define MDL_BN_NO_CONTRACT
#endif

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define MDL_BN_X86 1
#define MDL_BN_AVX2 __attribute__((target("avx2")))
#else
#define MDL_BN_X86 0
#endif

#if defined(__GNUC__) || defined(__clang__)
#define MDL_BN_R __restrict__
#else
#define MDL_BN_R
#endif

typedef ptrdiff_t mdl_bn_size;

/* One definition of the three passes per dtype T and ISA suffix SUF. */
#define MDL_DEFINE_BN(T, TS, SUF, ATTR)                                                      \
ATTR static void mdl_bn_forward_train_##TS##_##SUF(                                          \
    const T *MDL_BN_R x, const T *MDL_BN_R gamma, const T *MDL_BN_R beta,                    \
    mdl_bn_size N, mdl_bn_size D, T *MDL_BN_R mu, T *MDL_BN_R var, T *MDL_BN_R std,          \
    T *MDL_BN_R xc, T *MDL_BN_R xn, T *MDL_BN_R out)                                         \
{   MDL_BN_NO_CONTRACT                                                                       \
    const T eps = (T)10e-7;                                                                  \
    for (mdl_bn_size j = 0; j < D; j++) { mu[j] = 0; var[j] = 0; }                           \
    for (mdl_bn_size i = 0; i < N; i++) {                                                    \
        const T *MDL_BN_R xr = x + i * D;                                                    \
        for (mdl_bn_size j = 0; j < D; j++) mu[j] += xr[j];                                  \
    }                                                                                        \
    for (mdl_bn_size j = 0; j < D; j++) mu[j] = mu[j] / (T)N;                                \
    for (mdl_bn_size i = 0; i < N; i++) {                                                    \
        const T *MDL_BN_R xr = x + i * D;                                                    \
        T *MDL_BN_R cr = xc + i * D;                                                         \
        for (mdl_bn_size j = 0; j < D; j++) {                                                \
            T d = xr[j] - mu[j];                                                             \
            cr[j] = d;                                                                       \
            var[j] += d * d;                                                                 \
        }                                                                                    \
    }                                                                                        \
    for (mdl_bn_size j = 0; j < D; j++) {                                                    \
        var[j] = var[j] / (T)N;                                                              \
        std[j] = (T)sqrt((double)(var[j] + eps));                                            \
    }                                                                                        \
    for (mdl_bn_size i = 0; i < N; i++) {                                                    \
        const T *MDL_BN_R cr = xc + i * D;                                                   \
        T *MDL_BN_R nr = xn + i * D;                                                         \
        T *MDL_BN_R orow = out + i * D;                                                      \
        for (mdl_bn_size j = 0; j < D; j++) {                                                \
            T d = cr[j] / std[j];                                                            \
            nr[j] = d;                                                                       \
            orow[j] = gamma[j] * d + beta[j];                                                \
        }                                                                                    \
    }                                                                                        \
}                                                                                            \
ATTR static void mdl_bn_forward_test_##TS##_##SUF(                                           \
    const T *MDL_BN_R x, const T *MDL_BN_R gamma, const T *MDL_BN_R beta,                    \
    const T *MDL_BN_R running_mean, const T *MDL_BN_R running_var,                           \
    mdl_bn_size N, mdl_bn_size D, T *MDL_BN_R scale, T *MDL_BN_R out)                        \
{   MDL_BN_NO_CONTRACT                                                                       \
    const T eps = (T)10e-7;                                                                  \
    for (mdl_bn_size j = 0; j < D; j++)                                                      \
        scale[j] = (T)sqrt((double)(running_var[j] + eps));                                  \
    for (mdl_bn_size i = 0; i < N; i++) {                                                    \
        const T *MDL_BN_R xr = x + i * D;                                                    \
        T *MDL_BN_R orow = out + i * D;                                                      \
        for (mdl_bn_size j = 0; j < D; j++)                                                  \
            orow[j] = gamma[j] * ((xr[j] - running_mean[j]) / scale[j]) + beta[j];           \
    }                                                                                        \
}                                                                                            \
ATTR static void mdl_bn_backward_##TS##_##SUF(                                               \
    const T *MDL_BN_R dout, const T *MDL_BN_R gamma, const T *MDL_BN_R xc,                   \
    const T *MDL_BN_R xn, const T *MDL_BN_R std, mdl_bn_size N, mdl_bn_size D,               \
    T *MDL_BN_R dgamma, T *MDL_BN_R dbeta, T *MDL_BN_R dvar, T *MDL_BN_R dmu,                \
    T *MDL_BN_R dx)                                                                          \
{   MDL_BN_NO_CONTRACT                                                                       \
    const T two_over_n = (T)(2.0 / (double)N);                                               \
    for (mdl_bn_size j = 0; j < D; j++) { dgamma[j] = 0; dbeta[j] = 0; dvar[j] = 0; dmu[j] = 0; } \
    for (mdl_bn_size i = 0; i < N; i++) {  /* dvar first holds -dstd */                      \
        const T *MDL_BN_R gr = dout + i * D;                                                 \
        const T *MDL_BN_R nr = xn + i * D;                                                   \
        const T *MDL_BN_R cr = xc + i * D;                                                   \
        for (mdl_bn_size j = 0; j < D; j++) {                                                \
            T g = gr[j];                                                                     \
            dbeta[j] += g;                                                                   \
            dgamma[j] += nr[j] * g;                                                          \
            dvar[j] += (gamma[j] * g) * cr[j] / (std[j] * std[j]);                           \
        }                                                                                    \
    }                                                                                        \
    for (mdl_bn_size j = 0; j < D; j++) dvar[j] = (T)0.5 * (-dvar[j]) / std[j];              \
    for (mdl_bn_size i = 0; i < N; i++) {                                                    \
        const T *MDL_BN_R gr = dout + i * D;                                                 \
        const T *MDL_BN_R cr = xc + i * D;                                                   \
        T *MDL_BN_R xr = dx + i * D;                                                         \
        for (mdl_bn_size j = 0; j < D; j++) {                                                \
            T dxn = gamma[j] * gr[j];                                                        \
            T g = dxn / std[j] + two_over_n * cr[j] * dvar[j];                               \
            xr[j] = g;                                                                       \
            dmu[j] += g;                                                                     \
        }                                                                                    \
    }                                                                                        \
    for (mdl_bn_size j = 0; j < D; j++) dmu[j] = dmu[j] / (T)N;                              \
    for (mdl_bn_size i = 0; i < N; i++) {                                                    \
        T *MDL_BN_R xr = dx + i * D;                                                         \
        for (mdl_bn_size j = 0; j < D; j++) xr[j] -= dmu[j];                                 \
    }                                                                                        \
}

MDL_DEFINE_BN(double, f64, plain, )
MDL_DEFINE_BN(float, f32, plain, )
#if MDL_BN_X86
MDL_DEFINE_BN(double, f64, avx2, MDL_BN_AVX2)
MDL_DEFINE_BN(float, f32, avx2, MDL_BN_AVX2)
#endif

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC pop_options
#endif

static int mdl_bn_use_avx2 = 0;

/* Select the AVX2 copies (where the CPU has AVX2 and `use`) or the baseline ones;
 * returns whether AVX2 is in use. */
static int mdl_norm_init(int use)
{
    mdl_bn_use_avx2 = 0;
#if MDL_BN_X86
    __builtin_cpu_init();
    if (use && __builtin_cpu_supports("avx2"))
        mdl_bn_use_avx2 = 1;
#endif
    return mdl_bn_use_avx2;
}

#if MDL_BN_X86
#define MDL_BN_CALL(name, ...)                                                               \
    do {                                                                                     \
        if (mdl_bn_use_avx2) name##_avx2(__VA_ARGS__); else name##_plain(__VA_ARGS__);       \
    } while (0)
#else
#define MDL_BN_CALL(name, ...) name##_plain(__VA_ARGS__)
#endif

#define MDL_BN_WRAPPERS(T, TS)                                                               \
static void mdl_bn_forward_train_##TS(const T *x, const T *gamma, const T *beta,             \
    mdl_bn_size N, mdl_bn_size D, T *mu, T *var, T *std, T *xc, T *xn, T *out)               \
{ MDL_BN_CALL(mdl_bn_forward_train_##TS, x, gamma, beta, N, D, mu, var, std, xc, xn, out); } \
static void mdl_bn_forward_test_##TS(const T *x, const T *gamma, const T *beta,              \
    const T *running_mean, const T *running_var, mdl_bn_size N, mdl_bn_size D, T *scale,     \
    T *out)                                                                                  \
{ MDL_BN_CALL(mdl_bn_forward_test_##TS, x, gamma, beta, running_mean, running_var, N, D,     \
              scale, out); }                                                                 \
static void mdl_bn_backward_##TS(const T *dout, const T *gamma, const T *xc, const T *xn,    \
    const T *std, mdl_bn_size N, mdl_bn_size D, T *dgamma, T *dbeta, T *dvar, T *dmu, T *dx) \
{ MDL_BN_CALL(mdl_bn_backward_##TS, dout, gamma, xc, xn, std, N, D, dgamma, dbeta, dvar,     \
              dmu, dx); }

MDL_BN_WRAPPERS(double, f64)
MDL_BN_WRAPPERS(float, f32)

#endif /* MINIDL_NORM_H */
