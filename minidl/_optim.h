/* minidl/_optim.h: the book's update rules, one pass per parameter, for minidl._optim.
 *
 * Each function runs, for every element, the book's NumPy statements in the book's
 * order, each operation rounded in the dtype NumPy computes it in (see _optim.pyx).
 * Two things keep the results NumPy's bit for bit:
 *   - no contraction of a * b + c into a fused multiply-add (NumPy rounds the
 *     product, then the sum): the pragmas below turn it off for GCC and clang, and
 *     the AVX2 copies are compiled without the FMA instruction set;
 *   - IEEE +, -, *, / and sqrt round the same in SIMD lanes as in scalar code.
 * The arrays never overlap (minidl._optim_cython checks it), hence restrict, which
 * lets the compiler vectorise the loops.
 *
 * Compiled twice, for AVX2 and the baseline ISA, on x86-64 GCC/clang (the dispatch
 * in mdl_optim_init reads the CPU once); elsewhere the baseline copy only.
 */
#ifndef MINIDL_OPTIM_H
#define MINIDL_OPTIM_H

#include <math.h>

/* no contraction of a * b + c into a fused multiply-add */
#if defined(__clang__)
#define MDL_NO_CONTRACT _Pragma("clang fp contract(off)")
#elif defined(__GNUC__)
#pragma GCC push_options
#pragma GCC optimize("fp-contract=off")
#define MDL_NO_CONTRACT
#else
#define MDL_NO_CONTRACT
#endif

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define MDL_OPTIM_X86 1
#define MDL_OPTIM_AVX2 __attribute__((target("avx2")))
#else
#define MDL_OPTIM_X86 0
#endif

#if defined(__GNUC__) || defined(__clang__)
#define MDL_RESTRICT __restrict__
#else
#define MDL_RESTRICT
#endif

/* SGD, Momentum, Nesterov: one definition per dtype T (float or double) and ISA suffix
 * (the compiler vectorises these loops). */
#define MDL_DEFINE_RULES(T, TS, SUF, ATTR)                                                   \
ATTR static void mdl_sgd_##TS##_##SUF(T *MDL_RESTRICT p, const T *MDL_RESTRICT g, T lr,      \
                                      Py_ssize_t n)                                          \
{   MDL_NO_CONTRACT                                                                          \
    for (Py_ssize_t i = 0; i < n; i++)                                                       \
        p[i] = p[i] - lr * g[i];                                                             \
}                                                                                            \
ATTR static void mdl_momentum_##TS##_##SUF(T *MDL_RESTRICT p, const T *MDL_RESTRICT g,       \
                                           T *MDL_RESTRICT v, T lr, T m, Py_ssize_t n)       \
{   MDL_NO_CONTRACT                                                                          \
    for (Py_ssize_t i = 0; i < n; i++) {                                                     \
        T vi = m * v[i] - lr * g[i];                                                         \
        v[i] = vi;                                                                           \
        p[i] = p[i] + vi;                                                                    \
    }                                                                                        \
}                                                                                            \
ATTR static void mdl_nesterov_##TS##_##SUF(T *MDL_RESTRICT p, const T *MDL_RESTRICT g,       \
                                           T *MDL_RESTRICT v, T lr, T m, T mm, T a,          \
                                           Py_ssize_t n)                                     \
{   MDL_NO_CONTRACT                                                                          \
    for (Py_ssize_t i = 0; i < n; i++) {                                                     \
        T pi = p[i] + mm * v[i];                                                             \
        p[i] = pi - a * g[i];                                                                \
        T vi = v[i] * m;                                                                     \
        v[i] = vi - lr * g[i];                                                               \
    }                                                                                        \
}

/* The rules with a square root: AdaGrad and RMSprop. */
#define MDL_DEFINE_SQRT_RULES(T, TS, SQRT, SUF, ATTR)                                        \
ATTR static void mdl_adagrad_##TS##_##SUF(T *MDL_RESTRICT p, const T *MDL_RESTRICT g,        \
                                          T *MDL_RESTRICT h, T lr, Py_ssize_t n)             \
{   MDL_NO_CONTRACT                                                                          \
    const T eps = (T)1e-7;                                                                   \
    for (Py_ssize_t i = 0; i < n; i++) {                                                     \
        T hi = h[i] + g[i] * g[i];                                                           \
        h[i] = hi;                                                                           \
        p[i] = p[i] - lr * g[i] / (SQRT(hi) + eps);                                          \
    }                                                                                        \
}                                                                                            \
ATTR static void mdl_rmsprop_##TS##_##SUF(T *MDL_RESTRICT p, const T *MDL_RESTRICT g,        \
                                          T *MDL_RESTRICT h, T lr, T d, T c, Py_ssize_t n)   \
{   MDL_NO_CONTRACT                                                                          \
    const T eps = (T)1e-7;                                                                   \
    for (Py_ssize_t i = 0; i < n; i++) {                                                     \
        T hi = h[i] * d;                                                                     \
        hi = hi + c * g[i] * g[i];                                                           \
        h[i] = hi;                                                                           \
        p[i] = p[i] - lr * g[i] / (SQRT(hi) + eps);                                          \
    }                                                                                        \
}

/* Adam: float64 all in double; float32 with its last statement in double (lr_t is a
 * NumPy float64), sqrt(v) + 1e-7 in float32. */
#define MDL_DEFINE_ADAM(SUF, ATTR)                                                           \
ATTR static void mdl_adam_f64_##SUF(double *MDL_RESTRICT p, const double *MDL_RESTRICT g,    \
                                    double *MDL_RESTRICT m, double *MDL_RESTRICT v,          \
                                    double lr_t, double b1, double b2, Py_ssize_t n)         \
{   MDL_NO_CONTRACT                                                                          \
    for (Py_ssize_t i = 0; i < n; i++) {                                                     \
        double mi = m[i] + b1 * (g[i] - m[i]);                                               \
        double vi = v[i] + b2 * (g[i] * g[i] - v[i]);                                        \
        m[i] = mi;                                                                           \
        v[i] = vi;                                                                           \
        p[i] = p[i] - lr_t * mi / (sqrt(vi) + 1e-7);                                         \
    }                                                                                        \
}                                                                                            \
ATTR static void mdl_adam_f32_##SUF(float *MDL_RESTRICT p, const float *MDL_RESTRICT g,      \
                                    float *MDL_RESTRICT m, float *MDL_RESTRICT v,            \
                                    double lr_t, float b1, float b2, Py_ssize_t n)           \
{   MDL_NO_CONTRACT                                                                          \
    const float eps = 1e-7f;                                                                 \
    for (Py_ssize_t i = 0; i < n; i++) {                                                     \
        float mi = m[i] + b1 * (g[i] - m[i]);                                                \
        float vi = v[i] + b2 * (g[i] * g[i] - v[i]);                                         \
        m[i] = mi;                                                                           \
        v[i] = vi;                                                                           \
        float denom = sqrtf(vi) + eps;                                                       \
        p[i] = (float)((double)p[i] - lr_t * (double)mi / (double)denom);                    \
    }                                                                                        \
}

MDL_DEFINE_RULES(double, f64, plain, )
MDL_DEFINE_RULES(float, f32, plain, )
MDL_DEFINE_SQRT_RULES(double, f64, sqrt, plain, )
MDL_DEFINE_SQRT_RULES(float, f32, sqrtf, plain, )
MDL_DEFINE_ADAM(plain, )
#if MDL_OPTIM_X86
MDL_DEFINE_RULES(double, f64, avx2, MDL_OPTIM_AVX2)
MDL_DEFINE_RULES(float, f32, avx2, MDL_OPTIM_AVX2)
#endif

#if MDL_OPTIM_X86
/* The square-root rules in AVX2 intrinsics (compilers do not vectorise sqrt while it
 * may set errno): the same operations in the same order, four doubles or eight (Adam:
 * four) floats a lane group, the rest through the scalar loop. No FMA anywhere. */
#include <immintrin.h>

MDL_OPTIM_AVX2 static void mdl_adagrad_f64_avx2(double *MDL_RESTRICT p,
        const double *MDL_RESTRICT g, double *MDL_RESTRICT h, double lr, Py_ssize_t n)
{
    const __m256d vlr = _mm256_set1_pd(lr), eps = _mm256_set1_pd(1e-7);
    Py_ssize_t i = 0;
    for (; i + 4 <= n; i += 4) {
        __m256d gi = _mm256_loadu_pd(g + i);
        __m256d hi = _mm256_add_pd(_mm256_loadu_pd(h + i), _mm256_mul_pd(gi, gi));
        _mm256_storeu_pd(h + i, hi);
        __m256d step = _mm256_div_pd(_mm256_mul_pd(vlr, gi),
                                     _mm256_add_pd(_mm256_sqrt_pd(hi), eps));
        _mm256_storeu_pd(p + i, _mm256_sub_pd(_mm256_loadu_pd(p + i), step));
    }
    mdl_adagrad_f64_plain(p + i, g + i, h + i, lr, n - i);
}

MDL_OPTIM_AVX2 static void mdl_adagrad_f32_avx2(float *MDL_RESTRICT p,
        const float *MDL_RESTRICT g, float *MDL_RESTRICT h, float lr, Py_ssize_t n)
{
    const __m256 vlr = _mm256_set1_ps(lr), eps = _mm256_set1_ps(1e-7f);
    Py_ssize_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 gi = _mm256_loadu_ps(g + i);
        __m256 hi = _mm256_add_ps(_mm256_loadu_ps(h + i), _mm256_mul_ps(gi, gi));
        _mm256_storeu_ps(h + i, hi);
        __m256 step = _mm256_div_ps(_mm256_mul_ps(vlr, gi),
                                    _mm256_add_ps(_mm256_sqrt_ps(hi), eps));
        _mm256_storeu_ps(p + i, _mm256_sub_ps(_mm256_loadu_ps(p + i), step));
    }
    mdl_adagrad_f32_plain(p + i, g + i, h + i, lr, n - i);
}

MDL_OPTIM_AVX2 static void mdl_rmsprop_f64_avx2(double *MDL_RESTRICT p,
        const double *MDL_RESTRICT g, double *MDL_RESTRICT h, double lr, double d, double c,
        Py_ssize_t n)
{
    const __m256d vlr = _mm256_set1_pd(lr), vd = _mm256_set1_pd(d), vc = _mm256_set1_pd(c);
    const __m256d eps = _mm256_set1_pd(1e-7);
    Py_ssize_t i = 0;
    for (; i + 4 <= n; i += 4) {
        __m256d gi = _mm256_loadu_pd(g + i);
        __m256d hi = _mm256_mul_pd(_mm256_loadu_pd(h + i), vd);
        hi = _mm256_add_pd(hi, _mm256_mul_pd(_mm256_mul_pd(vc, gi), gi));
        _mm256_storeu_pd(h + i, hi);
        __m256d step = _mm256_div_pd(_mm256_mul_pd(vlr, gi),
                                     _mm256_add_pd(_mm256_sqrt_pd(hi), eps));
        _mm256_storeu_pd(p + i, _mm256_sub_pd(_mm256_loadu_pd(p + i), step));
    }
    mdl_rmsprop_f64_plain(p + i, g + i, h + i, lr, d, c, n - i);
}

MDL_OPTIM_AVX2 static void mdl_rmsprop_f32_avx2(float *MDL_RESTRICT p,
        const float *MDL_RESTRICT g, float *MDL_RESTRICT h, float lr, float d, float c,
        Py_ssize_t n)
{
    const __m256 vlr = _mm256_set1_ps(lr), vd = _mm256_set1_ps(d), vc = _mm256_set1_ps(c);
    const __m256 eps = _mm256_set1_ps(1e-7f);
    Py_ssize_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 gi = _mm256_loadu_ps(g + i);
        __m256 hi = _mm256_mul_ps(_mm256_loadu_ps(h + i), vd);
        hi = _mm256_add_ps(hi, _mm256_mul_ps(_mm256_mul_ps(vc, gi), gi));
        _mm256_storeu_ps(h + i, hi);
        __m256 step = _mm256_div_ps(_mm256_mul_ps(vlr, gi),
                                    _mm256_add_ps(_mm256_sqrt_ps(hi), eps));
        _mm256_storeu_ps(p + i, _mm256_sub_ps(_mm256_loadu_ps(p + i), step));
    }
    mdl_rmsprop_f32_plain(p + i, g + i, h + i, lr, d, c, n - i);
}

MDL_OPTIM_AVX2 static void mdl_adam_f64_avx2(double *MDL_RESTRICT p,
        const double *MDL_RESTRICT g, double *MDL_RESTRICT m, double *MDL_RESTRICT v,
        double lr_t, double b1, double b2, Py_ssize_t n)
{
    const __m256d vlr = _mm256_set1_pd(lr_t), vb1 = _mm256_set1_pd(b1);
    const __m256d vb2 = _mm256_set1_pd(b2), eps = _mm256_set1_pd(1e-7);
    Py_ssize_t i = 0;
    for (; i + 4 <= n; i += 4) {
        __m256d gi = _mm256_loadu_pd(g + i), mi = _mm256_loadu_pd(m + i);
        __m256d vi = _mm256_loadu_pd(v + i);
        mi = _mm256_add_pd(mi, _mm256_mul_pd(vb1, _mm256_sub_pd(gi, mi)));
        vi = _mm256_add_pd(vi, _mm256_mul_pd(vb2, _mm256_sub_pd(_mm256_mul_pd(gi, gi), vi)));
        _mm256_storeu_pd(m + i, mi);
        _mm256_storeu_pd(v + i, vi);
        __m256d step = _mm256_div_pd(_mm256_mul_pd(vlr, mi),
                                     _mm256_add_pd(_mm256_sqrt_pd(vi), eps));
        _mm256_storeu_pd(p + i, _mm256_sub_pd(_mm256_loadu_pd(p + i), step));
    }
    mdl_adam_f64_plain(p + i, g + i, m + i, v + i, lr_t, b1, b2, n - i);
}

MDL_OPTIM_AVX2 static void mdl_adam_f32_avx2(float *MDL_RESTRICT p,
        const float *MDL_RESTRICT g, float *MDL_RESTRICT m, float *MDL_RESTRICT v,
        double lr_t, float b1, float b2, Py_ssize_t n)
{
    const __m128 vb1 = _mm_set1_ps(b1), vb2 = _mm_set1_ps(b2), eps = _mm_set1_ps(1e-7f);
    const __m256d vlr = _mm256_set1_pd(lr_t);
    Py_ssize_t i = 0;
    for (; i + 4 <= n; i += 4) {
        __m128 gi = _mm_loadu_ps(g + i), mi = _mm_loadu_ps(m + i), vi = _mm_loadu_ps(v + i);
        mi = _mm_add_ps(mi, _mm_mul_ps(vb1, _mm_sub_ps(gi, mi)));
        vi = _mm_add_ps(vi, _mm_mul_ps(vb2, _mm_sub_ps(_mm_mul_ps(gi, gi), vi)));
        _mm_storeu_ps(m + i, mi);
        _mm_storeu_ps(v + i, vi);
        __m128 denom = _mm_add_ps(_mm_sqrt_ps(vi), eps);
        /* in double: p - lr_t * m / denom, rounded once to float */
        __m256d step = _mm256_div_pd(_mm256_mul_pd(vlr, _mm256_cvtps_pd(mi)),
                                     _mm256_cvtps_pd(denom));
        __m256d pi = _mm256_sub_pd(_mm256_cvtps_pd(_mm_loadu_ps(p + i)), step);
        _mm_storeu_ps(p + i, _mm256_cvtpd_ps(pi));
    }
    mdl_adam_f32_plain(p + i, g + i, m + i, v + i, lr_t, b1, b2, n - i);
}
#endif
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC pop_options
#endif

static int mdl_optim_use_avx2 = 0;

/* use: 0 the baseline copies, 1 AVX2 where the CPU has it. Returns the level in use. */
static int mdl_optim_init(int use)
{
    mdl_optim_use_avx2 = 0;
#if MDL_OPTIM_X86
    __builtin_cpu_init();
    if (use && __builtin_cpu_supports("avx2"))
        mdl_optim_use_avx2 = 1;
#endif
    return mdl_optim_use_avx2;
}

#if MDL_OPTIM_X86
#define MDL_OPTIM_CALL(name, ...)                                                            \
    do {                                                                                     \
        if (mdl_optim_use_avx2) name##_avx2(__VA_ARGS__); else name##_plain(__VA_ARGS__);    \
    } while (0)
#else
#define MDL_OPTIM_CALL(name, ...) name##_plain(__VA_ARGS__)
#endif

static void mdl_sgd_f64(double *p, const double *g, double lr, Py_ssize_t n)
{ MDL_OPTIM_CALL(mdl_sgd_f64, p, g, lr, n); }
static void mdl_sgd_f32(float *p, const float *g, float lr, Py_ssize_t n)
{ MDL_OPTIM_CALL(mdl_sgd_f32, p, g, lr, n); }
static void mdl_momentum_f64(double *p, const double *g, double *v, double lr, double m,
                             Py_ssize_t n)
{ MDL_OPTIM_CALL(mdl_momentum_f64, p, g, v, lr, m, n); }
static void mdl_momentum_f32(float *p, const float *g, float *v, float lr, float m, Py_ssize_t n)
{ MDL_OPTIM_CALL(mdl_momentum_f32, p, g, v, lr, m, n); }
static void mdl_nesterov_f64(double *p, const double *g, double *v, double lr, double m,
                             double mm, double a, Py_ssize_t n)
{ MDL_OPTIM_CALL(mdl_nesterov_f64, p, g, v, lr, m, mm, a, n); }
static void mdl_nesterov_f32(float *p, const float *g, float *v, float lr, float m, float mm,
                             float a, Py_ssize_t n)
{ MDL_OPTIM_CALL(mdl_nesterov_f32, p, g, v, lr, m, mm, a, n); }
static void mdl_adagrad_f64(double *p, const double *g, double *h, double lr, Py_ssize_t n)
{ MDL_OPTIM_CALL(mdl_adagrad_f64, p, g, h, lr, n); }
static void mdl_adagrad_f32(float *p, const float *g, float *h, float lr, Py_ssize_t n)
{ MDL_OPTIM_CALL(mdl_adagrad_f32, p, g, h, lr, n); }
static void mdl_rmsprop_f64(double *p, const double *g, double *h, double lr, double d,
                            double c, Py_ssize_t n)
{ MDL_OPTIM_CALL(mdl_rmsprop_f64, p, g, h, lr, d, c, n); }
static void mdl_rmsprop_f32(float *p, const float *g, float *h, float lr, float d, float c,
                            Py_ssize_t n)
{ MDL_OPTIM_CALL(mdl_rmsprop_f32, p, g, h, lr, d, c, n); }
static void mdl_adam_f64(double *p, const double *g, double *m, double *v, double lr_t,
                         double b1, double b2, Py_ssize_t n)
{ MDL_OPTIM_CALL(mdl_adam_f64, p, g, m, v, lr_t, b1, b2, n); }
static void mdl_adam_f32(float *p, const float *g, float *m, float *v, double lr_t, float b1,
                         float b2, Py_ssize_t n)
{ MDL_OPTIM_CALL(mdl_adam_f32, p, g, m, v, lr_t, b1, b2, n); }

#endif /* MINIDL_OPTIM_H */
