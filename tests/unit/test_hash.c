/* Unit tests for the string hash (64-bit FNV-1a) and the uthash settings of kefu/hash.h. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "kefu/hash.h"

/* Published FNV-1a 64 test vectors (the three copies this header replaced had an offset basis
 * missing its last digit: a hash, but not FNV). */
static void test_fnv1a_vectors(void **state) {
    (void)state;
    assert_true(kf_hash_str("") == 0xcbf29ce484222325ull);
    assert_true(kf_hash_str("a") == 0xaf63dc4c8601ec8cull);
    assert_true(kf_hash_str("foobar") == 0x85944171f73967e8ull);
    assert_true(kf_hash("foobar", 6) == 0x85944171f73967e8ull);
}

static void test_variants_agree(void **state) {
    (void)state;
    const char *s = "kefu:{u:c-42}:nodes";
    size_t n = strlen(s);
    assert_true(kf_hash(s, n) == kf_hash_str(s));
    /* continuing over a second piece is the hash of both together */
    assert_true(kf_hash_more(kf_hash(s, 5), s + 5, n - 5) == kf_hash_str(s));
    /* bytes above 0x7f count as unsigned */
    assert_true(kf_hash("\xe5\xae\xa2", 3) == kf_hash_str("\xe5\xae\xa2"));
    uint64_t h = kf_hash(s, n);
    assert_int_equal(kf_hash32(s, n), (uint32_t)(h ^ (h >> 32)));
}

struct item {
    UT_hash_handle hh;
    int n;
    char key[];
};

/* uthash tables hash with kf_hash32, keep insertion order, and survive deletes while iterating. */
static void test_uthash_settings(void **state) {
    (void)state;
    struct item *table = NULL, *it, *tmp;
    enum { N = 5000 };
    for (int i = 0; i < N; i++) {
        char key[32];
        int len = snprintf(key, sizeof(key), "user-%d", i);
        it = kf_calloc(1, sizeof(*it) + (size_t)len + 1);
        memcpy(it->key, key, (size_t)len + 1);
        it->n = i;
        HASH_ADD_KEYPTR(hh, table, it->key, (unsigned)len, it);
        assert_int_equal(it->hh.hashv, kf_hash32(key, (size_t)len));
    }
    assert_int_equal(HASH_COUNT(table), N);
    HASH_FIND(hh, table, "user-4321", 9, it);
    assert_non_null(it);
    assert_int_equal(it->n, 4321);
    HASH_FIND(hh, table, "user-43210", 10, it);
    assert_null(it);
    int next = 0;
    HASH_ITER(hh, table, it, tmp) {
        assert_int_equal(it->n, next);
        next++;
        if (it->n % 2 == 0) {
            HASH_DEL(table, it);
            kf_free(it);
        }
    }
    assert_int_equal(next, N);
    assert_int_equal(HASH_COUNT(table), N / 2);
    next = 1;
    for (it = table; it; it = it->hh.next, next += 2) assert_int_equal(it->n, next);
    HASH_ITER(hh, table, it, tmp) {
        HASH_DEL(table, it);
        kf_free(it);
    }
    assert_null(table);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fnv1a_vectors),
        cmocka_unit_test(test_variants_agree),
        cmocka_unit_test(test_uthash_settings),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
