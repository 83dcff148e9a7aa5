/* Unit tests for strict UTF-8 validation and code point counting. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "kefu/utf8.h"

#define VALID(s) assert_int_equal(kf_utf8_valid(s, sizeof(s) - 1), 1)
#define INVALID(s) assert_int_equal(kf_utf8_valid(s, sizeof(s) - 1), 0)

static void test_ascii(void **state) {
    (void)state;
    assert_int_equal(kf_utf8_valid("", 0), 1);
    assert_int_equal(kf_utf8_valid(NULL, 0), 1);
    VALID("hello");
    VALID("a long ascii run that exceeds eight bytes several times over!!");
    VALID("with\0nul");
    VALID("\x7f");
}

static void test_multibyte_valid(void **state) {
    (void)state;
    VALID("\xc2\x80");                 /* U+0080 */
    VALID("\xdf\xbf");                 /* U+07FF */
    VALID("\xe0\xa0\x80");             /* U+0800 */
    VALID("\xed\x9f\xbf");             /* U+D7FF */
    VALID("\xee\x80\x80");             /* U+E000 */
    VALID("\xef\xbf\xbf");             /* U+FFFF */
    VALID("\xf0\x90\x80\x80");         /* U+10000 */
    VALID("\xf4\x8f\xbf\xbf");         /* U+10FFFF */
    VALID("你好，世界");
    VALID("emoji \xf0\x9f\x98\x80 ok");
    VALID("mixed ascii then 中文 then ascii again and more ascii bytes");
}

static void test_overlong(void **state) {
    (void)state;
    INVALID("\xc0\x80");
    INVALID("\xc1\xbf");
    INVALID("\xe0\x80\x80");
    INVALID("\xe0\x9f\xbf");
    INVALID("\xf0\x80\x80\x80");
    INVALID("\xf0\x8f\xbf\xbf");
}

static void test_surrogates_and_range(void **state) {
    (void)state;
    INVALID("\xed\xa0\x80"); /* U+D800 */
    INVALID("\xed\xbf\xbf"); /* U+DFFF */
    INVALID("\xf4\x90\x80\x80"); /* U+110000 */
    INVALID("\xf5\x80\x80\x80");
    INVALID("\xf8\x88\x80\x80\x80");
    INVALID("\xff");
    INVALID("\xfe");
}

static void test_bad_continuation(void **state) {
    (void)state;
    INVALID("\x80");
    INVALID("abc\xbf");
    INVALID("\xc2\x41");
    INVALID("\xe4\xbd\x41");
    INVALID("\xf0\x9f\x98\x41");
    INVALID("\xc2\xc2\x80");
}

static void test_truncated(void **state) {
    (void)state;
    INVALID("\xc2");
    INVALID("\xe4\xbd");
    INVALID("\xf0\x9f\x98");
    INVALID("12345678\xe4");
    /* a valid sequence cut by len must be rejected without reading past len */
    const char s[] = "\xe4\xbd\xa0";
    assert_int_equal(kf_utf8_valid(s, 2), 0);
    assert_int_equal(kf_utf8_valid(s, 3), 1);
}

static void test_every_two_byte_lead(void **state) {
    (void)state;
    char b[2];
    for (int lead = 0x80; lead <= 0xff; lead++) {
        b[0] = (char)lead;
        b[1] = (char)0x80;
        assert_int_equal(kf_utf8_valid(b, 2), lead >= 0xc2 && lead <= 0xdf);
    }
}

static void test_invalid_after_ascii_run(void **state) {
    (void)state;
    char buf[64];
    for (size_t pos = 0; pos < sizeof(buf); pos++) {
        memset(buf, 'a', sizeof(buf));
        buf[pos] = (char)0x80;
        assert_int_equal(kf_utf8_valid(buf, sizeof(buf)), 0);
        assert_int_equal(kf_utf8_valid(buf, pos), 1);
    }
}

static void test_len(void **state) {
    (void)state;
    assert_int_equal(kf_utf8_len("", 0), 0);
    assert_int_equal(kf_utf8_len("abc", 3), 3);
    assert_int_equal(kf_utf8_len("你好", 6), 2);
    assert_int_equal(kf_utf8_len("a\xf0\x9f\x98\x80z", 6), 3);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ascii),
        cmocka_unit_test(test_multibyte_valid),
        cmocka_unit_test(test_overlong),
        cmocka_unit_test(test_surrogates_and_range),
        cmocka_unit_test(test_bad_continuation),
        cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_every_two_byte_lead),
        cmocka_unit_test(test_invalid_after_ascii_run),
        cmocka_unit_test(test_len),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
