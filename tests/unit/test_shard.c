/* Unit tests for CRC16, Redis Cluster key slots and slot-to-shard ranges. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "kefu/shard.h"

static unsigned slot(const char *k) {
    return kf_key_slot(k, strlen(k));
}

static void test_crc16(void **state) {
    (void)state;
    assert_int_equal(kf_crc16("123456789", 9), 0x31C3);
    assert_int_equal(kf_crc16("", 0), 0);
    assert_int_equal(kf_crc16("A", 1), 0x58E5);
}

/* Bitwise reference implementation: shift each bit of each byte through poly 0x1021. */
static uint16_t crc16_ref(const unsigned char *p, size_t n) {
    uint16_t crc = 0;
    for (size_t i = 0; i < n; i++) {
        crc ^= (uint16_t)(p[i] << 8);
        for (int b = 0; b < 8; b++)
            crc = (crc & 0x8000) ? (uint16_t)((crc << 1) ^ 0x1021) : (uint16_t)(crc << 1);
    }
    return crc;
}

static void test_crc16_matches_bitwise(void **state) {
    (void)state;
    unsigned char buf[256];
    for (int i = 0; i < 256; i++) buf[i] = (unsigned char)(i * 7 + 3);
    for (size_t n = 0; n <= sizeof(buf); n++)
        assert_int_equal(kf_crc16((const char *)buf, n), crc16_ref(buf, n));
}

static void test_known_slots(void **state) {
    (void)state;
    assert_int_equal(slot("foo"), 12182);
    assert_int_equal(slot("bar"), 5061);
    assert_int_equal(slot("hello"), 866);
    assert_int_equal(slot(""), 0);
    assert_int_equal(slot("123456789"), 0x31C3 % 16384);
}

static void test_hash_tags(void **state) {
    (void)state;
    assert_int_equal(slot("{user1000}.following"), slot("{user1000}.followers"));
    assert_int_equal(slot("{user1000}.following"), slot("user1000"));
    assert_int_equal(slot("x{user1000}y{other}"), slot("user1000"));
    /* empty tag at the first '{': the whole key is hashed */
    assert_int_equal(slot("foo{}{bar}"), kf_crc16("foo{}{bar}", 10) % 16384);
    assert_int_not_equal(slot("foo{}{bar}"), slot("bar"));
    /* the tag runs from the first '{' to the first '}' */
    assert_int_equal(slot("foo{{bar}}zap"), slot("{bar"));
    assert_int_equal(slot("foo{{bar}}zap"), kf_crc16("{bar", 4) % 16384);
    assert_int_equal(slot("foo{bar}{zap}"), slot("bar"));
    /* no closing brace or a lone '{' at the end: the whole key */
    assert_int_equal(slot("foo{bar"), kf_crc16("foo{bar", 7) % 16384);
    assert_int_equal(slot("foo{"), kf_crc16("foo{", 4) % 16384);
    assert_int_equal(slot("}foo{"), kf_crc16("}foo{", 5) % 16384);
    /* len bounds the key: a tag closed only after len does not count */
    assert_int_equal(kf_key_slot("ab{cd}", 5), kf_crc16("ab{cd", 5) % 16384);
    assert_int_equal(kf_key_slot("{a}", 3), slot("a"));
}

static void test_slot_range(void **state) {
    (void)state;
    char key[32];
    for (int i = 0; i < 5000; i++) {
        int n = snprintf(key, sizeof(key), "conv:%d", i);
        assert_true(kf_key_slot(key, (size_t)n) < KF_SLOTS);
    }
}

static void test_slot_shard(void **state) {
    (void)state;
    assert_int_equal(kf_slot_shard(0, 1), 0);
    assert_int_equal(kf_slot_shard(16383, 1), 0);
    assert_int_equal(kf_slot_shard(0, 0), 0);
    assert_int_equal(kf_slot_shard(8191, 2), 0);
    assert_int_equal(kf_slot_shard(8192, 2), 1);
    assert_int_equal(kf_slot_shard(16383, 2), 1);
    /* 3 shards of 5461 slots; the last also takes the remaining 1 */
    assert_int_equal(kf_slot_shard(5460, 3), 0);
    assert_int_equal(kf_slot_shard(5461, 3), 1);
    assert_int_equal(kf_slot_shard(10921, 3), 1);
    assert_int_equal(kf_slot_shard(10922, 3), 2);
    assert_int_equal(kf_slot_shard(16383, 3), 2);
    /* 5 shards of 3276; the last takes 16384 - 4 * 3276 = 3280 */
    assert_int_equal(kf_slot_shard(13103, 5), 3);
    assert_int_equal(kf_slot_shard(13104, 5), 4);
    assert_int_equal(kf_slot_shard(16383, 5), 4);
    assert_int_equal(kf_slot_shard(16383, 16384), 16383);
    assert_int_equal(kf_slot_shard(7, 16384), 7);
}

static void test_slot_shard_contiguous(void **state) {
    (void)state;
    for (unsigned ns = 1; ns <= 64; ns++) {
        unsigned prev = 0, count = 0;
        for (unsigned s = 0; s < KF_SLOTS; s++) {
            unsigned sh = kf_slot_shard(s, ns);
            assert_true(sh < ns);
            assert_true(sh == prev || sh == prev + 1);
            if (sh != prev) {
                assert_int_equal(count, KF_SLOTS / ns);
                count = 0;
            }
            prev = sh;
            count++;
        }
        assert_int_equal(prev, ns - 1);
        assert_int_equal(count, KF_SLOTS / ns + KF_SLOTS % ns);
    }
}

static void test_key_shard(void **state) {
    (void)state;
    assert_int_equal(kf_key_shard("foo", 3, 2), 1);   /* 12182 */
    assert_int_equal(kf_key_shard("bar", 3, 2), 0);   /* 5061 */
    assert_int_equal(kf_key_shard("hello", 5, 4), 0); /* 866 */
    assert_int_equal(kf_key_shard("{foo}x", 6, 4), 2);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_crc16),
        cmocka_unit_test(test_crc16_matches_bitwise),
        cmocka_unit_test(test_known_slots),
        cmocka_unit_test(test_hash_tags),
        cmocka_unit_test(test_slot_range),
        cmocka_unit_test(test_slot_shard),
        cmocka_unit_test(test_slot_shard_contiguous),
        cmocka_unit_test(test_key_shard),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
