/* Unit tests for phone number and e-mail masking and for the tags of user ids in logs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "kefu/mask.h"

static void check(const char *in, const char *want) {
    char out[512];
    size_t n = kf_mask_pii(out, sizeof(out), in);
    assert_string_equal(out, want);
    assert_int_equal(n, strlen(want));
}

static void test_phone(void **state) {
    (void)state;
    check("13812345678", "138****5678");
    check("call 13812345678 now", "call 138****5678 now");
    check("+8613812345678", "+861****5678");
    check("tel:+8613812345678.", "tel:+861****5678.");
    check("a 13812345678,13900001111 b", "a 138****5678,139****1111 b");
    check("123456789012345", "123****2345"); /* 15 digits */
    check("12345678901", "123****8901");     /* 11 digits */
}

/* Numbers as people write them (issue: masking at rest): groups, country codes, ID and bank
 * card numbers. */
static void test_grouped_numbers(void **state) {
    (void)state;
    check("138-1234-5678", "138****5678");
    check("138 1234 5678", "138****5678");
    check("call +86 13812345678 now", "call +861****5678 now");
    check("+86-138-1234-5678", "+861****5678");
    check("010-12345678", "010****5678");
    check("ID 11010519491231002X ok", "ID 110****002X ok");
    check("ID 110105194912310021", "ID 110****0021");
    check("card 4111 1111 1111 1111.", "card 4111****1111.");
    check("card 4111-1111-1111-1111", "card 4111****1111");
    check("6222021234567890128", "6222****0128"); /* 19 digits, Luhn */
    check("1234567890123456", "1234567890123456"); /* 16 digits, not Luhn: an order number */
    check("phone 13812345678 card 4111111111111111", "phone 138****5678 card 4111****1111");
}

static void test_phone_short_runs(void **state) {
    (void)state;
    check("1234567", "****4567");    /* 7 digits */
    check("12345678", "****5678");   /* 8 */
    check("1234567890", "****7890"); /* 10 */
}

static void test_not_phone(void **state) {
    (void)state;
    check("", "");
    check("123456", "123456");                     /* 6 digits */
    check("1234567890123456", "1234567890123456"); /* 16 digits */
    check("order 2026 item 42", "order 2026 item 42");
    check("2026-11-29 13:45", "2026-11-29 13:45"); /* a date: groups of 2 are not joined */
    check("12-345-678", "12-345-678");             /* nor after a short first group */
    check("100 000 000 yuan", "100 000 000 yuan");  /* thousands: an amount */
    check("1 250 000", "1 250 000");
    check("13812345678 2026-11-29", "138****5678 2026-11-29"); /* a number, then a date */
    check("1234 5678 9012 3456 7890 1234 5678", "1234 5678 9012 3456 7890 1234 5678");
    check("+", "+");
    check("+12", "+12");
}

static void test_email(void **state) {
    (void)state;
    check("john@example.com", "j***@example.com");
    check("mail john.doe+kefu@mail.example.co.uk please",
          "mail j***@mail.example.co.uk please");
    check("<a@b.cn>", "<a***@b.cn>");
    check("x@example.com.", "x***@example.com.");
    check("13812345678@qq.com", "1***@qq.com");
    check("one a@x.io two bob@y.org", "one a***@x.io two b***@y.org");
}

static void test_not_email(void **state) {
    (void)state;
    check("@alice hi", "@alice hi");
    check("user@localhost", "user@localhost");
    check("a@.com", "a@.com");
    check("a@b.", "a@b.");
    check("trailing @", "trailing @");
    check("x @ y.com", "x @ y.com");
}

static void test_utf8_untouched(void **state) {
    (void)state;
    check("你好，我的手机是13812345678，邮箱是zhang@example.cn。",
          "你好，我的手机是138****5678，邮箱是z***@example.cn。");
    check("客服小王 😀", "客服小王 😀");
    check("邮箱john@example.com", "邮箱j***@example.com");
}

static void test_truncation(void **state) {
    (void)state;
    char out[8];
    assert_int_equal(kf_mask_pii(out, sizeof(out), "hello world"), 7);
    assert_string_equal(out, "hello w");
    assert_int_equal(kf_mask_pii(out, sizeof(out), "13812345678"), 7);
    assert_string_equal(out, "138****");
    assert_int_equal(kf_mask_pii(out, 1, "abc"), 0);
    assert_string_equal(out, "");
    out[0] = 'x';
    assert_int_equal(kf_mask_pii(out, 0, "abc"), 0);
    assert_int_equal(out[0], 'x');
    assert_int_equal(kf_mask_pii(NULL, 10, "abc"), 0);
    assert_int_equal(kf_mask_pii(out, sizeof(out), NULL), 0);
    assert_string_equal(out, "");
    /* "ab你好": cut inside the second character drops it whole */
    assert_int_equal(kf_mask_pii(out, 7, "ab你好"), 5);
    assert_string_equal(out, "ab你");
    assert_int_equal(kf_mask_pii(out, 6, "ab你好"), 5);
    assert_int_equal(kf_mask_pii(out, 5, "ab你好"), 2);
    assert_string_equal(out, "ab");
    assert_int_equal(kf_mask_pii(out, 8, "ab你好"), 5);
    assert_string_equal(out, "ab你");
    char big[9];
    assert_int_equal(kf_mask_pii(big, sizeof(big), "ab你好"), 8);
    assert_string_equal(big, "ab你好");
}

/* Every prefix length of every dst size: exact-size heap buffers let ASan catch any overrun. */
static void test_bounds(void **state) {
    (void)state;
    const char *samples[] = {
        "13812345678", "john@example.com", "你好13812345678@qq.com", "+8613812345678",
        "a@b.c", "x@", "@", "1234567", "邮箱", "\xe4\xbd", "a@b.com.", "bob@y.org 138123456789",
    };
    for (size_t s = 0; s < sizeof(samples) / sizeof(samples[0]); s++) {
        size_t len = strlen(samples[s]);
        for (size_t cut = 0; cut <= len; cut++) {
            char *src = malloc(cut + 1);
            memcpy(src, samples[s], cut);
            src[cut] = '\0';
            for (size_t dl = 1; dl < 40; dl++) {
                char *dst = malloc(dl);
                size_t n = kf_mask_pii(dst, dl, src);
                assert_true(n < dl);
                assert_int_equal(strlen(dst), n);
                free(dst);
            }
            free(src);
        }
    }
}

/* User ids in logs: a keyed tag, the same for one id and key (what `openssl dgst -sha256 -hmac`
 * gives for "kefu-log-user:" + id), different under another key, nothing of the id in it. */
static void test_user_tag(void **state) {
    (void)state;
    char tag[KF_USER_TAG_LEN + 1];
    kf_mask_user(tag, "secret-1", 8, "alice");
    assert_string_equal(tag, "d2232b0c20f7");
    kf_mask_user(tag, "secret-2", 8, "alice");
    assert_string_equal(tag, "9768288f66da");
    kf_mask_user(tag, "secret-1", 8, "13812345678");
    assert_string_equal(tag, "c0eab8ac7d1c");
    char longid[400];
    memset(longid, 'x', sizeof(longid) - 1);
    longid[sizeof(longid) - 1] = '\0';
    kf_mask_user(tag, "k", 1, longid);
    assert_int_equal(strlen(tag), KF_USER_TAG_LEN);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_user_tag),
        cmocka_unit_test(test_phone),
        cmocka_unit_test(test_phone_short_runs),
        cmocka_unit_test(test_grouped_numbers),
        cmocka_unit_test(test_not_phone),
        cmocka_unit_test(test_email),
        cmocka_unit_test(test_not_email),
        cmocka_unit_test(test_utf8_untouched),
        cmocka_unit_test(test_truncation),
        cmocka_unit_test(test_bounds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
