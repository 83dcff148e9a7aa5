/* Unit tests for the bot calendar: civil dates, time zones (fixed, TZif with and without DST),
 * hours with several ranges and ranges past midnight, holidays, make-up workdays (调休), and
 * the next opening time. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "../../lib/bot_internal.h"
#include "kefu/alloc.h"
#include "kefu/bot.h"

static void test_civil(void **state) {
    (void)state;
    assert_int_equal(kf_days_from_civil(1970, 1, 1), 0);
    assert_int_equal(kf_days_from_civil(2000, 3, 1), 11017);
    int64_t y;
    int m, d;
    for (int64_t day = -1000; day < 200000; day += 37) {
        kf_civil_from_days(day, &y, &m, &d);
        assert_int_equal(kf_days_from_civil(y, m, d), day);
    }
    assert_int_equal(kf_weekday(kf_days_from_civil(2026, 11, 23)), 1); /* Monday */
    assert_int_equal(kf_weekday(kf_days_from_civil(2026, 9, 27)), 0);  /* Sunday */
    int64_t days;
    assert_int_equal(kf_parse_date("2024-02-29", 10, &days), 0);
    assert_int_equal(kf_parse_date("2026-02-29", 10, &days), -1);
    assert_int_equal(kf_parse_date("2026-1-1", 8, &days), -1);
}

static void test_tz(void **state) {
    (void)state;
    kf_tz tz;
    char err[160];
    assert_int_equal(kf_tz_load(&tz, "+08:00", err, sizeof(err)), 0);
    assert_int_equal(kf_tz_offset(&tz, 0), 8 * 3600);
    kf_tz_free(&tz);
    assert_int_equal(kf_tz_load(&tz, "UTC-5", err, sizeof(err)), 0);
    assert_int_equal(kf_tz_offset(&tz, 0), -5 * 3600);
    kf_tz_free(&tz);
    assert_int_equal(kf_tz_load(&tz, "-0530", err, sizeof(err)), 0);
    assert_int_equal(kf_tz_offset(&tz, 0), -(5 * 3600 + 30 * 60));
    kf_tz_free(&tz);
    assert_int_equal(kf_tz_load(&tz, "Asia/Shanghai", err, sizeof(err)), 0);
    assert_int_equal(kf_tz_offset(&tz, 1795000000), 8 * 3600);
    kf_tz_free(&tz);
    assert_int_equal(kf_tz_load(&tz, "Nowhere/Town", err, sizeof(err)), -1);
    assert_int_equal(kf_tz_load(&tz, "../../etc/passwd", err, sizeof(err)), -1);
    assert_int_equal(kf_tz_load(&tz, "+25:00", err, sizeof(err)), -1);
    /* New York: EST -5 in January, EDT -4 in July 2026 */
    assert_int_equal(kf_tz_load(&tz, "America/New_York", err, sizeof(err)), 0);
    int64_t jan = kf_days_from_civil(2026, 1, 15) * 86400, jul = kf_days_from_civil(2026, 7, 15) * 86400;
    assert_int_equal(kf_tz_offset(&tz, jan), -5 * 3600);
    assert_int_equal(kf_tz_offset(&tz, jul), -4 * 3600);
    /* local 2026-03-08 02:30 does not exist (clocks jump 02:00 -> 03:00): lands after the gap */
    int64_t gap = kf_days_from_civil(2026, 3, 8) * 86400 + 2 * 3600 + 1800;
    int64_t t = kf_tz_mktime(&tz, gap);
    assert_int_equal(t + kf_tz_offset(&tz, t), gap + 3600);
    /* local 2026-11-01 01:30 happens twice: the earlier (EDT) one */
    int64_t amb = kf_days_from_civil(2026, 11, 1) * 86400 + 3600 + 1800;
    t = kf_tz_mktime(&tz, amb);
    assert_int_equal(kf_tz_offset(&tz, t), -4 * 3600);
    kf_tz_free(&tz);
    int64_t u;
    assert_int_equal(kf_bot_parse_time("2026-11-23 10:00", "Asia/Shanghai", &u), 0);
    assert_int_equal(u, kf_days_from_civil(2026, 11, 23) * 86400 + 2 * 3600);
    assert_int_equal(kf_bot_parse_time("2026-11-23T10:00:30", "UTC", &u), 0);
    assert_int_equal(u, kf_days_from_civil(2026, 11, 23) * 86400 + 10 * 3600 + 30);
    assert_int_equal(kf_bot_parse_time("@1795000000", "UTC", &u), 0);
    assert_int_equal(u, 1795000000);
    assert_int_equal(kf_bot_parse_time("2026-11-23 25:00", "UTC", &u), -1);
    assert_int_equal(kf_bot_parse_time("yesterday", "UTC", &u), -1);
}

static void test_ranges(void **state) {
    (void)state;
    kf_range *r = NULL;
    uint8_t n = 0;
    char err[200];
    assert_int_equal(kf_cal_parse_ranges("09:00-12:00, 13:30-18:00", &r, &n, err, sizeof(err)), 0);
    assert_int_equal(n, 2);
    assert_int_equal(r[0].start, 540);
    assert_int_equal(r[1].end, 1080);
    assert_int_equal(kf_cal_parse_ranges("22:00-02:00；", &r, &n, err, sizeof(err)), -1);
    assert_int_equal(kf_cal_parse_ranges("22:00-02:00", &r, &n, err, sizeof(err)), 0);
    assert_int_equal(n, 3);
    assert_true(r[2].end < r[2].start);
    assert_int_equal(kf_cal_parse_ranges("9:00~12:00、13:00–14:00", &r, &n, err, sizeof(err)), 0);
    assert_int_equal(n, 5);
    assert_int_equal(kf_cal_parse_ranges("00:00-24:00", &r, &n, err, sizeof(err)), 0);
    assert_int_equal(r[5].end, 1440);
    assert_int_equal(kf_cal_parse_ranges("18:00-00:00", &r, &n, err, sizeof(err)), 0);
    assert_int_equal(r[6].end, 1440);
    assert_int_equal(kf_cal_parse_ranges("09:00-09:00", &r, &n, err, sizeof(err)), -1);
    assert_int_equal(kf_cal_parse_ranges("24:00-02:00", &r, &n, err, sizeof(err)), -1);
    assert_int_equal(kf_cal_parse_ranges("9-18", &r, &n, err, sizeof(err)), -1);
    assert_int_equal(kf_cal_parse_ranges("09:60-10:00", &r, &n, err, sizeof(err)), -1);
    kf_free(r);
}

/* A calendar in UTC+8: weekdays 09:00-12:00 and 13:00-18:00, Saturday 10:00-14:00, Sunday
 * closed; group "night" 22:00-06:00 every day; holidays 2026-10-01..07, make-up day Saturday
 * 2026-10-10 keeping Monday's hours. */
static void make_cal(kf_calendar *c) {
    char err[200];
    memset(c, 0, sizeof(*c));
    assert_int_equal(kf_tz_load(&c->tz, "+08:00", err, sizeof(err)), 0);
    c->weeks = kf_calloc(2, sizeof(kf_week));
    c->nweeks = 2;
    kf_week *w = &c->weeks[0];
    snprintf(w->name, sizeof(w->name), "default");
    w->makeup_wday = 1;
    for (int d = 1; d <= 5; d++)
        assert_int_equal(kf_cal_parse_ranges("09:00-12:00,13:00-18:00", &w->r[d], &w->n[d], err, sizeof(err)), 0);
    assert_int_equal(kf_cal_parse_ranges("10:00-14:00", &w->r[6], &w->n[6], err, sizeof(err)), 0);
    kf_week *nw = &c->weeks[1];
    snprintf(nw->name, sizeof(nw->name), "night");
    nw->makeup_wday = 1;
    for (int d = 0; d < 7; d++)
        assert_int_equal(kf_cal_parse_ranges("22:00-06:00", &nw->r[d], &nw->n[d], err, sizeof(err)), 0);
    c->has_hours = 1;
    assert_int_equal(kf_cal_add_holidays(c, "2026-10-01..2026-10-07", "National Day", err, sizeof(err)), 0);
    assert_int_equal(kf_cal_add_workdays(c, "2026-10-10", err, sizeof(err)), 0);
    assert_int_equal(kf_cal_add_holidays(c, "2026-10-09..2026-10-01", "x", err, sizeof(err)), -1);
    kf_cal_finish(c);
}

/* Unix time of a local (UTC+8) wall-clock time. */
static int64_t at(int y, int m, int d, int hh, int mm) {
    return kf_days_from_civil(y, m, d) * 86400 + hh * 3600 + mm * 60 - 8 * 3600;
}

static void test_hours(void **state) {
    (void)state;
    kf_calendar c;
    make_cal(&c);
    kf_cal_info info;
    /* Monday 2026-11-23 */
    assert_true(kf_cal_query(&c, NULL, at(2026, 11, 23, 9, 0), &info));
    assert_int_equal(info.closes_at, at(2026, 11, 23, 12, 0));
    assert_true(kf_cal_query(&c, NULL, at(2026, 11, 23, 11, 59), NULL));
    assert_false(kf_cal_query(&c, NULL, at(2026, 11, 23, 12, 0), &info)); /* lunch */
    assert_int_equal(info.next_open, at(2026, 11, 23, 13, 0));
    assert_null(info.holiday);
    assert_false(kf_cal_query(&c, NULL, at(2026, 11, 23, 8, 59), &info));
    assert_int_equal(info.next_open, at(2026, 11, 23, 9, 0));
    assert_false(kf_cal_query(&c, NULL, at(2026, 11, 23, 18, 0), &info));
    assert_int_equal(info.next_open, at(2026, 11, 24, 9, 0));
    /* Saturday evening -> Monday morning (Sunday closed) */
    assert_false(kf_cal_query(&c, "default", at(2026, 11, 28, 15, 0), &info));
    assert_int_equal(info.next_open, at(2026, 11, 30, 9, 0));
    assert_true(kf_cal_query(&c, "unknown-group", at(2026, 11, 28, 13, 0), NULL));
    kf_cal_free(&c);
}

static void test_overnight(void **state) {
    (void)state;
    kf_calendar c;
    make_cal(&c);
    kf_cal_info info;
    assert_true(kf_cal_query(&c, "night", at(2026, 11, 23, 23, 0), &info));
    assert_int_equal(info.closes_at, at(2026, 11, 24, 6, 0));
    assert_true(kf_cal_query(&c, "night", at(2026, 11, 24, 5, 59), &info)); /* from Monday's range */
    assert_int_equal(info.closes_at, at(2026, 11, 24, 6, 0));
    assert_false(kf_cal_query(&c, "night", at(2026, 11, 24, 6, 0), &info));
    assert_int_equal(info.next_open, at(2026, 11, 24, 22, 0));
    assert_false(kf_cal_query(&c, "night", at(2026, 11, 24, 12, 0), NULL));
    /* a holiday closes the range that starts on it, not the one running into it */
    assert_true(kf_cal_query(&c, "night", at(2026, 10, 1, 3, 0), NULL));  /* Sep 30 22:00 range */
    assert_false(kf_cal_query(&c, "night", at(2026, 10, 1, 23, 0), &info));
    assert_string_equal(info.holiday, "National Day");
    assert_false(kf_cal_query(&c, "night", at(2026, 10, 2, 3, 0), &info)); /* Oct 1 range: holiday */
    assert_string_equal(info.holiday, "National Day");
    kf_cal_free(&c);
}

static void test_holidays_and_makeup(void **state) {
    (void)state;
    kf_calendar c;
    make_cal(&c);
    kf_cal_info info;
    /* Thursday 2026-10-01, 10:00: holiday */
    assert_false(kf_cal_query(&c, NULL, at(2026, 10, 1, 10, 0), &info));
    assert_string_equal(info.holiday, "National Day");
    /* next opening: Thursday 2026-10-08 09:00 (after 7 holiday days) */
    assert_int_equal(info.next_open, at(2026, 10, 8, 9, 0));
    /* Saturday 2026-10-10 is a make-up workday with Monday's hours */
    assert_true(kf_cal_query(&c, NULL, at(2026, 10, 10, 9, 30), NULL));
    assert_true(kf_cal_query(&c, NULL, at(2026, 10, 10, 17, 0), NULL));
    assert_false(kf_cal_query(&c, NULL, at(2026, 10, 10, 12, 30), NULL));
    /* an ordinary Saturday: 10:00-14:00 only */
    assert_false(kf_cal_query(&c, NULL, at(2026, 10, 17, 9, 30), NULL));
    assert_false(kf_cal_query(&c, NULL, at(2026, 10, 17, 17, 0), NULL));
    /* Friday 2026-10-09 18:30 -> the make-up Saturday at 09:00 */
    assert_false(kf_cal_query(&c, NULL, at(2026, 10, 9, 18, 30), &info));
    assert_int_equal(info.next_open, at(2026, 10, 10, 9, 0));
    /* without hours a calendar is always open */
    kf_calendar none;
    memset(&none, 0, sizeof(none));
    assert_true(kf_cal_query(&none, NULL, 0, &info));
    kf_cal_free(&c);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_civil),     cmocka_unit_test(test_tz),
        cmocka_unit_test(test_ranges),    cmocka_unit_test(test_hours),
        cmocka_unit_test(test_overnight), cmocka_unit_test(test_holidays_and_makeup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
