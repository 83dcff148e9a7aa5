/* The one string hash of kefu (64-bit FNV-1a), and the settings every uthash table uses.
 *
 * Include this header instead of <uthash.h>: uthash picks its hash function when it is
 * included, and two files hashing one table differently would miss each other's entries (a
 * file that includes <uthash.h> first and this header later fails to build: HASH_FUNCTION is
 * redefined). */
#ifndef KEFU_HASH_H
#define KEFU_HASH_H

#include <stddef.h>
#include <stdint.h>

#include "kefu/alloc.h"

#define KF_FNV_OFFSET 14695981039346656037ull
#define KF_FNV_PRIME 1099511628211ull

/** 64-bit FNV-1a of n bytes, continuing from h (KF_FNV_OFFSET to start). */
static inline uint64_t kf_hash_more(uint64_t h, const void *p, size_t n) {
    const unsigned char *s = p;
    for (size_t i = 0; i < n; i++) h = (h ^ s[i]) * KF_FNV_PRIME;
    return h;
}

/** 64-bit FNV-1a of n bytes. */
static inline uint64_t kf_hash(const void *p, size_t n) { return kf_hash_more(KF_FNV_OFFSET, p, n); }

/** 64-bit FNV-1a of a NUL-terminated string (the same value as kf_hash(s, strlen(s))). */
static inline uint64_t kf_hash_str(const char *s) {
    uint64_t h = KF_FNV_OFFSET;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * KF_FNV_PRIME;
    return h;
}

/** 32 bits for a table index. FNV's low bits only see the low bits of each byte (the multiply
 * carries upwards only), so a small table indexed by them would mix up ids that differ in a
 * byte's high bits; folding the high half in gives every bit a say. */
static inline uint32_t kf_hash32(const void *p, size_t n) {
    uint64_t h = kf_hash(p, n);
    return (uint32_t)(h ^ (h >> 32));
}

/* uthash: FNV-1a instead of its Jenkins hash, and the aborting allocator (a table that cannot
 * grow would otherwise exit(-1) without a word). The handle (UT_hash_handle, 56 bytes on
 * x86-64) has no smaller variant. */
#define HASH_FUNCTION(keyptr, keylen, hashv) ((hashv) = kf_hash32((keyptr), (size_t)(keylen)))
#define uthash_malloc(sz) kf_malloc(sz)
#define uthash_free(ptr, sz) kf_free(ptr)
#include <uthash.h>

#endif
