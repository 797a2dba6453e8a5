/* minidl/_sparse.h: zero-skipping affine micro-kernels for minidl._core.
 *
 * Design
 * ------
 * MNIST-like inputs are mostly exact zeros (81% of MNIST's pixels, about half
 * of a ReLU layer's outputs). The affine products of the book's networks,
 * x (n, K) @ W (K, H) and x.T @ dout, only need the nonzero entries of x:
 *
 *   1. nz:    for each row of x, the columns k where x[i, k] != 0 and their
 *             values (CSR; a SIMD compare and movemask, then the block's nonzero
 *             lanes packed to the front by a table of permutations (AVX2) or a
 *             bit scan: no branch per element).
 *             A training set's lists are computed once; the kernels then never
 *             touch the dense rows again (a third of the memory traffic).
 *   2. spmm:  out[i, :] = b + sum over those k of x[i, k] * W[k, :]. The whole
 *             output row (up to 13 vectors) stays in registers as independent
 *             FMA chains, so the loop runs at the FMA/load throughput instead
 *             of the FMA latency; each W row is read once per nonzero.
 *   3. csc + spmmt: dW[k, :] = sum over rows i with x[i, k] != 0 of
 *             x[i, k] * dout[i, :], one dW row at a time in registers (the
 *             column lists come from the row lists by a counting sort), with an
 *             optional fused update dst[k, :] += scale * dW[k, :] (an SGD step
 *             with scale = -lr, or accumulation over chunks of rows).
 *
 * The rows may be picked by an index array (``rows``), so that a training batch
 * is read straight from the dataset's lists without a copy, and x may be
 * float32 while W is float64 (NumPy's promotion: computed in float64).
 *
 * Every kernel exists twice: compiled for AVX2+FMA (32-byte vectors) and for the
 * baseline ISA (16-byte vectors); ``minidl_sparse_init`` picks one at import
 * time from the CPU's features. GCC and Clang get vector code through their
 * vector extensions; other compilers get the plain C loops below, which compute
 * the same sums.
 *
 * Numerics: terms with x[i, k] == 0 are skipped, so sums differ from BLAS only
 * by rounding (summation order, FMA contraction), except that a non-finite
 * weight multiplied by an exact zero input does not turn the result into NaN.
 *
 * The caller (minidl._core) validates shapes, strides and indices: nothing
 * here checks bounds.
 */
#ifndef MINIDL_SPARSE_H
#define MINIDL_SPARSE_H

#include <stdint.h>
#include <string.h>

#if defined(__GNUC__) && (defined(__x86_64__) || defined(_M_X64))
#define MINIDL_X86 1
#include <emmintrin.h>
#endif

#if defined(__GNUC__)
#define MINIDL_VECEXT 1
#endif

typedef Py_ssize_t mdl_ssize;

/* ------------------------------------------------------------------------ */
/* 1. nonzero lists (CSR with values)                                        */
/* ------------------------------------------------------------------------ */

/* For each row i in [i0, i1) of x (row stride ldx), the columns k with
 * x[i, k] != 0 (NaN counts as nonzero), increasing, are written at idx + ptr[i]
 * and their values at val + ptr[i]; ptr[i + 1] is set to ptr[i] + their count
 * (ptr[i0] must be set). */
#ifdef MINIDL_X86
#define MDL_NZ_SIMD_F32                                                                  \
    const __m128 zero = _mm_setzero_ps();                                                \
    for (; k + 16 <= K; k += 16) {                                                       \
        unsigned m = (unsigned)_mm_movemask_ps(_mm_cmpneq_ps(_mm_loadu_ps(xr + k), zero)) \
            | ((unsigned)_mm_movemask_ps(_mm_cmpneq_ps(_mm_loadu_ps(xr + k + 4), zero)) << 4) \
            | ((unsigned)_mm_movemask_ps(_mm_cmpneq_ps(_mm_loadu_ps(xr + k + 8), zero)) << 8) \
            | ((unsigned)_mm_movemask_ps(_mm_cmpneq_ps(_mm_loadu_ps(xr + k + 12), zero)) << 12); \
        while (m) {                                                                      \
            mdl_ssize kk = k + __builtin_ctz(m);                                         \
            oi[nnz] = (int32_t)kk;                                                       \
            ov[nnz++] = xr[kk];                                                          \
            m &= m - 1;                                                                  \
        }                                                                                \
    }
#define MDL_NZ_SIMD_F64                                                                  \
    const __m128d zero = _mm_setzero_pd();                                               \
    for (; k + 8 <= K; k += 8) {                                                         \
        unsigned m = (unsigned)_mm_movemask_pd(_mm_cmpneq_pd(_mm_loadu_pd(xr + k), zero)) \
            | ((unsigned)_mm_movemask_pd(_mm_cmpneq_pd(_mm_loadu_pd(xr + k + 2), zero)) << 2) \
            | ((unsigned)_mm_movemask_pd(_mm_cmpneq_pd(_mm_loadu_pd(xr + k + 4), zero)) << 4) \
            | ((unsigned)_mm_movemask_pd(_mm_cmpneq_pd(_mm_loadu_pd(xr + k + 6), zero)) << 6); \
        while (m) {                                                                      \
            mdl_ssize kk = k + __builtin_ctz(m);                                         \
            oi[nnz] = (int32_t)kk;                                                       \
            ov[nnz++] = xr[kk];                                                          \
            m &= m - 1;                                                                  \
        }                                                                                \
    }
#else
#define MDL_NZ_SIMD_F32
#define MDL_NZ_SIMD_F64
#endif

#define MDL_DEFINE_NZ(NAME, XT, SIMD)                                                    \
static void NAME(const XT *x, mdl_ssize ldx, mdl_ssize i0, mdl_ssize i1,                 \
                 mdl_ssize K, int32_t *idx, XT *val, int64_t *ptr)                       \
{                                                                                        \
    for (mdl_ssize i = i0; i < i1; i++) {                                                \
        const XT *xr = x + i * ldx;                                                      \
        int32_t *oi = idx + ptr[i];                                                      \
        XT *ov = val + ptr[i];                                                           \
        int64_t nnz = 0;                                                                 \
        mdl_ssize k = 0;                                                                 \
        SIMD                                                                             \
        for (; k < K; k++) {  /* branchless compaction */                               \
            oi[nnz] = (int32_t)k;                                                        \
            ov[nnz] = xr[k];                                                             \
            nnz += (xr[k] != 0);                                                         \
        }                                                                                \
        ptr[i + 1] = ptr[i] + nnz;                                                       \
    }                                                                                    \
}

MDL_DEFINE_NZ(mdl_nz_scalar_f32, float, )
MDL_DEFINE_NZ(mdl_nz_scalar_f64, double, )
MDL_DEFINE_NZ(mdl_nz_sse_f32, float, MDL_NZ_SIMD_F32)
MDL_DEFINE_NZ(mdl_nz_sse_f64, double, MDL_NZ_SIMD_F64)

#ifdef MINIDL_X86
#include <immintrin.h>
/* AVX2: a block of 8 floats (4 doubles) at a time, without a branch per
 * nonzero: the block's nonzero mask picks a permutation from a table that moves
 * the nonzero lanes to the front ("left-packing"); the whole block of values
 * and of column indices is stored at the list's end, and the end advances by
 * the mask's popcount. The lanes stored past the new end are overwritten by the
 * next block or lie past the row's list (within the row's K entries: the
 * lists' buffers have room for K entries a row, like the tail loop's). */
static int32_t mdl_pack8[256][8] __attribute__((aligned(32)));    /* float lanes */
static int32_t mdl_pack4x2[16][8] __attribute__((aligned(32)));   /* double lanes, as pairs */
static int32_t mdl_pack4[16][4] __attribute__((aligned(16)));     /* their column offsets */

static void mdl_pack_tables(void)
{
    static int done = 0;
    if (done)
        return;
    for (int m = 0; m < 256; m++) {
        int c = 0;
        for (int j = 0; j < 8; j++)
            if (m >> j & 1) mdl_pack8[m][c++] = j;
        for (; c < 8; c++) mdl_pack8[m][c] = 0;
    }
    for (int m = 0; m < 16; m++) {
        int c = 0;
        for (int j = 0; j < 4; j++)
            if (m >> j & 1) {
                mdl_pack4[m][c] = j;
                mdl_pack4x2[m][2 * c] = 2 * j;
                mdl_pack4x2[m][2 * c + 1] = 2 * j + 1;
                c++;
            }
        for (; c < 4; c++) {
            mdl_pack4[m][c] = 0;
            mdl_pack4x2[m][2 * c] = 0;
            mdl_pack4x2[m][2 * c + 1] = 1;
        }
    }
    done = 1;
}

#define MDL_NZ_AVX2_F32                                                                  \
    const __m256 zero = _mm256_setzero_ps();                                             \
    __m256i kv = _mm256_setzero_si256();                                                 \
    for (; k + 8 <= K; k += 8) {                                                         \
        __m256 v = _mm256_loadu_ps(xr + k);                                              \
        unsigned m = (unsigned)_mm256_movemask_ps(_mm256_cmp_ps(v, zero, _CMP_NEQ_UQ));  \
        __m256i p = _mm256_load_si256((const __m256i *)mdl_pack8[m]);                    \
        _mm256_storeu_ps(ov + nnz, _mm256_permutevar8x32_ps(v, p));                      \
        _mm256_storeu_si256((__m256i *)(oi + nnz), _mm256_add_epi32(p, kv));             \
        kv = _mm256_add_epi32(kv, _mm256_set1_epi32(8));                                 \
        nnz += __builtin_popcount(m);                                                    \
    }
#define MDL_NZ_AVX2_F64                                                                  \
    const __m256d zero = _mm256_setzero_pd();                                            \
    __m128i kv = _mm_setzero_si128();                                                    \
    for (; k + 4 <= K; k += 4) {                                                         \
        __m256d v = _mm256_loadu_pd(xr + k);                                             \
        unsigned m = (unsigned)_mm256_movemask_pd(_mm256_cmp_pd(v, zero, _CMP_NEQ_UQ));  \
        __m256i p = _mm256_load_si256((const __m256i *)mdl_pack4x2[m]);                  \
        _mm256_storeu_pd(ov + nnz,                                                       \
                         _mm256_castps_pd(_mm256_permutevar8x32_ps(_mm256_castpd_ps(v), p))); \
        _mm_storeu_si128((__m128i *)(oi + nnz),                                          \
                         _mm_add_epi32(_mm_load_si128((const __m128i *)mdl_pack4[m]), kv)); \
        kv = _mm_add_epi32(kv, _mm_set1_epi32(4));                                       \
        nnz += __builtin_popcount(m);                                                    \
    }
#define MDL_AVX2_NZ_ATTR __attribute__((target("avx2,popcnt")))
MDL_AVX2_NZ_ATTR MDL_DEFINE_NZ(mdl_nz_avx2_f32, float, MDL_NZ_AVX2_F32)
MDL_AVX2_NZ_ATTR MDL_DEFINE_NZ(mdl_nz_avx2_f64, double, MDL_NZ_AVX2_F64)
#endif

typedef void (*mdl_nz_f32_t)(const float *, mdl_ssize, mdl_ssize, mdl_ssize, mdl_ssize,
                             int32_t *, float *, int64_t *);
typedef void (*mdl_nz_f64_t)(const double *, mdl_ssize, mdl_ssize, mdl_ssize, mdl_ssize,
                             int32_t *, double *, int64_t *);
/* set by minidl_sparse_init */
static mdl_nz_f32_t minidl_nz_f32 = mdl_nz_scalar_f32;
static mdl_nz_f64_t minidl_nz_f64 = mdl_nz_scalar_f64;

/* The nonzeros of x[0:n] (NaN counts as nonzero): comparisons and sums in vector
 * lanes, the count kept in integers as wide as the entries (so that the compiler
 * vectorises the loop: counting straight into a 64-bit total from float lanes is
 * 3x slower), in blocks that cannot overflow them. */
#define MDL_COUNT_BLOCK ((mdl_ssize)1 << 30)
#define MDL_DEFINE_COUNT(NAME, XT, CT)                                                  \
static mdl_ssize NAME(const XT *x, mdl_ssize n)                                          \
{                                                                                        \
    mdl_ssize total = 0;                                                                 \
    for (mdl_ssize s = 0; s < n; s += MDL_COUNT_BLOCK) {                                 \
        mdl_ssize e = n - s < MDL_COUNT_BLOCK ? n : s + MDL_COUNT_BLOCK;                 \
        CT c = 0;                                                                        \
        for (mdl_ssize k = s; k < e; k++)                                                \
            c += x[k] != 0;                                                              \
        total += c;                                                                      \
    }                                                                                    \
    return total;                                                                        \
}
MDL_DEFINE_COUNT(mdl_count_base_f32, float, int32_t)
MDL_DEFINE_COUNT(mdl_count_base_f64, double, int64_t)
#ifdef MINIDL_X86
__attribute__((target("avx2"))) MDL_DEFINE_COUNT(mdl_count_avx2_f32, float, int32_t)
__attribute__((target("avx2"))) MDL_DEFINE_COUNT(mdl_count_avx2_f64, double, int64_t)
#endif
typedef mdl_ssize (*mdl_count_f32_t)(const float *, mdl_ssize);
typedef mdl_ssize (*mdl_count_f64_t)(const double *, mdl_ssize);
/* set by minidl_sparse_init */
static mdl_count_f32_t minidl_count_f32 = mdl_count_base_f32;
static mdl_count_f64_t minidl_count_f64 = mdl_count_base_f64;

/* Column lists from the row lists of a batch (a counting sort): batch row i is
 * list row r = rows[i] (or i without rows). For each k, cidx/cval[cptr[k] :
 * cptr[k + 1]] are the batch rows i (increasing) with x[r, k] != 0 and their
 * values. cptr has K + 1 entries. */
#define MDL_DEFINE_CSC(SUF, XT)                                                          \
static void minidl_csc_##SUF(const int32_t *idx, const XT *val, const int64_t *ptr,      \
                             const int64_t *rows, mdl_ssize n, mdl_ssize K,              \
                             int32_t *cptr, int32_t *cidx, XT *cval)                     \
{                                                                                        \
    memset(cptr, 0, sizeof(int32_t) * (size_t)(K + 1));                                  \
    for (mdl_ssize i = 0; i < n; i++) {                                                  \
        mdl_ssize r = rows ? (mdl_ssize)rows[i] : i;                                     \
        for (int64_t p = ptr[r]; p < ptr[r + 1]; p++)                                    \
            cptr[idx[p] + 1]++;                                                          \
    }                                                                                    \
    for (mdl_ssize k = 0; k < K; k++)                                                    \
        cptr[k + 1] += cptr[k];                                                          \
    for (mdl_ssize i = 0; i < n; i++) { /* fill, with cptr[k] as the cursor */           \
        mdl_ssize r = rows ? (mdl_ssize)rows[i] : i;                                     \
        for (int64_t p = ptr[r]; p < ptr[r + 1]; p++) {                                  \
            int32_t q = cptr[idx[p]]++;                                                  \
            cidx[q] = (int32_t)i;                                                        \
            cval[q] = val[p];                                                            \
        }                                                                                \
    }                                                                                    \
    for (mdl_ssize k = K; k > 0; k--) /* shift the cursors back to the starts */         \
        cptr[k] = cptr[k - 1];                                                           \
    cptr[0] = 0;                                                                         \
}

MDL_DEFINE_CSC(f32, float)
MDL_DEFINE_CSC(f64, double)

/* ------------------------------------------------------------------------ */
/* 2-3. products, templated over (value type, compute type, vector width)    */
/* ------------------------------------------------------------------------ */
/* spmm:  out[i, :] = b + sum_p val[p] * W[idx[p], :] over the list of batch row
 *        i (list row rows[i], or i), for i in [i0, i1).
 * spmmt: for k in [k0, k1): acc = sum_q cval[q] * dout[cidx[q], :] over column
 *        k's list; then dst[k, :] = acc, or dst[k, :] += scale * acc when
 *        `accumulate` (an SGD step with scale = -lr, or a sum over chunks). */

/* Plain C: any compiler. Chunks of MDL_SCALAR_CHUNK output columns. */
#define MDL_SCALAR_CHUNK 64

#define MDL_SPMM_ARGS(XT, T) const int64_t *rows, mdl_ssize i0, mdl_ssize i1,              \
    const int32_t *idx, const XT *val, const int64_t *ptr, const T *W, mdl_ssize ldw,       \
    mdl_ssize H, const T *b, T *out, mdl_ssize ldo
#define MDL_SPMMT_ARGS(XT, T) const int32_t *cptr, const int32_t *cidx, const XT *cval,    \
    mdl_ssize k0, mdl_ssize k1, const T *dout, mdl_ssize ldd, mdl_ssize H, T *dst,          \
    mdl_ssize lddst, T scale, int accumulate

#define MDL_DEFINE_SCALAR(SUF, XT, T)                                                   \
static void mdl_spmm_scalar_##SUF(MDL_SPMM_ARGS(XT, T))                                 \
{                                                                                       \
    T acc[MDL_SCALAR_CHUNK];                                                            \
    for (mdl_ssize i = i0; i < i1; i++) {                                               \
        const mdl_ssize ri = rows ? (mdl_ssize)rows[i] : i;                             \
        const int64_t p0 = ptr[ri], p1 = ptr[ri + 1];                                   \
        for (mdl_ssize c0 = 0; c0 < H; c0 += MDL_SCALAR_CHUNK) {                        \
            mdl_ssize w = H - c0 < MDL_SCALAR_CHUNK ? H - c0 : MDL_SCALAR_CHUNK;        \
            for (mdl_ssize j = 0; j < w; j++) acc[j] = b ? b[c0 + j] : (T)0;            \
            for (int64_t p = p0; p < p1; p++) {                                         \
                T v = (T)val[p];                                                        \
                const T *wr = W + (mdl_ssize)idx[p] * ldw + c0;                         \
                for (mdl_ssize j = 0; j < w; j++) acc[j] += v * wr[j];                  \
            }                                                                           \
            for (mdl_ssize j = 0; j < w; j++) out[i * ldo + c0 + j] = acc[j];           \
        }                                                                               \
    }                                                                                   \
}                                                                                       \
static void mdl_spmmt_scalar_##SUF(MDL_SPMMT_ARGS(XT, T))                               \
{                                                                                       \
    T acc[MDL_SCALAR_CHUNK];                                                            \
    for (mdl_ssize k = k0; k < k1; k++) {                                               \
        for (mdl_ssize c0 = 0; c0 < H; c0 += MDL_SCALAR_CHUNK) {                        \
            mdl_ssize w = H - c0 < MDL_SCALAR_CHUNK ? H - c0 : MDL_SCALAR_CHUNK;        \
            for (mdl_ssize j = 0; j < w; j++) acc[j] = 0;                               \
            for (int32_t q = cptr[k]; q < cptr[k + 1]; q++) {                           \
                T v = (T)cval[q];                                                       \
                const T *dr = dout + (mdl_ssize)cidx[q] * ldd + c0;                     \
                for (mdl_ssize j = 0; j < w; j++) acc[j] += v * dr[j];                  \
            }                                                                           \
            T *o = dst + k * lddst + c0;                                                \
            if (accumulate) { for (mdl_ssize j = 0; j < w; j++) o[j] += scale * acc[j]; } \
            else { for (mdl_ssize j = 0; j < w; j++) o[j] = acc[j]; }                   \
        }                                                                               \
    }                                                                                   \
}

MDL_DEFINE_SCALAR(ff, float, float)
MDL_DEFINE_SCALAR(fd, float, double)
MDL_DEFINE_SCALAR(dd, double, double)

#ifdef MINIDL_VECEXT
/* Vector code. VT is a GCC vector of L elements of T; up to NVMAX accumulator
 * vectors stay in registers. An output row chunk of width w is covered by
 * nv = ceil(w / L) vectors; when L does not divide w, the last vector is loaded
 * at the chunk's end (overlapping the one before) and only its new lanes are
 * stored. Rows narrower than one vector go to the scalar code. */

#define MDL_LOADV(VT, p) ({ VT _v; memcpy(&_v, (p), sizeof(VT)); _v; })
/* rows ahead whose lists are prefetched when the rows are picked by index */
#define MDL_PREFETCH 4

/* Ask for every cache line of list row r (a dataset's lists are far larger than
 * the caches, and a batch picks its rows at random). */
static inline void minidl_prefetch_list(const int32_t *idx, const void *val, size_t vsize,
                                     const int64_t *ptr, int64_t r)
{
    const char *pi = (const char *)(idx + ptr[r]), *ei = (const char *)(idx + ptr[r + 1]);
    const char *pv = (const char *)val + ptr[r] * vsize, *ev = (const char *)val + ptr[r + 1] * vsize;
    for (; pi < ei; pi += 64) __builtin_prefetch(pi);
    for (; pv < ev; pv += 64) __builtin_prefetch(pv);
}

/* acc[0..NV) += v * row[...]: NV - 1 vectors from the start, the last at `last`. */
#define MDL_ACC(NV, VT, v, row, last)                                        \
    do {                                                                     \
        for (int _j = 0; _j < (NV) - 1; _j++)                                \
            acc[_j] += (v) * MDL_LOADV(VT, (row) + _j * L);                  \
        acc[(NV) - 1] += (v) * MDL_LOADV(VT, (row) + (last));                \
    } while (0)

/* Inner loops with a compile-time vector count: one `case` per count. */
#define MDL_SPMM_CASE(NV, VT, T)                                             \
    case NV: {                                                               \
        VT acc[NV];                                                          \
        for (int _j = 0; _j < (NV) - 1; _j++)                                \
            acc[_j] = b ? MDL_LOADV(VT, b + c0 + _j * L) : (VT){0};          \
        acc[(NV) - 1] = b ? MDL_LOADV(VT, b + c0 + last) : (VT){0};          \
        for (int64_t p = p0; p < p1; p++) {                                  \
            VT vv = (T)val[p] - (VT){0};  /* broadcast */                    \
            const T *wr = W + (mdl_ssize)idx[p] * ldw + c0;                  \
            MDL_ACC(NV, VT, vv, wr, last);                                   \
        }                                                                    \
        for (int _j = 0; _j < (NV) - 1; _j++)                                \
            memcpy(o + _j * L, &acc[_j], sizeof(VT));                        \
        memcpy(tail, &acc[(NV) - 1], sizeof(VT));                            \
        break;                                                               \
    }

#define MDL_SPMMT_CASE(NV, VT, T)                                            \
    case NV: {                                                               \
        VT acc[NV];                                                          \
        for (int _j = 0; _j < (NV); _j++) acc[_j] = (VT){0};                 \
        for (int32_t q = cptr[k]; q < cptr[k + 1]; q++) {                    \
            VT vv = (T)cval[q] - (VT){0};                                    \
            const T *dr = dout + (mdl_ssize)cidx[q] * ldd + c0;              \
            MDL_ACC(NV, VT, vv, dr, last);                                   \
        }                                                                    \
        for (int _j = 0; _j < (NV) - 1; _j++)                                \
            memcpy(res + _j * L, &acc[_j], sizeof(VT));                      \
        memcpy(res + last, &acc[(NV) - 1], sizeof(VT));                      \
        break;                                                               \
    }

#define MDL_CASES(M, VT, T) \
    M(1, VT, T) M(2, VT, T) M(3, VT, T) M(4, VT, T) M(5, VT, T) M(6, VT, T) M(7, VT, T) \
    M(8, VT, T) M(9, VT, T) M(10, VT, T) M(11, VT, T) M(12, VT, T) M(13, VT, T)

/* Column chunks. The rows a product reads again and again (W's rows in spmm,
 * dout's in spmmt) are read a chunk of columns at a time. When `reach` rows of a
 * chunk fit in MDL_L1_BYTES (the level-1 data cache of most x86 cores) and a call
 * reads them for enough rows of output, the chunk is as wide as fits: its rows
 * stay in L1 over the call (measured on Zen 3, 128 x 100 x 100 float64 with half
 * the inputs zero, one thread: spmm 74 -> 64 us, spmmt 91 -> 67 us). Otherwise
 * the rows come from L2 anyway and the widest chunk (the most independent
 * accumulators, the fewest passes over the lists) is the fastest. The sums are
 * the same either way: each output sums the same list in the same order. */
#define MDL_L1_BYTES 32768
#define MDL_MIN_CHUNK 4  /* vectors: narrower chunks re-read the lists too often */
#define MDL_MIN_REUSE 32 /* output rows (spmm) or dW rows (spmmt) of a call */

static inline mdl_ssize mdl_chunk_vectors(mdl_ssize reach, mdl_ssize uses, mdl_ssize vbytes,
                                          mdl_ssize nvmax)
{
    mdl_ssize fit = MDL_L1_BYTES / ((reach > 0 ? reach : 1) * vbytes);
    return fit < MDL_MIN_CHUNK || fit > nvmax || uses < MDL_MIN_REUSE ? nvmax : fit;
}

/* Chunk c of nch, splitting a row of H columns (nvt vectors of L) evenly in
 * vectors: columns [*c0, *c0 + *w). Every chunk but the last is whole vectors;
 * the last is at least one vector wide unless it is the only one. */
static inline void mdl_chunk(mdl_ssize H, mdl_ssize L, mdl_ssize nvt, mdl_ssize nch,
                             mdl_ssize c, mdl_ssize *c0, mdl_ssize *w)
{
    mdl_ssize v0 = c * nvt / nch, v1 = (c + 1) * nvt / nch;
    *c0 = v0 * L;
    *w = (v1 * L < H ? v1 * L : H) - *c0;
}

/* The two products for one (value type, compute type, ISA). NVMAX <= 13. */
#define MDL_DEFINE_VEC(SUF, BASE, XT, T, VT, NVMAX, ATTR)                               \
ATTR static void mdl_spmm_##SUF(MDL_SPMM_ARGS(XT, T))                                   \
{                                                                                       \
    enum { L = sizeof(VT) / sizeof(T) };                                                \
    if (H < L) {                                                                        \
        mdl_spmm_scalar_##BASE(rows, i0, i1, idx, val, ptr, W, ldw, H, b, out, ldo);    \
        return;                                                                         \
    }                                                                                   \
    mdl_ssize reach = 0; /* W's rows read: up to the largest index (lists increase) */  \
    for (mdl_ssize i = i0; i < i1; i++) {                                               \
        const mdl_ssize ri = rows ? (mdl_ssize)rows[i] : i;                             \
        if (ptr[ri + 1] > ptr[ri] && idx[ptr[ri + 1] - 1] >= reach)                     \
            reach = (mdl_ssize)idx[ptr[ri + 1] - 1] + 1;                                \
    }                                                                                   \
    const mdl_ssize nvt = (H + L - 1) / L;                                              \
    const mdl_ssize cnv = mdl_chunk_vectors(reach, i1 - i0, sizeof(VT), NVMAX);          \
    const mdl_ssize nch = (nvt + cnv - 1) / cnv;                                        \
    /* column chunks outermost: W's columns of one chunk stay in cache over all rows */ \
    for (mdl_ssize c = 0; c < nch; c++) {                                               \
        mdl_ssize c0, w;                                                                \
        mdl_chunk(H, L, nvt, nch, c, &c0, &w);                                          \
        int nv = (int)((w + L - 1) / L);                                                \
        mdl_ssize last = w - L; /* from c0; < 0 only in a narrow last chunk,            \
                                   where it reads the chunk before: in bounds */        \
        for (mdl_ssize i = i0; i < i1; i++) {                                           \
            const mdl_ssize ri = rows ? (mdl_ssize)rows[i] : i;                         \
            const int64_t p0 = ptr[ri], p1 = ptr[ri + 1];                               \
            if (rows && i + MDL_PREFETCH < i1 && c == 0) /* a batch's rows are scattered */ \
                minidl_prefetch_list(idx, val, sizeof(XT), ptr, rows[i + MDL_PREFETCH]);      \
            T *o = out + i * ldo + c0;                                                  \
            T tail[L];                                                                  \
            switch (nv) { MDL_CASES(MDL_SPMM_CASE, VT, T) }                             \
            for (mdl_ssize j = (mdl_ssize)(nv - 1) * L; j < w; j++)                     \
                o[j] = tail[j - last]; /* the last vector's new lanes */                \
        }                                                                               \
    }                                                                                   \
}                                                                                       \
ATTR static void mdl_spmmt_##SUF(MDL_SPMMT_ARGS(XT, T))                                 \
{                                                                                       \
    enum { L = sizeof(VT) / sizeof(T) };                                                \
    T res[NVMAX * L];                                                                   \
    mdl_ssize reach = 0; /* dout's rows read: up to the largest (column lists increase) */ \
    for (mdl_ssize k = k0; k < k1; k++)                                                 \
        if (cptr[k + 1] > cptr[k] && cidx[cptr[k + 1] - 1] >= reach)                    \
            reach = (mdl_ssize)cidx[cptr[k + 1] - 1] + 1;                               \
    const mdl_ssize nvt = (H + L - 1) / L;                                              \
    const mdl_ssize cnv = mdl_chunk_vectors(reach, k1 - k0, sizeof(VT), NVMAX);          \
    const mdl_ssize nch = (nvt + cnv - 1) / cnv;                                        \
    /* column chunks outermost: dout's columns of one chunk stay in cache over all k */ \
    for (mdl_ssize c = 0; c < nch; c++) {                                               \
        mdl_ssize c0, w;                                                                \
        mdl_chunk(H, L, nvt, nch, c, &c0, &w);                                          \
        int nv = (int)((w + L - 1) / L);                                                \
        mdl_ssize last = w - L;                                                         \
        for (mdl_ssize k = k0; k < k1; k++) {                                           \
            T *o = dst + k * lddst + c0;                                                \
            if (cptr[k] == cptr[k + 1]) { /* no input in this column: dW row is 0 */   \
                if (!accumulate) memset(o, 0, sizeof(T) * (size_t)w);                   \
                continue;                                                               \
            }                                                                           \
            if (last < 0) { /* narrower than one vector */                              \
                mdl_spmmt_scalar_##BASE(cptr, cidx, cval, k, k + 1, dout + c0, ldd, w,  \
                                        dst + c0, lddst, scale, accumulate);            \
                continue;                                                               \
            }                                                                           \
            switch (nv) { MDL_CASES(MDL_SPMMT_CASE, VT, T) }                            \
            if (accumulate) { for (mdl_ssize j = 0; j < w; j++) o[j] += scale * res[j]; } \
            else memcpy(o, res, sizeof(T) * (size_t)w);                                 \
        }                                                                               \
    }                                                                                   \
}

typedef float mdl_f16b __attribute__((vector_size(16)));
typedef double mdl_d16b __attribute__((vector_size(16)));
/* baseline ISA: 16-byte vectors (SSE2, NEON), 12 accumulators */
MDL_DEFINE_VEC(ff16, ff, float, float, mdl_f16b, 12, )
MDL_DEFINE_VEC(fd16, fd, float, double, mdl_d16b, 12, )
MDL_DEFINE_VEC(dd16, dd, double, double, mdl_d16b, 12, )

#ifdef MINIDL_X86
typedef float mdl_f32b __attribute__((vector_size(32)));
typedef double mdl_d32b __attribute__((vector_size(32)));
#define MDL_AVX2 __attribute__((target("avx2,fma")))
/* AVX2 + FMA: 32-byte vectors, 13 accumulators of the 16 registers */
MDL_DEFINE_VEC(ff32, ff, float, float, mdl_f32b, 13, MDL_AVX2)
MDL_DEFINE_VEC(fd32, fd, float, double, mdl_d32b, 13, MDL_AVX2)
MDL_DEFINE_VEC(dd32, dd, double, double, mdl_d32b, 13, MDL_AVX2)
#endif
#endif /* MINIDL_VECEXT */

/* ------------------------------------------------------------------------ */
/* dispatch                                                                  */
/* ------------------------------------------------------------------------ */

typedef void (*mdl_spmm_ff_t)(MDL_SPMM_ARGS(float, float));
typedef void (*mdl_spmm_fd_t)(MDL_SPMM_ARGS(float, double));
typedef void (*mdl_spmm_dd_t)(MDL_SPMM_ARGS(double, double));
typedef void (*mdl_spmmt_ff_t)(MDL_SPMMT_ARGS(float, float));
typedef void (*mdl_spmmt_fd_t)(MDL_SPMMT_ARGS(float, double));
typedef void (*mdl_spmmt_dd_t)(MDL_SPMMT_ARGS(double, double));

static mdl_spmm_ff_t minidl_spmm_ff = mdl_spmm_scalar_ff;
static mdl_spmm_fd_t minidl_spmm_fd = mdl_spmm_scalar_fd;
static mdl_spmm_dd_t minidl_spmm_dd = mdl_spmm_scalar_dd;
static mdl_spmmt_ff_t minidl_spmmt_ff = mdl_spmmt_scalar_ff;
static mdl_spmmt_fd_t minidl_spmmt_fd = mdl_spmmt_scalar_fd;
static mdl_spmmt_dd_t minidl_spmmt_dd = mdl_spmmt_scalar_dd;

/* Pick the kernels for this CPU. isa: 2 = the best available (AVX2+FMA when
 * the CPU has it), 1 = the baseline vectors, 0 = plain C. Returns the name of
 * the kernels in use: "avx2", "sse2" (or "vector" off x86) or "scalar". */
static const char *minidl_sparse_init(int isa)
{
    minidl_spmm_ff = mdl_spmm_scalar_ff; minidl_spmm_fd = mdl_spmm_scalar_fd;
    minidl_spmm_dd = mdl_spmm_scalar_dd; minidl_spmmt_ff = mdl_spmmt_scalar_ff;
    minidl_spmmt_fd = mdl_spmmt_scalar_fd; minidl_spmmt_dd = mdl_spmmt_scalar_dd;
    minidl_nz_f32 = mdl_nz_scalar_f32; minidl_nz_f64 = mdl_nz_scalar_f64;
    minidl_count_f32 = mdl_count_base_f32; minidl_count_f64 = mdl_count_base_f64;
    if (isa < 1)
        return "scalar";
    minidl_nz_f32 = mdl_nz_sse_f32; minidl_nz_f64 = mdl_nz_sse_f64;
#ifdef MINIDL_VECEXT
    minidl_spmm_ff = mdl_spmm_ff16; minidl_spmm_fd = mdl_spmm_fd16; minidl_spmm_dd = mdl_spmm_dd16;
    minidl_spmmt_ff = mdl_spmmt_ff16; minidl_spmmt_fd = mdl_spmmt_fd16;
    minidl_spmmt_dd = mdl_spmmt_dd16;
#ifdef MINIDL_X86
    __builtin_cpu_init();
    if (isa >= 2 && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
        minidl_spmm_ff = mdl_spmm_ff32; minidl_spmm_fd = mdl_spmm_fd32;
        minidl_spmm_dd = mdl_spmm_dd32; minidl_spmmt_ff = mdl_spmmt_ff32;
        minidl_spmmt_fd = mdl_spmmt_fd32; minidl_spmmt_dd = mdl_spmmt_dd32;
        minidl_count_f32 = mdl_count_avx2_f32; minidl_count_f64 = mdl_count_avx2_f64;
        if (__builtin_cpu_supports("popcnt")) {
            mdl_pack_tables();
            minidl_nz_f32 = mdl_nz_avx2_f32; minidl_nz_f64 = mdl_nz_avx2_f64;
        }
        return "avx2";
    }
    return "sse2";
#else
    return "vector";
#endif
#else
    return "scalar";
#endif
}

#endif /* MINIDL_SPARSE_H */
