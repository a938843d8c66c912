/* Single-sweep CPU passes for L2BN on contiguous (N, C, *spatial) tensors.
 *
 * A "row" is one (sample, channel) pair: M contiguous values. Every pass is one sweep over the big
 * tensors; the per-row coefficients are computed in Python from the per-row sums. Sums are taken in
 * blocks of the tensor's own type (vectorized) and carried in double between blocks, and shifted by
 * a per-row reference value to avoid cancellation.
 */
#include <math.h>
#include <stdint.h>

#define BLOCK 1024

#define DEFINE_KERNELS(T, SUF)                                                                      \
void row_moments_##SUF(const T *x, int64_t rows, int64_t m, T *mean, T *var, int nt) {             \
    _Pragma("omp parallel for schedule(static) num_threads(nt)")                                   \
    for (int64_t r = 0; r < rows; ++r) {                                                           \
        const T *p = x + r * m;                                                                    \
        const T x0 = p[0];                                                                         \
        double s = 0.0, ss = 0.0;                                                                  \
        for (int64_t j0 = 0; j0 < m; j0 += BLOCK) {                                                \
            const int64_t j1 = j0 + BLOCK < m ? j0 + BLOCK : m;                                    \
            T a = 0, b = 0;                                                                        \
            _Pragma("omp simd reduction(+:a,b)")                                                   \
            for (int64_t j = j0; j < j1; ++j) { const T d = p[j] - x0; a += d; b += d * d; }       \
            s += a; ss += b;                                                                       \
        }                                                                                          \
        const double mu = s / (double)m;                                                           \
        const double v = ss / (double)m - mu * mu;                                                 \
        mean[r] = (T)(x0 + mu);                                                                    \
        var[r] = (T)(v > 0.0 ? v : 0.0);                                                           \
    }                                                                                              \
}                                                                                                  \
                                                                                                   \
void affine_rows_##SUF(const T *x, int64_t rows, int64_t m, int64_t c, const T *scale,             \
                       const T *shift, T *y, int nt) {                                             \
    _Pragma("omp parallel for schedule(static) num_threads(nt)")                                   \
    for (int64_t r = 0; r < rows; ++r) {                                                           \
        const T *p = x + r * m; T *q = y + r * m;                                                  \
        const T a = scale[r], b = shift[r % c];                                                    \
        _Pragma("omp simd")                                                                        \
        for (int64_t j = 0; j < m; ++j) q[j] = p[j] * a + b;                                       \
    }                                                                                              \
}                                                                                                  \
                                                                                                   \
void row_grad_sums_##SUF(const T *dy, const T *x, const T *center, int64_t rows, int64_t m,        \
                         T *t1, T *tc, int nt) {                                                   \
    _Pragma("omp parallel for schedule(static) num_threads(nt)")                                   \
    for (int64_t r = 0; r < rows; ++r) {                                                           \
        const T *g = dy + r * m, *p = x + r * m;                                                   \
        const T c0 = center[r];                                                                    \
        double s = 0.0, sc = 0.0;                                                                  \
        for (int64_t j0 = 0; j0 < m; j0 += BLOCK) {                                                \
            const int64_t j1 = j0 + BLOCK < m ? j0 + BLOCK : m;                                    \
            T a = 0, b = 0;                                                                        \
            _Pragma("omp simd reduction(+:a,b)")                                                   \
            for (int64_t j = j0; j < j1; ++j) { a += g[j]; b += g[j] * (p[j] - c0); }              \
            s += a; sc += b;                                                                       \
        }                                                                                          \
        t1[r] = (T)s; tc[r] = (T)sc;                                                               \
    }                                                                                              \
}                                                                                                  \
                                                                                                   \
void grad_combine_##SUF(const T *dy, const T *x, int64_t rows, int64_t m, const T *pc,             \
                        const T *qc, const T *rc, T *dx, int nt) {                                 \
    _Pragma("omp parallel for schedule(static) num_threads(nt)")                                   \
    for (int64_t r = 0; r < rows; ++r) {                                                           \
        const T *g = dy + r * m, *p = x + r * m; T *o = dx + r * m;                                \
        const T a = pc[r], b = qc[r], k = rc[r];                                                   \
        _Pragma("omp simd")                                                                        \
        for (int64_t j = 0; j < m; ++j) o[j] = g[j] * a + p[j] * b + k;                            \
    }                                                                                              \
}

DEFINE_KERNELS(float, f32)
DEFINE_KERNELS(double, f64)
