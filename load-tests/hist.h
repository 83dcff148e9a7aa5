/* Log-linear latency histogram in nanoseconds: exact below 64 ns, then 32 sub-buckets per
 * power of two (under 3.2 % relative error) up to ~1100 s. Fixed size, so it can live in
 * shared memory and be merged or subtracted bucket by bucket. One writer per histogram; readers
 * in other processes see whole counters (relaxed atomics). */
#ifndef KEFU_LOAD_HIST_H
#define KEFU_LOAD_HIST_H

#include <stddef.h>
#include <stdint.h>

#define KL_HIST_SUB_BITS 5
#define KL_HIST_LINEAR 64                 /* values below this have their own bucket */
#define KL_HIST_MAX_EXP 39                /* 2^40 ns and above land in the last bucket */
#define KL_HIST_BUCKETS (KL_HIST_LINEAR + (KL_HIST_MAX_EXP - 6 + 1) * (1 << KL_HIST_SUB_BITS))

typedef struct kl_hist {
    uint64_t count;
    uint64_t sum;     /* of recorded values, ns */
    uint64_t max;
    uint64_t min;     /* UINT64_MAX when empty */
    uint64_t b[KL_HIST_BUCKETS];
} kl_hist;

void kl_hist_init(kl_hist *h);
/** Records one value (ns). */
void kl_hist_add(kl_hist *h, uint64_t v);
/** Adds every count of src to dst (reads src with atomic loads). */
void kl_hist_merge(kl_hist *dst, const kl_hist *src);
/** out = a - b bucket by bucket (an interval between two snapshots of one histogram); max and min
 * of out are estimated from the non-empty buckets. */
void kl_hist_diff(kl_hist *out, const kl_hist *a, const kl_hist *b);
/** Value at quantile q in [0,1] (bucket midpoint, clamped to max), 0 when empty. */
uint64_t kl_hist_quantile(const kl_hist *h, double q);
/** Bucket index of a value and the bounds [lo, hi] of a bucket. */
size_t kl_hist_index(uint64_t v);
uint64_t kl_hist_lo(size_t i);
uint64_t kl_hist_hi(size_t i);

#endif
