/* Unit tests for the bot keyword matcher: normalization, Aho-Corasick hits, word boundaries,
 * Chinese text, any/all/none lists, scores, and a cross-check against a naive search. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../../lib/bot_internal.h"
#include "kefu/bot.h"

static void norm_is(const char *in, const char *want) {
    char out[256];
    size_t n = kf_bot_normalize(in, strlen(in), out);
    assert_string_equal(out, want);
    assert_int_equal(n, strlen(want));
}

static void test_normalize(void **state) {
    (void)state;
    norm_is("", "");
    norm_is("Hello  World", "hello world");
    norm_is("  \t trim me \n", "trim me");
    norm_is("ＲＥＦＵＮＤ？", "refund?");            /* full-width forms */
    norm_is("我要\xE3\x80\x80退货", "我要 退货");        /* U+3000 ideographic space */
    norm_is("退货，怎么办？", "退货,怎么办?");             /* full-width punctuation too */
    norm_is("好的。谢谢", "好的。谢谢");                   /* CJK punctuation is kept */
    norm_is("A１Ｂ２", "a1b2");
}

/* owner 1: "refund" any; owner 2: entry 1 退货/退款, entry 2 发货; owner 3: all {order, late} */
static kf_match *sample(void) {
    kf_match *m = kf_match_new();
    char err[128];
    assert_int_equal(kf_match_add(m, "refund", 6, 1, 1, KF_MATCH_ANY, err, sizeof(err)), 0);
    assert_int_equal(kf_match_add(m, "退货", strlen("退货"), 2, 1, KF_MATCH_ANY, err, sizeof(err)), 0);
    assert_int_equal(kf_match_add(m, "退款", strlen("退款"), 2, 1, KF_MATCH_ANY, err, sizeof(err)), 0);
    assert_int_equal(kf_match_add(m, "发货", strlen("发货"), 2, 2, KF_MATCH_ANY, err, sizeof(err)), 0);
    assert_int_equal(kf_match_add(m, "order", 5, 3, 1, KF_MATCH_ALL, err, sizeof(err)), 0);
    assert_int_equal(kf_match_add(m, "late", 4, 3, 1, KF_MATCH_ALL, err, sizeof(err)), 0);
    kf_match_build(m);
    return m;
}

static size_t scan(kf_match *m, const char *text, kf_match_hit *hits) {
    char norm[512];
    size_t n = kf_bot_normalize(text, strlen(text), norm);
    return kf_match_scan(m, norm, n, hits, 16);
}

static void test_hits(void **state) {
    (void)state;
    kf_match *m = sample();
    kf_match_hit h[16];
    assert_int_equal(scan(m, "I want a REFUND please", h), 1);
    assert_int_equal(h[0].owner, 1);
    assert_int_equal(scan(m, "请问怎么退货呀", h), 1);
    assert_int_equal(h[0].owner, 2);
    assert_int_equal(h[0].entry, 1);
    assert_int_equal(h[0].score, 2);
    assert_int_equal(scan(m, "还没发货，想退款", h), 2);    /* both entries of owner 2 */
    assert_int_equal(h[0].entry, 1);
    assert_int_equal(h[1].entry, 2);
    assert_int_equal(scan(m, "my order is late", h), 1);   /* all of them */
    assert_int_equal(h[0].owner, 3);
    assert_int_equal(scan(m, "my order", h), 0);           /* not all */
    assert_int_equal(scan(m, "", h), 0);
    assert_int_equal(scan(m, "nothing here", h), 0);
    kf_match_free(m);
}

static void test_boundaries(void **state) {
    (void)state;
    kf_match *m = kf_match_new();
    char err[128];
    kf_match_add(m, "return", 6, 1, 1, KF_MATCH_ANY, err, sizeof(err));
    kf_match_add(m, "ship*", 5, 2, 1, KF_MATCH_ANY, err, sizeof(err));
    kf_match_add(m, "*phone", 6, 3, 1, KF_MATCH_ANY, err, sizeof(err));
    kf_match_add(m, "hi", 2, 4, 1, KF_MATCH_ANY, err, sizeof(err));
    kf_match_build(m);
    kf_match_hit h[16];
    assert_int_equal(scan(m, "returning it", h), 0);
    assert_int_equal(scan(m, "return it", h), 1);
    assert_int_equal(scan(m, "return!", h), 1);
    assert_int_equal(scan(m, "退货return退款", h), 1);      /* CJK next to a word is a boundary */
    assert_int_equal(scan(m, "shipping soon", h), 1);       /* prefix */
    assert_int_equal(h[0].owner, 2);
    assert_int_equal(scan(m, "airship", h), 0);
    assert_int_equal(scan(m, "my smartphone", h), 1);       /* suffix */
    assert_int_equal(scan(m, "this is it", h), 0);          /* "hi" inside "this" */
    assert_int_equal(scan(m, "hi there", h), 1);
    assert_int_equal(scan(m, "ＨＩ", h), 1);                /* full width */
    kf_match_free(m);
}

static void test_none_and_overlap(void **state) {
    (void)state;
    kf_match *m = kf_match_new();
    char err[128];
    kf_match_add(m, "谢谢", strlen("谢谢"), 1, 1, KF_MATCH_ANY, err, sizeof(err));
    kf_match_add(m, "不", strlen("不"), 1, 1, KF_MATCH_NONE, err, sizeof(err));
    kf_match_add(m, "spam", 4, 2, 1, KF_MATCH_NONE, err, sizeof(err)); /* none only */
    /* overlapping keywords: the longer one scores */
    kf_match_add(m, "退", strlen("退"), 3, 1, KF_MATCH_ANY, err, sizeof(err));
    kf_match_add(m, "退货运费", strlen("退货运费"), 3, 2, KF_MATCH_ANY, err, sizeof(err));
    kf_match_add(m, "he", 2, 4, 1, KF_MATCH_ANY, err, sizeof(err));
    kf_match_add(m, "she", 3, 4, 2, KF_MATCH_ANY, err, sizeof(err));
    kf_match_add(m, "hers", 4, 4, 3, KF_MATCH_ANY, err, sizeof(err));
    kf_match_build(m);
    kf_match_hit h[16];
    size_t n = scan(m, "好的谢谢", h);
    assert_int_equal(n, 2);                                 /* owner 1, and owner 2 (no spam) */
    assert_int_equal(h[0].owner, 1);
    assert_int_equal(h[1].owner, 2);
    n = scan(m, "不谢谢", h);
    assert_int_equal(n, 1);
    assert_int_equal(h[0].owner, 2);
    n = scan(m, "spam", h);
    assert_int_equal(n, 0);
    n = scan(m, "退货运费谁出", h);
    assert_int_equal(n, 3);                                 /* 2 (no spam), 3/1 and 3/2 */
    assert_int_equal(h[1].owner, 3);
    assert_int_equal(h[1].score, 1);
    assert_int_equal(h[2].score, 4);
    char e[128];
    assert_int_equal(kf_match_add(m, "x", 1, 9, 1, KF_MATCH_ANY, e, sizeof(e)), -1); /* built */
    kf_match_free(m);
    /* "ushers" holds she, he and hers, but whole words only: none */
    m = kf_match_new();
    kf_match_add(m, "*she*", 5, 1, 1, KF_MATCH_ANY, err, sizeof(err));
    kf_match_add(m, "*he*", 4, 1, 2, KF_MATCH_ANY, err, sizeof(err));
    kf_match_add(m, "*hers*", 6, 1, 3, KF_MATCH_ANY, err, sizeof(err));
    kf_match_build(m);
    n = scan(m, "ushers", h);
    assert_int_equal(n, 3);
    kf_match_free(m);
}

static void test_bad_keywords(void **state) {
    (void)state;
    kf_match *m = kf_match_new();
    char err[128];
    assert_int_equal(kf_match_add(m, "", 0, 1, 1, KF_MATCH_ANY, err, sizeof(err)), -1);
    assert_int_equal(kf_match_add(m, "  ", 2, 1, 1, KF_MATCH_ANY, err, sizeof(err)), -1);
    assert_int_equal(kf_match_add(m, "*", 1, 1, 1, KF_MATCH_ANY, err, sizeof(err)), -1);
    char big[400];
    memset(big, 'a', sizeof(big));
    assert_int_equal(kf_match_add(m, big, sizeof(big), 1, 1, KF_MATCH_ANY, err, sizeof(err)), -1);
    kf_match_free(m);
}

/* Random keywords over a small alphabet (ASCII and CJK) against kf_match_contains. */
static void test_cross_check(void **state) {
    (void)state;
    static const char *const atoms[] = {"a", "b", "退", "货", " ", "x"};
    srand(7);
    for (int round = 0; round < 50; round++) {
        kf_match *m = kf_match_new();
        char kws[40][32];
        int nk = 1 + rand() % 40;
        char err[128];
        for (int k = 0; k < nk; k++) {
            kws[k][0] = '\0';
            int len = 1 + rand() % 4;
            for (int i = 0; i < len; i++) strcat(kws[k], atoms[rand() % 5]); /* no spaces inside... */
            if (kws[k][0] == ' ' || kws[k][strlen(kws[k]) - 1] == ' ') strcpy(kws[k], "x");
            int rc = kf_match_add(m, kws[k], strlen(kws[k]), (uint32_t)k + 1, 1, KF_MATCH_ANY, err, sizeof(err));
            assert_int_equal(rc, 0);
        }
        kf_match_build(m);
        for (int t = 0; t < 40; t++) {
            char text[200] = "";
            int len = rand() % 20;
            for (int i = 0; i < len; i++) strcat(text, atoms[rand() % 6]);
            char norm[200];
            size_t n = kf_bot_normalize(text, strlen(text), norm);
            kf_match_hit h[64];
            size_t nh = kf_match_scan(m, norm, n, h, 64);
            for (int k = 0; k < nk; k++) {
                int want = kf_match_contains(text, strlen(text), kws[k], strlen(kws[k]));
                int got = 0;
                for (size_t i = 0; i < nh; i++) got |= h[i].owner == (uint32_t)k + 1;
                if (want != got) fail_msg("keyword '%s' in '%s': want %d got %d", kws[k], text, want, got);
            }
        }
        kf_match_free(m);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_normalize),   cmocka_unit_test(test_hits),
        cmocka_unit_test(test_boundaries),  cmocka_unit_test(test_none_and_overlap),
        cmocka_unit_test(test_bad_keywords), cmocka_unit_test(test_cross_check),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
