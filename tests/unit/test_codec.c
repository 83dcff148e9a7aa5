/* Unit tests for the JSON / msgpack frame codec. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "kefu/codec.h"

/* ---- helpers ---- */

static json_t *dec(kf_format f, const char *buf, size_t len, const char **err) {
    /* copy into an exact-size heap buffer so ASan sees any read past len */
    char *copy = malloc(len ? len : 1);
    memcpy(copy, buf, len);
    json_t *j = kf_codec_decode(f, copy, len, err);
    free(copy);
    return j;
}

static json_t *json_ok(const char *text) {
    const char *err = NULL;
    json_t *j = dec(KF_FMT_JSON, text, strlen(text), &err);
    if (!j) fail_msg("decode of %s failed: %s", text, err);
    assert_null(err);
    return j;
}

static void json_err(const char *text, size_t len, const char *want) {
    const char *err = NULL;
    json_t *j = dec(KF_FMT_JSON, text, len, &err);
    assert_null(j);
    assert_non_null(err);
    assert_string_equal(err, want);
}

#define JSON_ERR(lit, want) json_err(lit, sizeof(lit) - 1, want)

static json_t *mp_ok(const char *buf, size_t len) {
    const char *err = NULL;
    json_t *j = dec(KF_FMT_MSGPACK, buf, len, &err);
    if (!j) fail_msg("msgpack decode failed: %s", err);
    return j;
}

#define MP_OK(lit) mp_ok(lit, sizeof(lit) - 1)

static void mp_err(const char *buf, size_t len, const char *want) {
    const char *err = NULL;
    json_t *j = dec(KF_FMT_MSGPACK, buf, len, &err);
    assert_null(j);
    assert_non_null(err);
    assert_string_equal(err, want);
}

#define MP_ERR(lit, want) mp_err(lit, sizeof(lit) - 1, want)

/* Encodes with the given headroom, checks the headroom is writable and returns the payload
 * copied into a fresh buffer (NUL-terminated for convenience). */
static char *enc(kf_format f, const json_t *v, size_t headroom, size_t *len) {
    char *out = (char *)0x1;
    size_t n = 12345;
    assert_int_equal(kf_codec_encode(f, v, headroom, &out, &n), 0);
    assert_non_null(out);
    memset(out, 0x5a, headroom);
    char *copy = malloc(n + 1);
    memcpy(copy, out + headroom, n);
    copy[n] = '\0';
    free(out);
    *len = n;
    return copy;
}

static void mp_bytes(const json_t *v, const char *want, size_t wantlen) {
    size_t n;
    char *got = enc(KF_FMT_MSGPACK, v, 0, &n);
    assert_int_equal(n, wantlen);
    assert_memory_equal(got, want, wantlen);
    free(got);
}

#define MP_BYTES(v, lit) mp_bytes(v, lit, sizeof(lit) - 1)

static json_t *wrap(const char *key, json_t *v) {
    json_t *o = json_object();
    json_object_set_new(o, key, v);
    return o;
}

/* {"a":{"a":...{"a":1}}} with depth levels of objects. */
static char *nested_json(int depth, char open, char close) {
    char *s = malloc((size_t)depth * 6 + 8);
    char *w = s;
    for (int i = 0; i < depth; i++) {
        if (open == '{') w += sprintf(w, "{\"a\":");
        else *w++ = open;
        if (i == depth - 1) *w++ = '1';
    }
    for (int i = 0; i < depth; i++) *w++ = close;
    *w = '\0';
    if (open == '[') { /* top level must be an object: wrap one level of arrays */
        char *t = malloc(strlen(s) + 8);
        sprintf(t, "{\"a\":%s}", s);
        free(s);
        return t;
    }
    return s;
}

/* msgpack {"a":[[[...1]]]} where the map plus arrays make depth levels. */
static size_t nested_mp(char *buf, int depth) {
    size_t n = 0;
    buf[n++] = (char)0x81;
    buf[n++] = (char)0xa1;
    buf[n++] = 'a';
    for (int i = 1; i < depth; i++) buf[n++] = (char)0x91;
    buf[n++] = 0x01;
    return n;
}

static json_t *nested_value(int depth) {
    json_t *v = json_integer(1);
    for (int i = 1; i < depth; i++) {
        json_t *a = json_array();
        json_array_append_new(a, v);
        v = a;
    }
    return wrap("a", v);
}

/* ---- JSON decoding ---- */

static void test_json_decode_values(void **state) {
    (void)state;
    json_t *j = json_ok("{\"s\":\"hi\",\"i\":-42,\"big\":9223372036854775807,\"r\":1.5,"
                        "\"t\":true,\"f\":false,\"n\":null,\"a\":[1,\"x\",[]],\"o\":{\"k\":{}},"
                        "\"zh\":\"你好\",\"esc\":\"\\u4f60\\ud83d\\ude00\\n\"}");
    assert_string_equal(json_string_value(json_object_get(j, "s")), "hi");
    assert_int_equal(json_integer_value(json_object_get(j, "i")), -42);
    assert_true(json_integer_value(json_object_get(j, "big")) == INT64_MAX);
    assert_true(json_real_value(json_object_get(j, "r")) == 1.5);
    assert_true(json_is_true(json_object_get(j, "t")));
    assert_true(json_is_false(json_object_get(j, "f")));
    assert_true(json_is_null(json_object_get(j, "n")));
    assert_int_equal(json_array_size(json_object_get(j, "a")), 3);
    assert_true(json_is_object(json_object_get(json_object_get(j, "o"), "k")));
    assert_string_equal(json_string_value(json_object_get(j, "zh")), "你好");
    assert_string_equal(json_string_value(json_object_get(j, "esc")), "你\xf0\x9f\x98\x80\n");
    json_decref(j);
    j = json_ok("  {}  \n");
    assert_int_equal(json_object_size(j), 0);
    json_decref(j);
}

static void test_json_decode_errors(void **state) {
    (void)state;
    JSON_ERR("", "invalid JSON");
    JSON_ERR("   ", "invalid JSON");
    JSON_ERR("{", "invalid JSON");
    JSON_ERR("{\"a\":}", "invalid JSON");
    JSON_ERR("{'a':1}", "invalid JSON");
    JSON_ERR("{\"a\":1,}", "invalid JSON");
    JSON_ERR("{\"a\":NaN}", "invalid JSON");
    JSON_ERR("{\"a\":\"x\0\"}", "invalid JSON");
    JSON_ERR("[1,2]", "not an object");
    JSON_ERR("\"str\"", "not an object");
    JSON_ERR("42", "not an object");
    JSON_ERR("null", "not an object");
    JSON_ERR("{} x", "trailing data");
    JSON_ERR("{}{}", "trailing data");
    JSON_ERR("{\"a\":1}\0", "trailing data");
    JSON_ERR("{\"a\":1,\"a\":2}", "duplicate key");
    JSON_ERR("{\"a\":\"\xff\"}", "invalid UTF-8");
    JSON_ERR("{\"a\":\"\xed\xa0\x80\"}", "invalid UTF-8");
    JSON_ERR("{\"a\":\"\xc0\xaf\"}", "invalid UTF-8");
    JSON_ERR("{\"a\":\"x\\u0000y\"}", "NUL in string");
    JSON_ERR("{\"a\":99999999999999999999}", "number out of range");
    const char *err = "unset";
    assert_null(kf_codec_decode(KF_FMT_JSON, NULL, 0, &err));
    assert_string_equal(err, "invalid JSON");
    assert_null(kf_codec_decode((kf_format)7, "{}", 2, &err));
    assert_null(kf_codec_decode(KF_FMT_JSON, "[]", 2, NULL)); /* err may be NULL */
}

static void test_json_depth(void **state) {
    (void)state;
    for (int d = 1; d <= 16; d++) {
        char *s = nested_json(d, '{', '}');
        json_decref(json_ok(s));
        free(s);
    }
    char *s = nested_json(17, '{', '}');
    json_err(s, strlen(s), "nesting too deep");
    free(s);
    s = nested_json(15, '[', ']'); /* 1 object + 15 arrays = 16 */
    json_decref(json_ok(s));
    free(s);
    s = nested_json(16, '[', ']');
    json_err(s, strlen(s), "nesting too deep");
    free(s);
    /* brackets inside strings, also after escaped quotes, do not count */
    json_t *j = json_ok("{\"a\":\"[[[[[[[[[[[[[[[[[[[[{{{{{{{{{{{{{{{{{{\","
                        "\"b\":\"\\\"[[[[[[[[[[[[[[[[[[[[[[[\\\\\"}");
    json_decref(j);
    /* hostile depth far beyond jansson's own limit */
    size_t n = 200000;
    char *deep = malloc(n + 1);
    deep[0] = '{';
    memset(deep + 1, '[', n - 1);
    json_err(deep, n, "nesting too deep");
    free(deep);
}

/* ---- msgpack decoding ---- */

static void test_mp_decode_scalars(void **state) {
    (void)state;
    json_t *j;
#define SCALAR(bytes, check)                                       \
    do {                                                           \
        j = MP_OK("\x81\xa1v" bytes);                              \
        json_t *v = json_object_get(j, "v");                       \
        assert_non_null(v);                                        \
        check;                                                     \
        json_decref(j);                                            \
    } while (0)
#define INT(bytes, want) SCALAR(bytes, assert_true(json_is_integer(v) && json_integer_value(v) == (want)))
    SCALAR("\xc0", assert_true(json_is_null(v)));
    SCALAR("\xc2", assert_true(json_is_false(v)));
    SCALAR("\xc3", assert_true(json_is_true(v)));
    INT("\x00", 0);
    INT("\x7f", 127);
    INT("\xff", -1);
    INT("\xe0", -32);
    INT("\xcc\xff", 255);
    INT("\xcd\xff\xff", 65535);
    INT("\xce\xff\xff\xff\xff", 4294967295LL);
    INT("\xcf\x7f\xff\xff\xff\xff\xff\xff\xff", INT64_MAX);
    INT("\xcf\x00\x00\x00\x00\x00\x00\x00\x05", 5);
    INT("\xd0\x80", -128);
    INT("\xd0\x7f", 127);
    INT("\xd1\x80\x00", -32768);
    INT("\xd2\x80\x00\x00\x00", -2147483648LL);
    INT("\xd2\xff\xff\xff\xfe", -2);
    INT("\xd3\x80\x00\x00\x00\x00\x00\x00\x00", INT64_MIN);
    INT("\xd3\xff\xff\xff\xff\xff\xff\xff\xff", -1);
    SCALAR("\xca\x3f\xc0\x00\x00", assert_true(json_is_real(v) && json_real_value(v) == 1.5));
    SCALAR("\xca\xc1\x20\x00\x00", assert_true(json_is_real(v) && json_real_value(v) == -10.0));
    SCALAR("\xcb\x40\x09\x21\xfb\x54\x44\x2d\x18",
           assert_true(json_is_real(v) && json_real_value(v) == 3.141592653589793));
    SCALAR("\xa0", assert_string_equal(json_string_value(v), ""));
    SCALAR("\xa3\x61\x62\x63", assert_string_equal(json_string_value(v), "abc"));
    SCALAR("\xd9\x06\xe4\xbd\xa0\xe5\xa5\xbd", assert_string_equal(json_string_value(v), "你好"));
    SCALAR("\xda\x00\x02hi", assert_string_equal(json_string_value(v), "hi"));
    SCALAR("\xdb\x00\x00\x00\x04\xf0\x9f\x98\x80",
           assert_string_equal(json_string_value(v), "\xf0\x9f\x98\x80"));
#undef INT
#undef SCALAR
}

static void test_mp_decode_containers(void **state) {
    (void)state;
    json_t *j = MP_OK("\x80");
    assert_true(json_is_object(j));
    assert_int_equal(json_object_size(j), 0);
    json_decref(j);
    j = MP_OK("\xde\x00\x01\xa1k\x93\x01\xa1x\x90");
    json_t *a = json_object_get(j, "k");
    assert_int_equal(json_array_size(a), 3);
    assert_int_equal(json_integer_value(json_array_get(a, 0)), 1);
    assert_string_equal(json_string_value(json_array_get(a, 1)), "x");
    assert_int_equal(json_array_size(json_array_get(a, 2)), 0);
    json_decref(j);
    j = MP_OK("\xdf\x00\x00\x00\x02\xa1" "a\xdc\x00\x01\xc0\xd9\x01" "b\xdd\x00\x00\x00\x00");
    assert_int_equal(json_object_size(j), 2);
    assert_true(json_is_null(json_array_get(json_object_get(j, "a"), 0)));
    assert_int_equal(json_array_size(json_object_get(j, "b")), 0);
    json_decref(j);
    /* keys as str8/16/32 and unicode keys */
    j = MP_OK("\x83\xd9\x01x\x01\xda\x00\x01y\x02\xdb\x00\x00\x00\x06\xe5\xae\xa2\xe6\x9c\x8d\x03");
    assert_int_equal(json_integer_value(json_object_get(j, "x")), 1);
    assert_int_equal(json_integer_value(json_object_get(j, "y")), 2);
    assert_int_equal(json_integer_value(json_object_get(j, "客服")), 3);
    json_decref(j);
}

static void test_mp_decode_errors(void **state) {
    (void)state;
    mp_err("", 0, "truncated msgpack");
    MP_ERR("\x90", "not an object");
    MP_ERR("\x01", "not an object");
    MP_ERR("\xa1x", "not an object");
    MP_ERR("\xc0", "not an object");
    MP_ERR("\xc4\x01x", "not an object");
    MP_ERR("\x80\x80", "trailing data");
    MP_ERR("\x80\x00", "trailing data");
    MP_ERR("\x81\xa1" "a\x01\xc0", "trailing data");
    MP_ERR("\x81\x01\x01", "map key is not a string");
    MP_ERR("\x81\xc0\x01", "map key is not a string");
    MP_ERR("\x81\xc4\x01k\x01", "map key is not a string");
    MP_ERR("\x81\x90\x01", "map key is not a string");
    MP_ERR("\x81\xa1v\xc4\x01x", "unsupported msgpack type");  /* bin 8 */
    MP_ERR("\x81\xa1v\xc5\x00\x01x", "unsupported msgpack type"); /* bin 16 */
    MP_ERR("\x81\xa1v\xc6\x00\x00\x00\x01x", "unsupported msgpack type");
    MP_ERR("\x81\xa1v\xc7\x01\x01x", "unsupported msgpack type"); /* ext 8 */
    MP_ERR("\x81\xa1v\xc8\x00\x01\x01x", "unsupported msgpack type");
    MP_ERR("\x81\xa1v\xc9\x00\x00\x00\x01\x01x", "unsupported msgpack type");
    MP_ERR("\x81\xa1v\xd4\x01x", "unsupported msgpack type"); /* fixext 1 */
    MP_ERR("\x81\xa1v\xd5\x01xx", "unsupported msgpack type");
    MP_ERR("\x81\xa1v\xd6\x01xxxx", "unsupported msgpack type");
    MP_ERR("\x81\xa1v\xd7\xffxxxxxxxx", "unsupported msgpack type"); /* timestamp */
    MP_ERR("\x81\xa1v\xd8\x01xxxxxxxxxxxxxxxx", "unsupported msgpack type");
    MP_ERR("\x81\xa1v\xc1", "invalid msgpack");
    MP_ERR("\x81\xa1v\xcf\x80\x00\x00\x00\x00\x00\x00\x00", "integer out of range");
    MP_ERR("\x81\xa1v\xcf\xff\xff\xff\xff\xff\xff\xff\xff", "integer out of range");
    MP_ERR("\x81\xa1v\xa1\xff", "invalid UTF-8 in string");
    MP_ERR("\x81\xa1v\xa3\xed\xa0\x80", "invalid UTF-8 in string");
    MP_ERR("\x81\xa1v\xa2\xc0\x80", "invalid UTF-8 in string");
    MP_ERR("\x81\xa1v\xa1\xe4", "invalid UTF-8 in string");
    MP_ERR("\x81\xa1\xfe\x01", "invalid UTF-8 in string");
    MP_ERR("\x81\xa1v\xa3x\x00y", "NUL in string");
    MP_ERR("\x81\xa2k\x00\x01", "NUL in string");
    MP_ERR("\x81\xa1v\xca\x7f\xc0\x00\x00", "non-finite number");
    MP_ERR("\x81\xa1v\xca\x7f\x80\x00\x00", "non-finite number");
    MP_ERR("\x81\xa1v\xcb\xff\xf0\x00\x00\x00\x00\x00\x00", "non-finite number");
    MP_ERR("\x82\xa1k\x01\xa1k\x02", "duplicate key");
}

static void test_mp_decode_truncated(void **state) {
    (void)state;
    /* every strict prefix of a message touching every type fails cleanly */
    static const char msg[] =
        "\x8e\xa1n\xc0\xa1t\xc3\xa1i\xd3\x80\x00\x00\x00\x00\x00\x00\x00\xa1u\xcf\x00\x00\x00"
        "\x00\x00\x00\x01\x00\xa1" "f\xcb\x3f\xf8\x00\x00\x00\x00\x00\x00\xa1g\xca\x3f\xc0\x00"
        "\x00\xa1s\xd9\x03\xe4\xbd\xa0\xa1S\xda\x00\x01x\xa1L\xdb\x00\x00\x00\x01y\xa1" "a\xdc"
        "\x00\x02\x01\x02\xa1" "A\xdd\x00\x00\x00\x01\x90\xa1m\xde\x00\x01\xa1k\x80\xa1M\xdf\x00"
        "\x00\x00\x01\xa1k\xc2\xa1x\xd1\x80\x00";
    size_t n = sizeof(msg) - 1;
    json_t *j = mp_ok(msg, n);
    assert_int_equal(json_object_size(j), 14);
    json_decref(j);
    for (size_t cut = 0; cut < n; cut++) {
        const char *err = NULL;
        j = dec(KF_FMT_MSGPACK, msg, cut, &err);
        assert_null(j);
        assert_string_equal(err, "truncated msgpack");
    }
}

static void test_mp_decode_huge_counts(void **state) {
    (void)state;
    /* declared sizes far beyond the input must fail fast without allocating for them */
    MP_ERR("\xdf\xff\xff\xff\xff", "truncated msgpack");
    MP_ERR("\x81\xa1v\xdd\xff\xff\xff\xff", "truncated msgpack");
    MP_ERR("\x81\xa1v\xdb\xff\xff\xff\xff", "truncated msgpack");
    MP_ERR("\x81\xdb\xff\xff\xff\xff", "truncated msgpack");
    MP_ERR("\x81\xa1v\xdc\x00\x03\x01\x02", "truncated msgpack");
    MP_ERR("\x82\xa1v\x01", "truncated msgpack");
    MP_ERR("\x81\xa1v\xdd\xff\xff\xff\xff\x01\x01\x01\x01", "truncated msgpack");
}

static void test_mp_depth(void **state) {
    (void)state;
    char buf[64];
    for (int d = 1; d <= 16; d++) {
        size_t n = nested_mp(buf, d);
        json_decref(mp_ok(buf, n));
    }
    size_t n = nested_mp(buf, 17);
    mp_err(buf, n, "nesting too deep");
    n = nested_mp(buf, 40);
    mp_err(buf, n, "nesting too deep");
    /* nested maps */
    char m[128];
    size_t k = 0;
    for (int d = 0; d < 17; d++) {
        m[k++] = (char)0x81;
        m[k++] = (char)0xa1;
        m[k++] = 'a';
    }
    m[k++] = 0x01;
    mp_err(m, k, "nesting too deep");
    json_decref(mp_ok(m + 3, k - 3));
}

/* ---- encoding ---- */

static void test_encode_json(void **state) {
    (void)state;
    json_t *o = json_pack("{s:s, s:i, s:f, s:b, s:n, s:[i, s], s:{}}", "type", "msg", "n", -7,
                          "r", 0.5, "ok", 1, "nil", "a", 1, "中文\"\n", "o");
    size_t n;
    char *s = enc(KF_FMT_JSON, o, 0, &n);
    assert_string_equal(s, "{\"type\":\"msg\",\"n\":-7,\"r\":0.5,\"ok\":true,\"nil\":null,"
                           "\"a\":[1,\"中文\\\"\\n\"],\"o\":{}}");
    assert_int_equal(n, strlen(s));
    free(s);
    /* any value, not only objects */
    json_t *arr = json_pack("[i, s]", 1, "x");
    s = enc(KF_FMT_JSON, arr, 0, &n);
    assert_string_equal(s, "[1,\"x\"]");
    free(s);
    json_decref(arr);
    json_t *str = json_string("x");
    s = enc(KF_FMT_JSON, str, 0, &n);
    assert_string_equal(s, "\"x\"");
    free(s);
    json_decref(str);
    json_decref(o);
}

static void test_encode_headroom(void **state) {
    (void)state;
    json_t *o = json_pack("{s:s}", "k", "v");
    size_t heads[] = {0, 1, 4, 10, 14, 255, 4096, 100000};
    for (size_t f = 0; f < 2; f++) {
        for (size_t i = 0; i < sizeof(heads) / sizeof(heads[0]); i++) {
            char *out = NULL;
            size_t n = 0;
            assert_int_equal(kf_codec_encode((kf_format)f, o, heads[i], &out, &n), 0);
            memset(out, 0, heads[i]); /* headroom is ours to write */
            if (f == KF_FMT_JSON) {
                assert_int_equal(n, 9);
                assert_memory_equal(out + heads[i], "{\"k\":\"v\"}", 9);
            } else {
                assert_int_equal(n, 5);
                assert_memory_equal(out + heads[i], "\x81\xa1k\xa1v", 5);
            }
            free(out);
        }
    }
    json_decref(o);
}

static void test_encode_msgpack_ints(void **state) {
    (void)state;
    struct {
        long long v;
        const char *bytes;
        size_t n;
    } cases[] = {
        {0, "\x00", 1},
        {127, "\x7f", 1},
        {-1, "\xff", 1},
        {-32, "\xe0", 1},
        {128, "\xcc\x80", 2},
        {255, "\xcc\xff", 2},
        {256, "\xcd\x01\x00", 3},
        {65535, "\xcd\xff\xff", 3},
        {65536, "\xce\x00\x01\x00\x00", 5},
        {4294967296LL, "\xcf\x00\x00\x00\x01\x00\x00\x00\x00", 9},
        {INT64_MAX, "\xcf\x7f\xff\xff\xff\xff\xff\xff\xff", 9},
        {-33, "\xd0\xdf", 2},
        {-128, "\xd0\x80", 2},
        {-129, "\xd1\xff\x7f", 3},
        {-32769, "\xd2\xff\xff\x7f\xff", 5},
        {-2147483649LL, "\xd3\xff\xff\xff\xff\x7f\xff\xff\xff", 9},
        {INT64_MIN, "\xd3\x80\x00\x00\x00\x00\x00\x00\x00", 9},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_t *v = json_integer(cases[i].v);
        mp_bytes(v, cases[i].bytes, cases[i].n);
        json_decref(v);
    }
}

static void test_encode_msgpack_types(void **state) {
    (void)state;
    json_t *v = json_real(1.5);
    MP_BYTES(v, "\xcb\x3f\xf8\x00\x00\x00\x00\x00\x00");
    json_decref(v);
    MP_BYTES(json_true(), "\xc3");
    MP_BYTES(json_false(), "\xc2");
    MP_BYTES(json_null(), "\xc0");
    v = json_string("你好");
    MP_BYTES(v, "\xa6\xe4\xbd\xa0\xe5\xa5\xbd");
    json_decref(v);

    char s[300];
    memset(s, 'x', sizeof(s));
    v = json_stringn(s, 31);
    size_t n;
    char *out = enc(KF_FMT_MSGPACK, v, 0, &n);
    assert_int_equal(n, 32);
    assert_int_equal((unsigned char)out[0], 0xbf);
    free(out);
    json_decref(v);
    v = json_stringn(s, 32);
    out = enc(KF_FMT_MSGPACK, v, 0, &n);
    assert_int_equal(n, 34);
    assert_memory_equal(out, "\xd9\x20", 2);
    free(out);
    json_decref(v);
    v = json_stringn(s, 256);
    out = enc(KF_FMT_MSGPACK, v, 0, &n);
    assert_int_equal(n, 259);
    assert_memory_equal(out, "\xda\x01\x00", 3);
    free(out);
    json_decref(v);

    json_t *a = json_array();
    MP_BYTES(a, "\x90");
    for (int i = 0; i < 16; i++) json_array_append_new(a, json_integer(i));
    out = enc(KF_FMT_MSGPACK, a, 0, &n);
    assert_int_equal(n, 19);
    assert_memory_equal(out, "\xdc\x00\x10\x00\x01", 5);
    free(out);
    json_decref(a);

    json_t *o = json_object();
    MP_BYTES(o, "\x80");
    for (int i = 0; i < 16; i++) {
        char k[8];
        snprintf(k, sizeof(k), "%c", 'a' + i);
        json_object_set_new(o, k, json_null());
    }
    out = enc(KF_FMT_MSGPACK, o, 0, &n);
    assert_int_equal(n, 3 + 16 * 3);
    assert_memory_equal(out, "\xde\x00\x10\xa1" "a\xc0\xa1" "b\xc0", 9);
    free(out);
    json_decref(o);
}

static void round_trip(const char *text) {
    json_t *j = json_ok(text);
    size_t n, n2;
    char *mp = enc(KF_FMT_MSGPACK, j, 0, &n);
    json_t *back = mp_ok(mp, n);
    assert_true(json_equal(j, back));
    char *t1 = enc(KF_FMT_JSON, j, 0, &n);
    char *t2 = enc(KF_FMT_JSON, back, 3, &n2);
    assert_string_equal(t1, t2);
    /* and msgpack -> JSON -> msgpack gives the same bytes */
    json_t *again = json_ok(t2);
    char *mp2 = enc(KF_FMT_MSGPACK, again, 0, &n2);
    assert_int_equal(n, strlen(t1));
    free(t1);
    free(t2);
    size_t mpn;
    char *mp1 = enc(KF_FMT_MSGPACK, j, 0, &mpn);
    assert_int_equal(mpn, n2);
    assert_memory_equal(mp1, mp2, mpn);
    free(mp1);
    free(mp2);
    free(mp);
    json_decref(again);
    json_decref(back);
    json_decref(j);
}

static void test_round_trips(void **state) {
    (void)state;
    round_trip("{}");
    round_trip("{\"type\":\"msg.send\",\"id\":\"c-1\",\"conv\":\"c:42\",\"text\":\"你好，客服 😀\"}");
    round_trip("{\"n\":null,\"t\":true,\"f\":false,\"i\":0,\"neg\":-1,\"min\":-9223372036854775808,"
               "\"max\":9223372036854775807,\"u8\":200,\"u16\":60000,\"i32\":-100000,"
               "\"r\":-0.1,\"e\":1e300,\"tiny\":5e-324,\"z\":0.0}");
    round_trip("{\"a\":[1,[2,[3,[]]],{\"x\":{\"y\":[null]}}],\"s\":\"\\u0001\\t\\\"\\\\/\"}");
    round_trip("{\"日本語キー\":\"значение\",\"emoji🎉\":[\"\xf4\x8f\xbf\xbf\"]}");
    char *deep = nested_json(16, '{', '}');
    round_trip(deep);
    free(deep);
}

static void test_round_trip_large(void **state) {
    (void)state;
    json_t *o = json_object();
    json_t *a = json_array();
    for (int i = 0; i < 70000; i++) json_array_append_new(a, json_integer(i * 37 - 100000));
    json_object_set_new(o, "a", a);
    char *big = malloc(70000);
    memset(big, 'z', 70000);
    json_object_set_new(o, "s", json_stringn(big, 70000));
    free(big);
    for (size_t f = 0; f < 2; f++) {
        size_t n;
        char *out = enc((kf_format)f, o, 16, &n);
        const char *err = NULL;
        json_t *back = dec((kf_format)f, out, n, &err);
        assert_non_null(back);
        assert_true(json_equal(o, back));
        json_decref(back);
        free(out);
    }
    json_decref(o);
}

static void test_encode_depth(void **state) {
    (void)state;
    for (size_t f = 0; f < 2; f++) {
        json_t *ok = nested_value(16);
        size_t n;
        free(enc((kf_format)f, ok, 0, &n));
        json_decref(ok);
        json_t *bad = nested_value(17);
        char *out = (char *)0x1;
        n = 99;
        assert_int_equal(kf_codec_encode((kf_format)f, bad, 8, &out, &n), -1);
        assert_null(out);
        assert_int_equal(n, 0);
        json_decref(bad);
        /* a bare array counts as a level too */
        json_t *arr = json_array(), *cur = arr;
        for (int i = 1; i < 17; i++) {
            json_t *next = json_array();
            json_array_append_new(cur, next);
            cur = next;
        }
        assert_int_equal(kf_codec_encode((kf_format)f, arr, 0, &out, &n), -1);
        json_decref(arr);
    }
}

static void test_encode_errors(void **state) {
    (void)state;
    char *out = (char *)0x1;
    size_t n = 1;
    json_t *bad = wrap("s", json_stringn_nocheck("\xff\xfe", 2));
    assert_int_equal(kf_codec_encode(KF_FMT_MSGPACK, bad, 0, &out, &n), -1);
    assert_null(out);
    assert_int_equal(kf_codec_encode(KF_FMT_JSON, bad, 0, &out, &n), -1);
    assert_null(out);
    json_decref(bad);
    json_t *o = json_object();
    json_object_setn_new_nocheck(o, "\xc0\x80", 2, json_null());
    assert_int_equal(kf_codec_encode(KF_FMT_MSGPACK, o, 0, &out, &n), -1);
    json_decref(o);
    assert_int_equal(kf_codec_encode(KF_FMT_JSON, NULL, 0, &out, &n), -1);
    o = json_object();
    assert_int_equal(kf_codec_encode((kf_format)9, o, 0, &out, &n), -1);
    assert_null(out);
    json_decref(o);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_json_decode_values),
        cmocka_unit_test(test_json_decode_errors),
        cmocka_unit_test(test_json_depth),
        cmocka_unit_test(test_mp_decode_scalars),
        cmocka_unit_test(test_mp_decode_containers),
        cmocka_unit_test(test_mp_decode_errors),
        cmocka_unit_test(test_mp_decode_truncated),
        cmocka_unit_test(test_mp_decode_huge_counts),
        cmocka_unit_test(test_mp_depth),
        cmocka_unit_test(test_encode_json),
        cmocka_unit_test(test_encode_headroom),
        cmocka_unit_test(test_encode_msgpack_ints),
        cmocka_unit_test(test_encode_msgpack_types),
        cmocka_unit_test(test_round_trips),
        cmocka_unit_test(test_round_trip_large),
        cmocka_unit_test(test_encode_depth),
        cmocka_unit_test(test_encode_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
