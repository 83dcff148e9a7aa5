/* Log-linear latency histogram (see hist.h). */
#include "hist.h"

#include <string.h>

#define SUB (1u << KL_HIST_SUB_BITS)

static inline uint64_t ld(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
static inline void st(uint64_t *p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_RELAXED); }

void kl_hist_init(kl_hist *h) {
    memset(h, 0, sizeof(*h));
    h->min = UINT64_MAX;
}

size_t kl_hist_index(uint64_t v) {
    if (v < KL_HIST_LINEAR) return (size_t)v;
    unsigned e = 63u - (unsigned)__builtin_clzll(v);
    if (e > KL_HIST_MAX_EXP) return KL_HIST_BUCKETS - 1;
    unsigned sub = (unsigned)(v >> (e - KL_HIST_SUB_BITS)) & (SUB - 1);
    return KL_HIST_LINEAR + (size_t)(e - 6) * SUB + sub;
}

uint64_t kl_hist_lo(size_t i) {
    if (i < KL_HIST_LINEAR) return i;
    size_t k = i - KL_HIST_LINEAR;
    unsigned e = 6 + (unsigned)(k / SUB), sub = (unsigned)(k % SUB);
    return (uint64_t)(SUB + sub) << (e - KL_HIST_SUB_BITS);
}

uint64_t kl_hist_hi(size_t i) {
    if (i < KL_HIST_LINEAR) return i;
    size_t k = i - KL_HIST_LINEAR;
    unsigned e = 6 + (unsigned)(k / SUB);
    return kl_hist_lo(i) + (1ull << (e - KL_HIST_SUB_BITS)) - 1;
}

void kl_hist_add(kl_hist *h, uint64_t v) {
    size_t i = kl_hist_index(v);
    st(&h->b[i], h->b[i] + 1);
    st(&h->count, h->count + 1);
    st(&h->sum, h->sum + v);
    if (v > h->max) st(&h->max, v);
    if (v < h->min) st(&h->min, v);
}

void kl_hist_merge(kl_hist *dst, const kl_hist *src) {
    for (size_t i = 0; i < KL_HIST_BUCKETS; i++) dst->b[i] += ld(&src->b[i]);
    dst->count += ld(&src->count);
    dst->sum += ld(&src->sum);
    uint64_t mx = ld(&src->max), mn = ld(&src->min);
    if (mx > dst->max) dst->max = mx;
    if (mn < dst->min) dst->min = mn;
}

void kl_hist_diff(kl_hist *out, const kl_hist *a, const kl_hist *b) {
    kl_hist_init(out);
    for (size_t i = 0; i < KL_HIST_BUCKETS; i++) {
        uint64_t x = a->b[i], y = b->b[i];
        out->b[i] = x > y ? x - y : 0;
        if (out->b[i]) {
            if (out->min == UINT64_MAX) out->min = kl_hist_lo(i);
            out->max = kl_hist_hi(i);
        }
    }
    out->count = a->count > b->count ? a->count - b->count : 0;
    out->sum = a->sum > b->sum ? a->sum - b->sum : 0;
    if (out->max > a->max) out->max = a->max;
}

uint64_t kl_hist_quantile(const kl_hist *h, double q) {
    uint64_t total = 0;
    for (size_t i = 0; i < KL_HIST_BUCKETS; i++) total += h->b[i];
    if (total == 0) return 0;
    if (q < 0) q = 0;
    if (q >= 1) return h->max ? h->max : kl_hist_hi(KL_HIST_BUCKETS - 1);
    double want = q * (double)total;
    uint64_t rank = (uint64_t)want;
    if ((double)rank < want) rank++; /* the smallest value with at least q of all at or below it */
    if (rank < 1) rank = 1;
    if (rank > total) rank = total;
    uint64_t seen = 0;
    for (size_t i = 0; i < KL_HIST_BUCKETS; i++) {
        seen += h->b[i];
        if (seen >= rank) {
            uint64_t lo = kl_hist_lo(i), hi = kl_hist_hi(i), mid = lo + (hi - lo) / 2;
            if (h->max && mid > h->max) mid = h->max;
            if (h->min != UINT64_MAX && mid < h->min) mid = h->min;
            return mid;
        }
    }
    return h->max;
}
