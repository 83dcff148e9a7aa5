/* Unit tests for the customer-service rules: priorities, queue scores, routing rules, specs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "kefu/service.h"

static void test_priority(void **state) {
    (void)state;
    assert_int_equal(kf_priority_parse("high"), KF_PRIO_HIGH);
    assert_int_equal(kf_priority_parse("medium"), KF_PRIO_MEDIUM);
    assert_int_equal(kf_priority_parse("low"), KF_PRIO_LOW);
    assert_int_equal(kf_priority_parse("urgent"), -1);
    assert_int_equal(kf_priority_parse(""), -1);
    assert_int_equal(kf_priority_parse(NULL), -1);
    assert_string_equal(kf_priority_name(KF_PRIO_LOW), "low");
}

static void test_group_valid(void **state) {
    (void)state;
    assert_true(kf_group_valid("billing"));
    assert_true(kf_group_valid("vip_2-cn"));
    assert_true(kf_group_valid("abcdefghijklmnopqrstuvwxyz012345")); /* 32 */
    assert_false(kf_group_valid("abcdefghijklmnopqrstuvwxyz0123456"));
    assert_false(kf_group_valid(""));
    assert_false(kf_group_valid("Billing"));
    assert_false(kf_group_valid("a b"));
    assert_false(kf_group_valid(NULL));
}

static void test_queue_order(void **state) {
    (void)state;
    long long t = 1795000000000000LL; /* 2026 */
    /* priority first */
    assert_true(kf_queue_score(KF_PRIO_HIGH, 0, t + 1000000) < kf_queue_score(KF_PRIO_MEDIUM, 100, t));
    assert_true(kf_queue_score(KF_PRIO_MEDIUM, 0, t + 1000000) < kf_queue_score(KF_PRIO_LOW, 100, t));
    /* then level, higher first */
    assert_true(kf_queue_score(KF_PRIO_MEDIUM, 5, t + 1000000) < kf_queue_score(KF_PRIO_MEDIUM, 4, t));
    assert_true(kf_queue_score(KF_PRIO_MEDIUM, 100, t + 1000000) < kf_queue_score(KF_PRIO_MEDIUM, 0, t));
    /* then FIFO at 64 us */
    assert_true(kf_queue_score(KF_PRIO_LOW, 3, t) < kf_queue_score(KF_PRIO_LOW, 3, t + 64));
    assert_true(kf_queue_score(KF_PRIO_LOW, 3, t) == kf_queue_score(KF_PRIO_LOW, 3, t + 63));
    /* exact as a double: the largest score is below 2^53 */
    long long max = kf_queue_score(KF_PRIO_LOW, 0, KF_QUEUE_EPOCH_US + (1LL << 50));
    assert_true(max < (1LL << 53));
    assert_true((long long)(double)max == max);
    /* out-of-range inputs are clamped */
    assert_int_equal(kf_queue_score(KF_PRIO_HIGH, 200, t), kf_queue_score(KF_PRIO_HIGH, 100, t));
    assert_int_equal(kf_queue_score(KF_PRIO_HIGH, -3, t), kf_queue_score(KF_PRIO_HIGH, 0, t));
    assert_int_equal(kf_queue_score(KF_PRIO_HIGH, 0, 0), kf_queue_score(KF_PRIO_HIGH, 0, KF_QUEUE_EPOCH_US));
    /* the time comes back */
    long long s = kf_queue_score(KF_PRIO_MEDIUM, 7, t);
    assert_int_equal(kf_queue_score_time_us(s), t - (t - KF_QUEUE_EPOCH_US) % 64);
    assert_int_equal(kf_queue_score(KF_PRIO_MEDIUM, 7, kf_queue_score_time_us(s)), s);
}

static void test_routes(void **state) {
    (void)state;
    char g[40], err[200];
    int p = 99;
    const char *rules = "topic:Refund=billing/high, topic:退款=billing/high; channel:app=mobile\n"
                        "topic:invoice=billing,*=general/low";
    assert_int_equal(kf_route_match(rules, "web", "I want a REFUND now", g, sizeof(g), &p, err,
                                     sizeof(err)), 1);
    assert_string_equal(g, "billing");
    assert_int_equal(p, KF_PRIO_HIGH);
    assert_int_equal(kf_route_match(rules, "web", "申请退款", g, sizeof(g), &p, err, sizeof(err)), 1);
    assert_string_equal(g, "billing");
    assert_int_equal(kf_route_match(rules, "app", "hello", g, sizeof(g), &p, err, sizeof(err)), 1);
    assert_string_equal(g, "mobile");
    assert_int_equal(p, -1);
    /* first match wins: app + invoice -> mobile */
    assert_int_equal(kf_route_match(rules, "app", "invoice", g, sizeof(g), &p, err, sizeof(err)), 1);
    assert_string_equal(g, "mobile");
    assert_int_equal(kf_route_match(rules, "web", NULL, g, sizeof(g), &p, err, sizeof(err)), 1);
    assert_string_equal(g, "general");
    assert_int_equal(p, KF_PRIO_LOW);
    /* no match leaves outputs alone */
    strcpy(g, "keep");
    p = 7;
    assert_int_equal(kf_route_match("channel:app=mobile", "web", "x", g, sizeof(g), &p, err,
                                    sizeof(err)), 0);
    assert_string_equal(g, "keep");
    assert_int_equal(p, 7);
    assert_int_equal(kf_route_match("", "web", "x", g, sizeof(g), &p, err, sizeof(err)), 0);
    assert_int_equal(kf_route_match(NULL, "web", "x", g, sizeof(g), &p, err, sizeof(err)), 0);
    /* channel matches whole names only */
    assert_int_equal(kf_route_match("channel:we=x", "web", "", g, sizeof(g), &p, err, sizeof(err)), 0);
    /* syntax errors, even after a match */
    assert_int_equal(kf_route_match("*=a, nonsense", "web", "", g, sizeof(g), &p, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "nonsense"));
    assert_int_equal(kf_route_match("user:x=a", "web", "", g, sizeof(g), &p, err, sizeof(err)), -1);
    assert_int_equal(kf_route_match("*=Bad", "web", "", g, sizeof(g), &p, err, sizeof(err)), -1);
    assert_int_equal(kf_route_match("*=a/urgent", "web", "", g, sizeof(g), &p, err, sizeof(err)), -1);
    assert_int_equal(kf_route_match("*=", "web", "", g, sizeof(g), &p, err, sizeof(err)), -1);
}

static void test_spec(void **state) {
    (void)state;
    const char *s = "web=15000, app=20000,*=30000";
    assert_int_equal(kf_spec_value(s, "web", 1), 15000);
    assert_int_equal(kf_spec_value(s, "app", 1), 20000);
    assert_int_equal(kf_spec_value(s, "wechat", 1), 30000);
    assert_int_equal(kf_spec_value("web=5", "app", 42), 42);
    assert_int_equal(kf_spec_value("", "app", 42), 42);
    assert_int_equal(kf_spec_value("web=x", "web", 42), 42);
    assert_int_equal(kf_spec_value("high=1;low=3", "low", 0), 3);
    assert_true(kf_spec_valid(s));
    assert_true(kf_spec_valid(""));
    assert_false(kf_spec_valid("web"));
    assert_false(kf_spec_valid("web=-1"));
    assert_false(kf_spec_valid("we b=1"));
    assert_false(kf_spec_valid("web=1x"));
    assert_false(kf_spec_valid(NULL));
}

static void test_staff_domains(void **state) {
    (void)state;
    const char *spec = "sales=presales, aftersales;\nhelp=tech,billing";
    char d[KF_GROUP_MAX + 1], o[KF_GROUP_MAX + 1], err[160];
    assert_true(kf_staff_domains_valid(spec, err, sizeof(err)));
    assert_true(kf_staff_domains_valid("", err, sizeof(err)));
    assert_true(kf_staff_domains_valid(NULL, err, sizeof(err)));
    assert_true(kf_staff_domains_valid("default=x;a=b;", err, sizeof(err)));
    assert_string_equal(kf_staff_domain_of(spec, "aftersales", d, sizeof(d)), "sales");
    assert_string_equal(kf_staff_domain_of(spec, "billing", d, sizeof(d)), "help");
    assert_string_equal(kf_staff_domain_of(spec, "other", d, sizeof(d)), "default");
    assert_string_equal(kf_staff_domain_of("", "tech", d, sizeof(d)), "default");
    assert_string_equal(kf_staff_domain_of(spec, "tec", d, sizeof(d)), "default");
    /* an agent's skills: one domain, or refused */
    assert_int_equal(kf_staff_domain_of_groups(spec, "presales,aftersales", "default", d, o,
                                               sizeof(d)), 0);
    assert_string_equal(d, "sales");
    assert_int_equal(kf_staff_domain_of_groups(spec, "tech,presales", "default", d, o, sizeof(d)),
                     -1);
    assert_string_equal(d, "help");
    assert_string_equal(o, "sales");
    assert_int_equal(kf_staff_domain_of_groups(spec, "x,presales", "default", d, o, sizeof(d)), -1);
    assert_string_equal(o, "sales");
    assert_int_equal(kf_staff_domain_of_groups(spec, "", "tech", d, o, sizeof(d)), 0);
    assert_string_equal(d, "help");
    assert_int_equal(kf_staff_domain_of_groups(spec, NULL, "other", d, o, sizeof(d)), 0);
    assert_string_equal(d, "default");
    /* the list: default first, each once */
    char list[4][KF_GROUP_MAX + 1];
    assert_int_equal(kf_staff_domain_list(spec, list, 4), 3);
    assert_string_equal(list[0], "default");
    assert_string_equal(list[1], "sales");
    assert_string_equal(list[2], "help");
    assert_int_equal(kf_staff_domain_list("default=a;b=c", list, 4), 2);
    assert_int_equal(kf_staff_domain_list("", list, 4), 1);
    assert_int_equal(kf_staff_domain_list(spec, list, 2), 2);
    /* refused */
    static const struct {
        const char *spec, *why;
    } bad[] = {
        {"sales=a;help=a", "group a is in staff domains sales and help"},
        {"sales=a;help=b;sales=c", "staff domain sales is listed twice"},
        {"sales=a,a", "group a is listed twice in staff domain sales"},
        {"Sales=a", "staff domain name 'Sales' must match"},
        {"sales=", "staff domain sales: group '' must match"},
        {"sales=a,", "staff domain sales: group '' must match"},
        {"sales", "staff domain 'sales' has no '='"},
        {"sales=a b", "group 'a b' must match"},
        {"abcdefghijklmnopqrstuvwxyz0123456=a", "must match"},
        {"s=abcdefghijklmnopqrstuvwxyz0123456", "must match"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';
        assert_false(kf_staff_domains_valid(bad[i].spec, err, sizeof(err)));
        assert_non_null(strstr(err, bad[i].why));
    }
    /* the keys: default keeps {staff} */
    char k[KF_KEY_MAX];
    kf_key_staff_in(k, "default", "config");
    assert_string_equal(k, KF_KEY_STAFF_CONFIG);
    kf_key_staff_in(k, NULL, "monitors");
    assert_string_equal(k, KF_KEY_STAFF_MONITORS);
    kf_key_staff_agent_in(k, "sales", "a1");
    assert_string_equal(k, "kefu:{staff:sales}:agent:a1");
    kf_key_staff_load_in(k, "", "a1");
    assert_string_equal(k, "kefu:{staff}:load:a1");
}

static void test_keywords(void **state) {
    (void)state;
    char kw[KF_KEYWORDS_MAX][KF_KEYWORD_MAX + 1], err[160];
    assert_int_equal(kf_keywords_parse("", kw, KF_KEYWORDS_MAX, err, sizeof(err)), 0);
    assert_int_equal(kf_keywords_parse(" , ,", kw, KF_KEYWORDS_MAX, err, sizeof(err)), 0);
    int n = kf_keywords_parse(" 退款 , WiFi Down，发票,,refund ", kw, KF_KEYWORDS_MAX, err,
                              sizeof(err));
    assert_int_equal(n, 4);
    assert_string_equal(kw[0], "退款");
    assert_string_equal(kw[1], "wifi down");
    assert_string_equal(kw[2], "发票");
    assert_string_equal(kw[3], "refund");
    assert_int_equal(kf_keywords_parse("a,b,c", kw, 2, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "more than 2"));
    char long_kw[KF_KEYWORD_MAX + 2];
    memset(long_kw, 'x', sizeof(long_kw) - 1);
    long_kw[sizeof(long_kw) - 1] = '\0';
    assert_int_equal(kf_keywords_parse(long_kw, kw, KF_KEYWORDS_MAX, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "longer than"));

    const char *t = "我要退款！My WIFI DOWN again";
    assert_true(kf_keyword_in(t, strlen(t), "退款", strlen("退款")));
    assert_true(kf_keyword_in(t, strlen(t), "wifi down", 9));
    assert_true(kf_keyword_in(t, strlen(t), "again", 5));
    assert_false(kf_keyword_in(t, strlen(t), "退货", strlen("退货")));
    assert_false(kf_keyword_in(t, strlen(t), "wifi  down", 10));
    assert_false(kf_keyword_in(t, 5, "again", 5)); /* only the first len bytes are text */
    assert_false(kf_keyword_in(t, strlen(t), "", 0));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_priority), cmocka_unit_test(test_group_valid),
        cmocka_unit_test(test_queue_order), cmocka_unit_test(test_routes),
        cmocka_unit_test(test_spec), cmocka_unit_test(test_staff_domains),
        cmocka_unit_test(test_keywords),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
