/* Unit tests for channel names, ticket day strings and ticket number formatting. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "kefu/ticket.h"

static void test_channel_valid(void **state) {
    (void)state;
    assert_int_equal(kf_channel_valid("web"), 1);
    assert_int_equal(kf_channel_valid("a"), 1);
    assert_int_equal(kf_channel_valid("wechat_mini-2"), 1);
    assert_int_equal(kf_channel_valid("abcdefghijklmnopqrstuvwx"), 1); /* 24 */
    assert_int_equal(kf_channel_valid("abcdefghijklmnopqrstuvwxy"), 0); /* 25 */
    assert_int_equal(kf_channel_valid(""), 0);
    assert_int_equal(kf_channel_valid(NULL), 0);
    assert_int_equal(kf_channel_valid("Web"), 0);
    assert_int_equal(kf_channel_valid("we b"), 0);
    assert_int_equal(kf_channel_valid("web."), 0);
    assert_int_equal(kf_channel_valid("微信"), 0);
    assert_int_equal(kf_channel_valid("web\n"), 0);
}

static void test_day(void **state) {
    (void)state;
    char day[9];
    setenv("TZ", "UTC", 1);
    tzset();
    kf_ticket_day(0, day);
    assert_string_equal(day, "19700101");
    kf_ticket_day(1795392000, day); /* 2026-11-23 00:00:00 UTC */
    assert_string_equal(day, "20261123");
    kf_ticket_day(1795391999, day);
    assert_string_equal(day, "20261122");
    kf_ticket_day((time_t)253402300799LL, day); /* 9999-12-31 23:59:59 */
    assert_string_equal(day, "99991231");
    kf_ticket_day((time_t)253402300800LL, day); /* year 10000 does not fit */
    assert_string_equal(day, "00000000");

    setenv("TZ", "Asia/Shanghai", 1);
    tzset();
    kf_ticket_day(1795391999 - 8 * 3600, day); /* 2026-11-22 15:59:59 UTC = 23:59:59 CST */
    assert_string_equal(day, "20261122");
    kf_ticket_day(1795392000 - 8 * 3600, day); /* 2026-11-23 00:00:00 CST */
    assert_string_equal(day, "20261123");
    setenv("TZ", "UTC", 1);
    tzset();
}

static void test_format(void **state) {
    (void)state;
    char out[64];
    assert_int_equal(kf_ticket_format(out, sizeof(out), "web", "20261123", 1), 16);
    assert_string_equal(out, "WEB-20261123-001");
    assert_int_equal(kf_ticket_format(out, sizeof(out), "web", "20261123", 42), 16);
    assert_string_equal(out, "WEB-20261123-042");
    assert_int_equal(kf_ticket_format(out, sizeof(out), "web", "20261123", 999), 16);
    assert_string_equal(out, "WEB-20261123-999");
    assert_int_equal(kf_ticket_format(out, sizeof(out), "web", "20261123", 1000), 17);
    assert_string_equal(out, "WEB-20261123-1000");
    assert_int_equal(kf_ticket_format(out, sizeof(out), "wechat_mini-2", "20260101", 123456), 29);
    assert_string_equal(out, "WECHAT_MINI-2-20260101-123456");
    assert_int_equal(kf_ticket_format(out, sizeof(out), "app", "20260101", 9223372036854775807LL), 32);
    assert_string_equal(out, "APP-20260101-9223372036854775807");
}

static void test_format_errors(void **state) {
    (void)state;
    char out[17];
    assert_int_equal(kf_ticket_format(out, sizeof(out), "web", "20261123", 0), -1);
    assert_string_equal(out, "");
    assert_int_equal(kf_ticket_format(out, sizeof(out), "web", "20261123", -5), -1);
    assert_int_equal(kf_ticket_format(out, sizeof(out), "Web", "20261123", 1), -1);
    assert_int_equal(kf_ticket_format(out, sizeof(out), "", "20261123", 1), -1);
    assert_int_equal(kf_ticket_format(out, sizeof(out), NULL, "20261123", 1), -1);
    const char shortday[9] = "2026112";
    assert_int_equal(kf_ticket_format(out, sizeof(out), "web", shortday, 1), -1);
    assert_int_equal(kf_ticket_format(out, sizeof(out), "web", "2026-1-1", 1), -1);
    assert_int_equal(kf_ticket_format(out, 0, "web", "20261123", 1), -1);
    /* exactly fits (16 + NUL), one byte short does not */
    assert_int_equal(kf_ticket_format(out, 17, "web", "20261123", 1), 16);
    assert_int_equal(kf_ticket_format(out, 16, "web", "20261123", 1), -1);
    assert_string_equal(out, "");
    assert_int_equal(kf_ticket_format(out, 17, "web", "20261123", 1000), -1);
}

/* Partitioned numbers: every (counter, partition) gets its own number, each partition's numbers
 * increase, the first 16 tickets of a day can be 1..16, and none reaches the mark a gateway
 * leaves in the single counter of earlier versions. */
static void test_number(void **state) {
    (void)state;
    assert_int_equal(kf_ticket_number(1, 0, 16), 1);
    assert_int_equal(kf_ticket_number(1, 15, 16), 16);
    assert_int_equal(kf_ticket_number(2, 0, 16), 17);
    assert_int_equal(kf_ticket_number(3, 5, 16), 38);
    static unsigned char seen[64 * 16 + 1];
    for (long long c = 1; c <= 64; c++) {
        for (unsigned p = 0; p < 16; p++) {
            long long n = kf_ticket_number(c, p, 16);
            assert_true(n >= 1 && n <= 64 * 16);
            assert_int_equal(seen[n], 0);
            seen[n] = 1;
            assert_int_equal((n - 1) % 16, p); /* the partition is legible from the number */
            if (c > 1) assert_true(n > kf_ticket_number(c - 1, p, 16));
        }
    }
    assert_int_equal(kf_ticket_number(0, 0, 16), -1);
    assert_int_equal(kf_ticket_number(-3, 0, 16), -1);
    assert_int_equal(kf_ticket_number(1, 16, 16), -1);
    assert_int_equal(kf_ticket_number(1, 0, 0), -1);
    long long last = (KF_TICKET_LEGACY_CLOSED - 1 - 15) / 16;
    assert_true(kf_ticket_number(last, 15, 16) < KF_TICKET_LEGACY_CLOSED);
    assert_int_equal(kf_ticket_number(last + 1, 15, 16), -1);
    assert_int_equal(kf_ticket_number(9223372036854775807LL, 0, 16), -1);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_channel_valid),
        cmocka_unit_test(test_day),
        cmocka_unit_test(test_format),
        cmocka_unit_test(test_format_errors),
        cmocka_unit_test(test_number),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
