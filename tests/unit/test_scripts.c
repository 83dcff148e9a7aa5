/* Unit tests for the reader of Redis script answers (kf_script_parse, lib/scripts.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "kefu/redis.h"

/* Replies built by hand, as hiredis hands them to a callback. */
static redisReply str(const char *s) {
    redisReply r = {0};
    r.type = REDIS_REPLY_STRING;
    r.str = (char *)s;
    r.len = strlen(s);
    return r;
}

static redisReply integer(long long v) {
    redisReply r = {0};
    r.type = REDIS_REPLY_INTEGER;
    r.integer = v;
    return r;
}

static redisReply array(redisReply **el, size_t n) {
    redisReply r = {0};
    r.type = REDIS_REPLY_ARRAY;
    r.element = el;
    r.elements = n;
    return r;
}

static void test_success(void **state) {
    (void)state;
    redisReply e[3] = {str("S"), str("waiting"), str("")};
    redisReply *el[3] = {&e[0], &e[1], &e[2]};
    redisReply r = array(el, 3);
    kf_script_ans a;
    assert_int_equal(kf_script_parse(&r, NULL, 3, &a), 'S');
    assert_int_equal(a.kind, KF_SCRIPT_OK);
    assert_null(a.code);
    /* nstr 0 counts as 1: the tag alone */
    assert_int_equal(kf_script_parse(&r, NULL, 0, &a), 'S');
    /* 'D', 'R', 'Q' succeed alike */
    redisReply d = str("R");
    redisReply *one[1] = {&d};
    r = array(one, 1);
    assert_int_equal(kf_script_parse(&r, NULL, 1, &a), 'R');
}

static void test_too_short_or_not_strings(void **state) {
    (void)state;
    redisReply e[3] = {str("S"), integer(2), str("x")};
    redisReply *el[3] = {&e[0], &e[1], &e[2]};
    redisReply r = array(el, 3);
    kf_script_ans a;
    /* element 1 is an integer: fine when the caller reads only the tag, not when it reads it */
    assert_int_equal(kf_script_parse(&r, NULL, 1, &a), 'S');
    assert_int_equal(kf_script_parse(&r, NULL, 2, &a), 0);
    assert_int_equal(a.kind, KF_SCRIPT_BROKEN);
    assert_string_equal(a.code, "internal");
    /* fewer elements than the caller reads */
    assert_int_equal(kf_script_parse(&r, NULL, 4, &a), 0);
    assert_int_equal(a.kind, KF_SCRIPT_BROKEN);
    /* a tag of more than one letter, an empty array, a tag that is not a string */
    redisReply t = str("SS");
    redisReply *one[1] = {&t};
    r = array(one, 1);
    assert_int_equal(kf_script_parse(&r, NULL, 1, &a), 0);
    assert_int_equal(a.kind, KF_SCRIPT_BROKEN);
    r = array(NULL, 0);
    assert_int_equal(kf_script_parse(&r, NULL, 1, &a), 0);
    assert_int_equal(a.kind, KF_SCRIPT_BROKEN);
    redisReply n = integer(1);
    one[0] = &n;
    r = array(one, 1);
    assert_int_equal(kf_script_parse(&r, NULL, 1, &a), 0);
    assert_int_equal(a.kind, KF_SCRIPT_BROKEN);
    /* not an array at all */
    r = str("S");
    assert_int_equal(kf_script_parse(&r, NULL, 1, &a), 0);
    assert_int_equal(a.kind, KF_SCRIPT_BROKEN);
}

static void test_refused(void **state) {
    (void)state;
    redisReply e[3] = {str("E"), str("conflict"), str("the agent is away")};
    redisReply *el[3] = {&e[0], &e[1], &e[2]};
    redisReply r = array(el, 2);
    kf_script_ans a;
    assert_int_equal(kf_script_parse(&r, NULL, 1, &a), 0);
    assert_int_equal(a.kind, KF_SCRIPT_REFUSED);
    assert_string_equal(a.code, "conflict");
    assert_null(a.message);
    r = array(el, 3);
    assert_int_equal(kf_script_parse(&r, NULL, 5, &a), 0);
    assert_int_equal(a.kind, KF_SCRIPT_REFUSED);
    assert_string_equal(a.message, "the agent is away");
}

/* A refusal whose code is not a string (an integer: no str to copy) or is missing or empty is
 * the script's bug, answered internal, never read as a string. */
static void test_refused_without_code(void **state) {
    (void)state;
    redisReply e[2] = {str("E"), integer(404)};
    redisReply *el[2] = {&e[0], &e[1]};
    redisReply r = array(el, 2);
    kf_script_ans a;
    assert_int_equal(kf_script_parse(&r, NULL, 1, &a), 0);
    assert_int_equal(a.kind, KF_SCRIPT_BROKEN);
    assert_string_equal(a.code, "internal");
    e[1] = str("");
    assert_int_equal(kf_script_parse(&r, NULL, 1, &a), 0);
    assert_int_equal(a.kind, KF_SCRIPT_BROKEN);
    r = array(el, 1);
    assert_int_equal(kf_script_parse(&r, NULL, 1, &a), 0);
    assert_int_equal(a.kind, KF_SCRIPT_BROKEN);
}

static void test_transport_and_redis_errors(void **state) {
    (void)state;
    kf_script_ans a;
    assert_int_equal(kf_script_parse(NULL, "timeout", 1, &a), 0);
    assert_int_equal(a.kind, KF_SCRIPT_UNAVAILABLE);
    assert_string_equal(a.code, "unavailable");
    assert_string_equal(a.detail, "timeout");
    redisReply r = str("NOSCRIPT No matching script");
    r.type = REDIS_REPLY_ERROR;
    assert_int_equal(kf_script_parse(&r, NULL, 1, &a), 0);
    assert_int_equal(a.kind, KF_SCRIPT_BROKEN);
    assert_string_equal(a.code, "internal");
    assert_string_equal(a.detail, "NOSCRIPT No matching script");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_success),
        cmocka_unit_test(test_too_short_or_not_strings),
        cmocka_unit_test(test_refused),
        cmocka_unit_test(test_refused_without_code),
        cmocka_unit_test(test_transport_and_redis_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
