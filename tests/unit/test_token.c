/* Unit tests for JWT HS256 verification and minting. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "kefu/token.h"

#define NOW 1800000000LL
#define SECRET "test-secret-1"

static const char *const one_secret[] = {SECRET};

/* Reference base64url (OpenSSL's base64 with the URL alphabet and no padding). */
static char *b64url(const void *data, size_t n) {
    char *out = malloc(4 * ((n + 2) / 3) + 1);
    int len = EVP_EncodeBlock((unsigned char *)out, data, (int)n);
    while (len > 0 && out[len - 1] == '=') len--;
    out[len] = '\0';
    for (int i = 0; i < len; i++) {
        if (out[i] == '+') out[i] = '-';
        else if (out[i] == '/') out[i] = '_';
    }
    return out;
}

static char *b64url_to_text(const char *s, size_t n) {
    char *tmp = malloc(n + 4);
    memcpy(tmp, s, n);
    for (size_t i = 0; i < n; i++) {
        if (tmp[i] == '-') tmp[i] = '+';
        else if (tmp[i] == '_') tmp[i] = '/';
    }
    size_t pad = (4 - n % 4) % 4;
    memset(tmp + n, '=', pad);
    char *out = malloc(n + 4);
    int len = EVP_DecodeBlock((unsigned char *)out, (unsigned char *)tmp, (int)(n + pad));
    assert_true(len >= 0);
    out[len - (int)pad] = '\0';
    free(tmp);
    return out;
}

/* Builds header.payload.signature from raw JSON texts; the signature uses secret, or is empty
 * when secret is NULL. */
static char *make_token(const char *header, const char *payload, const char *secret) {
    char *h = b64url(header, strlen(header));
    char *p = b64url(payload, strlen(payload));
    char *tok = malloc(strlen(h) + strlen(p) + 64);
    sprintf(tok, "%s.%s", h, p);
    if (secret) {
        unsigned char md[32];
        unsigned mdlen = 0;
        HMAC(EVP_sha256(), secret, (int)strlen(secret), (unsigned char *)tok, strlen(tok), md, &mdlen);
        char *s = b64url(md, mdlen);
        strcat(tok, ".");
        strcat(tok, s);
        free(s);
    } else {
        strcat(tok, ".");
    }
    free(h);
    free(p);
    return tok;
}

static const char HS256[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";

static kf_token_result verify_with(const char *tok, const char *const *secrets, size_t n,
                                   kf_claims *c) {
    return kf_token_verify(tok, strlen(tok), secrets, n, NOW, 0, c);
}

static kf_token_result verify_payload(const char *payload, kf_claims *c) {
    char *tok = make_token(HS256, payload, SECRET);
    kf_token_result r = verify_with(tok, one_secret, 1, c);
    free(tok);
    return r;
}

#define CLAIMS_OK(payload) assert_int_equal(verify_payload(payload, &c), KF_TOKEN_OK)
#define CLAIMS_BAD(payload) assert_int_equal(verify_payload(payload, &c), KF_TOKEN_BAD_CLAIMS)

static void fill_claims(kf_claims *c) {
    memset(c, 0, sizeof(*c));
    strcpy(c->sub, "agent-007");
    c->role = KF_ROLE_AGENT;
    c->exp = NOW + 3600;
    strcpy(c->name, "王小明");
    strcpy(c->channel, "web");
    c->level = 3;
    strcpy(c->skills, "billing,tech");
    c->max_chats = 5;
}

static void test_round_trip(void **state) {
    (void)state;
    kf_claims in, out;
    fill_claims(&in);
    char *tok = kf_token_mint(SECRET, &in);
    assert_non_null(tok);
    assert_int_equal(verify_with(tok, one_secret, 1, &out), KF_TOKEN_OK);
    assert_memory_equal(&in, &out, sizeof(in));
    free(tok);
}

static void test_mint_format(void **state) {
    (void)state;
    kf_claims in;
    fill_claims(&in);
    char *tok = kf_token_mint(SECRET, &in);
    char *d1 = strchr(tok, '.'), *d2 = strchr(d1 + 1, '.');
    assert_null(strchr(d2 + 1, '.'));
    assert_null(strchr(tok, '='));
    assert_int_equal(strlen(d2 + 1), 43);
    char *h = b64url_to_text(tok, (size_t)(d1 - tok));
    assert_string_equal(h, HS256);
    char *p = b64url_to_text(d1 + 1, (size_t)(d2 - d1 - 1));
    json_t *j = json_loads(p, 0, NULL);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "sub")), "agent-007");
    assert_string_equal(json_string_value(json_object_get(j, "role")), "agent");
    assert_int_equal(json_integer_value(json_object_get(j, "exp")), NOW + 3600);
    json_t *skills = json_object_get(j, "skills");
    assert_true(json_is_array(skills));
    assert_int_equal(json_array_size(skills), 2);
    assert_string_equal(json_string_value(json_array_get(skills, 1)), "tech");
    assert_int_equal(json_integer_value(json_object_get(j, "max_chats")), 5);
    json_decref(j);
    free(h);
    free(p);

    /* the signature is HMAC-SHA256 over header.payload with the secret */
    unsigned char md[32];
    unsigned mdlen = 0;
    HMAC(EVP_sha256(), SECRET, (int)strlen(SECRET), (unsigned char *)tok, (size_t)(d2 - tok), md,
         &mdlen);
    char *sig = b64url(md, mdlen);
    assert_string_equal(d2 + 1, sig);
    free(sig);
    free(tok);
}

static void test_mint_minimal(void **state) {
    (void)state;
    kf_claims in, out;
    memset(&in, 0, sizeof(in));
    strcpy(in.sub, "u1");
    in.role = KF_ROLE_CUSTOMER;
    in.exp = NOW + 10;
    char *tok = kf_token_mint(SECRET, &in);
    assert_non_null(tok);
    char *d1 = strchr(tok, '.'), *d2 = strchr(d1 + 1, '.');
    char *p = b64url_to_text(d1 + 1, (size_t)(d2 - d1 - 1));
    json_t *j = json_loads(p, 0, NULL);
    assert_int_equal(json_object_size(j), 3); /* sub, role, exp only */
    json_decref(j);
    free(p);
    assert_int_equal(verify_with(tok, one_secret, 1, &out), KF_TOKEN_OK);
    assert_string_equal(out.sub, "u1");
    assert_int_equal(out.role, KF_ROLE_CUSTOMER);
    assert_string_equal(out.name, "");
    assert_string_equal(out.channel, "");
    assert_string_equal(out.skills, "");
    assert_int_equal(out.level, 0);
    assert_int_equal(out.max_chats, 0);
    free(tok);
}

static void test_mint_invalid(void **state) {
    (void)state;
    kf_claims c;
    fill_claims(&c);
    assert_null(kf_token_mint(NULL, &c));
    assert_null(kf_token_mint("", &c));
    assert_null(kf_token_mint(SECRET, NULL));
    fill_claims(&c); c.sub[0] = '\0';
    assert_null(kf_token_mint(SECRET, &c));
    fill_claims(&c); c.role = KF_ROLE_NONE;
    assert_null(kf_token_mint(SECRET, &c));
    fill_claims(&c); c.role = (kf_role)99;
    assert_null(kf_token_mint(SECRET, &c));
    fill_claims(&c); strcpy(c.sub, "a\tb");
    assert_null(kf_token_mint(SECRET, &c));
    fill_claims(&c); memset(c.sub, 'x', sizeof(c.sub)); /* not NUL-terminated */
    assert_null(kf_token_mint(SECRET, &c));
    fill_claims(&c); strcpy(c.channel, "Web");
    assert_null(kf_token_mint(SECRET, &c));
    fill_claims(&c); c.level = 101;
    assert_null(kf_token_mint(SECRET, &c));
    fill_claims(&c); c.level = -1;
    assert_null(kf_token_mint(SECRET, &c));
    fill_claims(&c); strcpy(c.skills, "a,,b");
    assert_null(kf_token_mint(SECRET, &c));
    fill_claims(&c); strcpy(c.skills, "billing,");
    assert_null(kf_token_mint(SECRET, &c));
    fill_claims(&c); strcpy(c.skills, "Billing");
    assert_null(kf_token_mint(SECRET, &c));
    fill_claims(&c); c.max_chats = 1001;
    assert_null(kf_token_mint(SECRET, &c));
    fill_claims(&c); strcpy(c.name, "bad\xff");
    assert_null(kf_token_mint(SECRET, &c));
}

static void test_expiry(void **state) {
    (void)state;
    kf_claims c;
    char *tok = make_token(HS256, "{\"sub\":\"a\",\"role\":\"customer\",\"exp\":1800000000}", SECRET);
    size_t n = strlen(tok);
    assert_int_equal(kf_token_verify(tok, n, one_secret, 1, NOW - 1, 0, &c), KF_TOKEN_OK);
    assert_int_equal(c.exp, NOW);
    assert_int_equal(kf_token_verify(tok, n, one_secret, 1, NOW, 0, &c), KF_TOKEN_EXPIRED);
    assert_int_equal(kf_token_verify(tok, n, one_secret, 1, NOW + 100, 0, &c), KF_TOKEN_EXPIRED);
    assert_int_equal(kf_token_verify(tok, n, one_secret, 1, NOW + 29, 30, &c), KF_TOKEN_OK);
    assert_int_equal(kf_token_verify(tok, n, one_secret, 1, NOW + 30, 30, &c), KF_TOKEN_EXPIRED);
    assert_int_equal(kf_token_verify(tok, n, one_secret, 1, NOW, -100, &c), KF_TOKEN_EXPIRED);
    free(tok);

    /* extreme values must not overflow */
    tok = make_token(HS256,
        "{\"sub\":\"a\",\"role\":\"customer\",\"exp\":-9223372036854775808}", SECRET);
    assert_int_equal(kf_token_verify(tok, strlen(tok), one_secret, 1, NOW, 9223372036854775807LL, &c),
                     KF_TOKEN_EXPIRED);
    assert_int_equal(kf_token_verify(tok, strlen(tok), one_secret, 1, -9223372036854775807LL - 1,
                                     0, &c), KF_TOKEN_EXPIRED);
    assert_int_equal(kf_token_verify(tok, strlen(tok), one_secret, 1, -9223372036854775807LL - 1,
                                     1, &c), KF_TOKEN_OK);
    free(tok);
    tok = make_token(HS256,
        "{\"sub\":\"a\",\"role\":\"customer\",\"exp\":9223372036854775807}", SECRET);
    assert_int_equal(kf_token_verify(tok, strlen(tok), one_secret, 1, NOW, 9223372036854775807LL, &c),
                     KF_TOKEN_OK);
    free(tok);
}

static void test_nbf(void **state) {
    (void)state;
    kf_claims c;
    char *tok = make_token(HS256,
        "{\"sub\":\"a\",\"role\":\"customer\",\"exp\":1800009999,\"nbf\":1800000000}", SECRET);
    size_t n = strlen(tok);
    assert_int_equal(kf_token_verify(tok, n, one_secret, 1, NOW, 0, &c), KF_TOKEN_OK);
    assert_int_equal(kf_token_verify(tok, n, one_secret, 1, NOW - 1, 0, &c), KF_TOKEN_NOT_YET_VALID);
    assert_int_equal(kf_token_verify(tok, n, one_secret, 1, NOW - 60, 60, &c), KF_TOKEN_OK);
    assert_int_equal(kf_token_verify(tok, n, one_secret, 1, NOW - 61, 60, &c), KF_TOKEN_NOT_YET_VALID);
    free(tok);
    CLAIMS_BAD("{\"sub\":\"a\",\"role\":\"customer\",\"exp\":1800009999,\"nbf\":\"1\"}");
    CLAIMS_BAD("{\"sub\":\"a\",\"role\":\"customer\",\"exp\":1800009999,\"nbf\":1.5}");
    tok = make_token(HS256,
        "{\"sub\":\"a\",\"role\":\"customer\",\"exp\":1800009999,\"nbf\":9223372036854775807}", SECRET);
    assert_int_equal(kf_token_verify(tok, strlen(tok), one_secret, 1, -9223372036854775807LL - 1,
                                     9223372036854775807LL, &c), KF_TOKEN_NOT_YET_VALID);
    free(tok);
}

static void test_secrets(void **state) {
    (void)state;
    kf_claims c;
    char *tok = make_token(HS256, "{\"sub\":\"a\",\"role\":\"agent\",\"exp\":1900000000}", "old");
    const char *wrong[] = {"new"};
    const char *rotation[] = {"new", "old"};
    const char *with_holes[] = {NULL, "", "old"};
    assert_int_equal(verify_with(tok, wrong, 1, &c), KF_TOKEN_BAD_SIGNATURE);
    assert_int_equal(verify_with(tok, rotation, 2, &c), KF_TOKEN_OK);
    assert_int_equal(c.role, KF_ROLE_AGENT);
    assert_int_equal(verify_with(tok, rotation, 1, &c), KF_TOKEN_BAD_SIGNATURE);
    assert_int_equal(verify_with(tok, with_holes, 3, &c), KF_TOKEN_OK);
    assert_int_equal(verify_with(tok, rotation, 0, &c), KF_TOKEN_BAD_SIGNATURE);
    assert_int_equal(verify_with(tok, NULL, 0, &c), KF_TOKEN_BAD_SIGNATURE);
    free(tok);

    /* a token signed with an empty key is never accepted */
    tok = make_token(HS256, "{\"sub\":\"a\",\"role\":\"agent\",\"exp\":1900000000}", "");
    const char *empty[] = {""};
    assert_int_equal(verify_with(tok, empty, 1, &c), KF_TOKEN_BAD_SIGNATURE);
    free(tok);
}

static void test_bad_alg(void **state) {
    (void)state;
    kf_claims c;
    const char *payload = "{\"sub\":\"a\",\"role\":\"admin\",\"exp\":1900000000}";
    const char *headers[] = {
        "{\"alg\":\"none\",\"typ\":\"JWT\"}", "{\"alg\":\"none\"}", "{\"alg\":\"HS512\"}",
        "{\"alg\":\"hs256\"}", "{\"alg\":\"RS256\"}", "{\"typ\":\"JWT\"}", "{\"alg\":256}",
        "{\"alg\":null}", "{\"alg\":\"HS256 \"}",
    };
    for (size_t i = 0; i < sizeof(headers) / sizeof(headers[0]); i++) {
        char *tok = make_token(headers[i], payload, NULL); /* alg none style: empty signature */
        assert_int_equal(verify_with(tok, one_secret, 1, &c), KF_TOKEN_BAD_ALG);
        free(tok);
        tok = make_token(headers[i], payload, SECRET); /* even when correctly signed */
        assert_int_equal(verify_with(tok, one_secret, 1, &c), KF_TOKEN_BAD_ALG);
        free(tok);
    }
    /* alg none with signature stripped entirely (only one dot) */
    char *tok = make_token("{\"alg\":\"none\"}", payload, NULL);
    tok[strlen(tok) - 1] = '\0';
    assert_int_equal(verify_with(tok, one_secret, 1, &c), KF_TOKEN_MALFORMED);
    free(tok);
}

static void test_header_rules(void **state) {
    (void)state;
    kf_claims c;
    const char *payload = "{\"sub\":\"a\",\"role\":\"admin\",\"exp\":1900000000}";
    char *tok = make_token("{\"alg\":\"HS256\"}", payload, SECRET);
    assert_int_equal(verify_with(tok, one_secret, 1, &c), KF_TOKEN_OK);
    free(tok);
    tok = make_token("{\"typ\":\"JWT\",\"alg\":\"HS256\",\"kid\":\"k1\"}", payload, SECRET);
    assert_int_equal(verify_with(tok, one_secret, 1, &c), KF_TOKEN_OK);
    free(tok);
    const char *bad[] = {
        "{\"alg\":\"HS256\",\"typ\":\"JWS\"}", "{\"alg\":\"HS256\",\"typ\":1}",
        "{\"alg\":\"HS256\",\"crit\":[\"exp\"]}", "[\"HS256\"]", "\"HS256\"", "{\"alg\":\"HS256\"",
        "{\"alg\":\"HS256\",\"alg\":\"none\"}", "",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        tok = make_token(bad[i], payload, SECRET);
        assert_int_equal(verify_with(tok, one_secret, 1, &c), KF_TOKEN_MALFORMED);
        free(tok);
    }
}

static void test_tampered(void **state) {
    (void)state;
    kf_claims c;
    char *tok = make_token(HS256, "{\"sub\":\"a\",\"role\":\"customer\",\"exp\":1900000000}", SECRET);
    char *forged = make_token(HS256, "{\"sub\":\"a\",\"role\":\"admin\",\"exp\":1900000000}", "x");
    /* forged payload with the original signature */
    char *d2 = strrchr(forged, '.');
    char *mix = malloc(strlen(tok) + strlen(forged));
    sprintf(mix, "%.*s%s", (int)(d2 - forged), forged, strrchr(tok, '.'));
    assert_int_equal(verify_with(mix, one_secret, 1, &c), KF_TOKEN_BAD_SIGNATURE);
    free(mix);
    free(forged);

    /* flip one character anywhere in header, payload or signature */
    size_t n = strlen(tok);
    for (size_t i = 0; i < n; i++) {
        if (tok[i] == '.') continue;
        char *t = strdup(tok);
        t[i] = t[i] == 'A' ? 'B' : 'A';
        kf_token_result r = verify_with(t, one_secret, 1, &c);
        assert_int_not_equal(r, KF_TOKEN_OK);
        free(t);
    }
    /* truncated and extended signatures */
    tok[n - 1] = '\0';
    assert_int_not_equal(verify_with(tok, one_secret, 1, &c), KF_TOKEN_OK);
    tok[n - 4] = '\0';
    assert_int_equal(verify_with(tok, one_secret, 1, &c), KF_TOKEN_BAD_SIGNATURE);
    free(tok);
}

static void test_bad_base64(void **state) {
    (void)state;
    kf_claims c;
    char *tok = make_token(HS256, "{\"sub\":\"a\",\"role\":\"customer\",\"exp\":1900000000}", SECRET);
    assert_int_equal(verify_with(tok, one_secret, 1, &c), KF_TOKEN_OK);
    char *d1 = strchr(tok, '.'), *d2 = strchr(d1 + 1, '.');
    size_t n = strlen(tok);
    const char bad_chars[] = {'+', '/', '=', ' ', '\0', '\n', '*', (char)0xc3};
    size_t positions[] = {0, (size_t)(d1 - tok) + 1, (size_t)(d2 - tok) + 1, n - 1};
    for (size_t p = 0; p < sizeof(positions) / sizeof(positions[0]); p++) {
        for (size_t b = 0; b < sizeof(bad_chars); b++) {
            char *t = malloc(n);
            memcpy(t, tok, n);
            t[positions[p]] = bad_chars[b];
            assert_int_equal(kf_token_verify(t, n, one_secret, 1, NOW, 0, &c), KF_TOKEN_MALFORMED);
            free(t);
        }
    }
    /* padding appended to the signature */
    char *padded = malloc(n + 2);
    sprintf(padded, "%s=", tok);
    assert_int_equal(verify_with(padded, one_secret, 1, &c), KF_TOKEN_MALFORMED);
    free(padded);
    /* a part of length 4k+1 (43 + 2 = 45) is never valid base64url */
    char *extra = malloc(n + 3);
    sprintf(extra, "%sAA", tok);
    assert_int_equal(strlen(strrchr(extra, '.') + 1) % 4, 1);
    assert_int_equal(verify_with(extra, one_secret, 1, &c), KF_TOKEN_MALFORMED);
    free(extra);
    free(tok);

    /* non-canonical encoding: the 43-char signature encodes 32 bytes and leaves 2 unused bits
     * in its last character, which must be zero */
    tok = make_token(HS256, "{\"sub\":\"a\",\"role\":\"customer\",\"exp\":1900000000}", SECRET);
    n = strlen(tok);
    const char *alpha = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    int v = (int)(strchr(alpha, tok[n - 1]) - alpha);
    assert_int_equal(v & 3, 0);
    tok[n - 1] = alpha[v | 1];
    assert_int_equal(verify_with(tok, one_secret, 1, &c), KF_TOKEN_MALFORMED);
    free(tok);
    /* a part of length 4k+2 leaves 4 unused bits; find a payload with that length and set one */
    int done = 0;
    for (int xl = 0; xl < 3; xl++) {
        char payload[128];
        snprintf(payload, sizeof(payload),
                 "{\"sub\":\"a\",\"role\":\"customer\",\"exp\":1900000000,\"x\":\"%.*s\"}", xl,
                 "xxx");
        tok = make_token(HS256, payload, SECRET);
        char *p1 = strchr(tok, '.'), *p2 = strchr(p1 + 1, '.');
        if ((p2 - p1 - 1) % 4 == 2) {
            v = (int)(strchr(alpha, p2[-1]) - alpha);
            assert_int_equal(v & 15, 0);
            p2[-1] = alpha[v | 8];
            assert_int_equal(verify_with(tok, one_secret, 1, &c), KF_TOKEN_MALFORMED);
            done = 1;
        }
        free(tok);
    }
    assert_true(done);
}

static void test_structure(void **state) {
    (void)state;
    kf_claims c;
    const char *bad[] = {"", "abc", "a.b", "a.b.c.d", ".b.c", "a..c", "..", "...", "eyJ9.eyJ9.",
                         "e30.e30.e30.e30"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(verify_with(bad[i], one_secret, 1, &c), KF_TOKEN_MALFORMED);
    assert_int_equal(kf_token_verify(NULL, 10, one_secret, 1, NOW, 0, &c), KF_TOKEN_MALFORMED);

    /* payload that is valid base64url but not a JSON object, correctly signed */
    const char *payloads[] = {"[1,2]", "not json", "\"str\"", "{\"sub\":\"a\"", "",
                              "{\"sub\":\"a\",\"sub\":\"b\",\"role\":\"agent\",\"exp\":1900000000}"};
    for (size_t i = 0; i < sizeof(payloads) / sizeof(payloads[0]); i++) {
        char *tok = make_token(HS256, payloads[i], SECRET);
        assert_int_equal(verify_with(tok, one_secret, 1, &c), KF_TOKEN_MALFORMED);
        free(tok);
    }
}

static void test_length_bound(void **state) {
    (void)state;
    kf_claims c;
    /* vary a header field and a padding claim until the token is exactly 4096, then 4097 bytes */
    char header[64], payload[8192], pad[4096];
    int found4096 = 0, found4097 = 0;
    for (int kid = 0; kid < 4; kid++) {
        snprintf(header, sizeof(header), "{\"alg\":\"HS256\",\"kid\":\"%.*s\"}", kid, "kkkk");
        for (size_t plen = 2900; plen < 3000; plen++) {
            memset(pad, 'p', plen);
            pad[plen] = '\0';
            snprintf(payload, sizeof(payload),
                     "{\"sub\":\"a\",\"role\":\"customer\",\"exp\":1900000000,\"pad\":\"%s\"}", pad);
            char *tok = make_token(header, payload, SECRET);
            size_t n = strlen(tok);
            if (n == 4096) {
                found4096 = 1;
                assert_int_equal(kf_token_verify(tok, n, one_secret, 1, NOW, 0, &c), KF_TOKEN_OK);
            } else if (n == 4097) {
                found4097 = 1;
                assert_int_equal(kf_token_verify(tok, n, one_secret, 1, NOW, 0, &c),
                                 KF_TOKEN_MALFORMED);
            }
            free(tok);
        }
    }
    assert_true(found4096 && found4097);
    char *huge = malloc(100000);
    memset(huge, 'A', 99999);
    huge[99999] = '\0';
    huge[10] = '.';
    huge[20] = '.';
    assert_int_equal(verify_with(huge, one_secret, 1, &c), KF_TOKEN_MALFORMED);
    free(huge);
}

static void test_not_nul_terminated(void **state) {
    (void)state;
    kf_claims c;
    char *tok = make_token(HS256, "{\"sub\":\"a\",\"role\":\"customer\",\"exp\":1900000000}", SECRET);
    size_t n = strlen(tok);
    char *buf = malloc(n); /* exact size: ASan catches any read past the end */
    memcpy(buf, tok, n);
    assert_int_equal(kf_token_verify(buf, n, one_secret, 1, NOW, 0, &c), KF_TOKEN_OK);
    assert_int_equal(kf_token_verify(buf, n - 3, one_secret, 1, NOW, 0, &c),
                     KF_TOKEN_BAD_SIGNATURE);
    free(buf);
    /* trailing garbage after len is ignored */
    char *more = malloc(n + 8);
    memcpy(more, tok, n);
    memcpy(more + n, ".garbage", 8);
    assert_int_equal(kf_token_verify(more, n, one_secret, 1, NOW, 0, &c), KF_TOKEN_OK);
    assert_int_equal(kf_token_verify(more, n + 8, one_secret, 1, NOW, 0, &c), KF_TOKEN_MALFORMED);
    free(more);
    free(tok);
}

static void test_missing_claims(void **state) {
    (void)state;
    kf_claims c;
    CLAIMS_OK("{\"sub\":\"a\",\"role\":\"customer\",\"exp\":1900000000}");
    CLAIMS_BAD("{\"role\":\"customer\",\"exp\":1900000000}");
    CLAIMS_BAD("{\"sub\":\"a\",\"exp\":1900000000}");
    CLAIMS_BAD("{\"sub\":\"a\",\"role\":\"customer\"}");
    CLAIMS_BAD("{}");
}

static void test_claim_types(void **state) {
    (void)state;
    kf_claims c;
#define P(extra) "{\"sub\":\"a\",\"role\":\"agent\",\"exp\":1900000000" extra "}"
    /* sub */
    CLAIMS_BAD("{\"sub\":1,\"role\":\"agent\",\"exp\":1900000000}");
    CLAIMS_BAD("{\"sub\":\"\",\"role\":\"agent\",\"exp\":1900000000}");
    CLAIMS_BAD("{\"sub\":null,\"role\":\"agent\",\"exp\":1900000000}");
    CLAIMS_BAD("{\"sub\":[\"a\"],\"role\":\"agent\",\"exp\":1900000000}");
    CLAIMS_BAD("{\"sub\":\"a\\nb\",\"role\":\"agent\",\"exp\":1900000000}");
    CLAIMS_BAD("{\"sub\":\"a\\u007f\",\"role\":\"agent\",\"exp\":1900000000}");
    CLAIMS_BAD("{\"sub\":\"a\\u0085\",\"role\":\"agent\",\"exp\":1900000000}");
    assert_int_equal(verify_payload("{\"sub\":\"a\\u0000b\",\"role\":\"agent\",\"exp\":1}", &c),
                     KF_TOKEN_MALFORMED); /* jansson refuses \u0000 outright */
    CLAIMS_OK("{\"sub\":\"用户\\u00a0x\",\"role\":\"agent\",\"exp\":1900000000}");
    assert_string_equal(c.sub, "用户\xc2\xa0x");
    /* role */
    CLAIMS_BAD("{\"sub\":\"a\",\"role\":\"root\",\"exp\":1900000000}");
    CLAIMS_BAD("{\"sub\":\"a\",\"role\":\"none\",\"exp\":1900000000}");
    CLAIMS_BAD("{\"sub\":\"a\",\"role\":\"Agent\",\"exp\":1900000000}");
    CLAIMS_BAD("{\"sub\":\"a\",\"role\":1,\"exp\":1900000000}");
    const char *roles[] = {"customer", "agent", "supervisor", "admin"};
    for (int i = 0; i < 4; i++) {
        char p[128];
        snprintf(p, sizeof(p), "{\"sub\":\"a\",\"role\":\"%s\",\"exp\":1900000000}", roles[i]);
        CLAIMS_OK(p);
        assert_int_equal(c.role, KF_ROLE_CUSTOMER + i);
    }
    /* exp */
    CLAIMS_BAD("{\"sub\":\"a\",\"role\":\"agent\",\"exp\":\"1900000000\"}");
    CLAIMS_BAD("{\"sub\":\"a\",\"role\":\"agent\",\"exp\":1900000000.5}");
    CLAIMS_BAD("{\"sub\":\"a\",\"role\":\"agent\",\"exp\":1.9e9}");
    CLAIMS_BAD("{\"sub\":\"a\",\"role\":\"agent\",\"exp\":null}");
    CLAIMS_BAD("{\"sub\":\"a\",\"role\":\"agent\",\"exp\":true}");
    /* name */
    CLAIMS_OK(P(",\"name\":\"张三 Zhang\""));
    assert_string_equal(c.name, "张三 Zhang");
    CLAIMS_OK(P(",\"name\":\"\""));
    CLAIMS_BAD(P(",\"name\":5"));
    CLAIMS_BAD(P(",\"name\":\"tab\\there\""));
    /* channel */
    CLAIMS_OK(P(",\"channel\":\"wechat_mini-2\""));
    assert_string_equal(c.channel, "wechat_mini-2");
    CLAIMS_BAD(P(",\"channel\":\"Web\""));
    CLAIMS_BAD(P(",\"channel\":\"\""));
    CLAIMS_BAD(P(",\"channel\":\"abcdefghijklmnopqrstuvwxy\""));
    CLAIMS_BAD(P(",\"channel\":1"));
    /* level */
    CLAIMS_OK(P(",\"level\":0"));
    CLAIMS_OK(P(",\"level\":100"));
    assert_int_equal(c.level, 100);
    CLAIMS_BAD(P(",\"level\":101"));
    CLAIMS_BAD(P(",\"level\":-1"));
    CLAIMS_BAD(P(",\"level\":\"5\""));
    CLAIMS_BAD(P(",\"level\":5.0"));
    CLAIMS_BAD(P(",\"level\":4294967297"));
    /* max_chats */
    CLAIMS_OK(P(",\"max_chats\":1"));
    assert_int_equal(c.max_chats, 1);
    CLAIMS_OK(P(",\"max_chats\":1000"));
    assert_int_equal(c.max_chats, 1000);
    CLAIMS_BAD(P(",\"max_chats\":0"));
    CLAIMS_BAD(P(",\"max_chats\":1001"));
    CLAIMS_BAD(P(",\"max_chats\":[]"));
    /* unknown claims are ignored */
    CLAIMS_OK(P(",\"iat\":1,\"iss\":\"kefu\",\"extra\":{\"x\":[1,2]}"));
#undef P
}

static void test_lengths(void **state) {
    (void)state;
    kf_claims c;
    char p[2048], s[300];
    memset(s, 'x', 128);
    s[128] = '\0';
    snprintf(p, sizeof(p), "{\"sub\":\"%s\",\"role\":\"agent\",\"exp\":1900000000,\"name\":\"%s\"}", s, s);
    CLAIMS_OK(p);
    assert_int_equal(strlen(c.sub), 128);
    assert_int_equal(strlen(c.name), 128);
    s[128] = 'x';
    s[129] = '\0';
    snprintf(p, sizeof(p), "{\"sub\":\"%s\",\"role\":\"agent\",\"exp\":1900000000}", s);
    CLAIMS_BAD(p);
    snprintf(p, sizeof(p), "{\"sub\":\"a\",\"role\":\"agent\",\"exp\":1900000000,\"name\":\"%s\"}", s);
    CLAIMS_BAD(p);
    /* 43 x 3-byte characters = 129 bytes */
    s[0] = '\0';
    for (int i = 0; i < 43; i++) strcat(s, "字");
    snprintf(p, sizeof(p), "{\"sub\":\"a\",\"role\":\"agent\",\"exp\":1900000000,\"name\":\"%s\"}", s);
    CLAIMS_BAD(p);
}

static void test_skills(void **state) {
    (void)state;
    kf_claims c;
#define P(extra) "{\"sub\":\"a\",\"role\":\"agent\",\"exp\":1900000000,\"skills\":" extra "}"
    CLAIMS_OK(P("[\"billing\",\"tech\",\"vip_2-x\"]"));
    assert_string_equal(c.skills, "billing,tech,vip_2-x");
    CLAIMS_OK(P("[]"));
    assert_string_equal(c.skills, "");
    CLAIMS_OK(P("[\"abcdefghijklmnopqrstuvwxyz012345\"]")); /* 32 */
    CLAIMS_BAD(P("[\"abcdefghijklmnopqrstuvwxyz0123456\"]")); /* 33 */
    CLAIMS_BAD(P("\"billing\""));
    CLAIMS_BAD(P("\"billing,tech\""));
    CLAIMS_BAD(P("[\"billing\",1]"));
    CLAIMS_BAD(P("[\"\"]"));
    CLAIMS_BAD(P("[\"Billing\"]"));
    CLAIMS_BAD(P("[\"a,b\"]"));
    CLAIMS_BAD(P("[\"a b\"]"));
    CLAIMS_BAD(P("[[\"a\"]]"));
    CLAIMS_BAD(P("{\"a\":1}"));
#undef P
    /* total length: 8 skills of 31 chars + 7 commas = 255 fits; one more char does not */
    char p[1024], *w;
    w = p + sprintf(p, "{\"sub\":\"a\",\"role\":\"agent\",\"exp\":1900000000,\"skills\":[");
    for (int i = 0; i < 8; i++) w += sprintf(w, "%s\"%031d\"", i ? "," : "", i);
    strcpy(w, "]}");
    CLAIMS_OK(p);
    assert_int_equal(strlen(c.skills), 255);
    w = p + sprintf(p, "{\"sub\":\"a\",\"role\":\"agent\",\"exp\":1900000000,\"skills\":[");
    for (int i = 0; i < 8; i++) w += sprintf(w, "%s\"%0*d\"", i ? "," : "", i == 7 ? 32 : 31, i);
    strcpy(w, "]}");
    CLAIMS_BAD(p);

    /* the joined list round-trips through mint */
    kf_claims in, out;
    memset(&in, 0, sizeof(in));
    strcpy(in.sub, "a");
    in.role = KF_ROLE_AGENT;
    in.exp = NOW + 1;
    memset(in.skills, 0, sizeof(in.skills));
    for (int i = 0; i < 8; i++) sprintf(in.skills + strlen(in.skills), "%s%031d", i ? "," : "", i);
    char *tok = kf_token_mint(SECRET, &in);
    assert_non_null(tok);
    assert_int_equal(verify_with(tok, one_secret, 1, &out), KF_TOKEN_OK);
    assert_string_equal(out.skills, in.skills);
    free(tok);
}

static void test_out_zeroed(void **state) {
    (void)state;
    kf_claims c, zero;
    memset(&zero, 0, sizeof(zero));
    memset(&c, 0xAA, sizeof(c));
    assert_int_equal(verify_payload(
        "{\"sub\":\"a\",\"role\":\"agent\",\"exp\":1900000000,\"name\":\"n\",\"level\":101}", &c),
        KF_TOKEN_BAD_CLAIMS);
    assert_memory_equal(&c, &zero, sizeof(c));
    memset(&c, 0xAA, sizeof(c));
    assert_int_equal(verify_with("x.y.z", one_secret, 1, &c), KF_TOKEN_MALFORMED);
    assert_memory_equal(&c, &zero, sizeof(c));
    memset(&c, 0xAA, sizeof(c));
    assert_int_equal(verify_payload("{\"sub\":\"a\",\"role\":\"agent\",\"exp\":1}", &c),
                     KF_TOKEN_EXPIRED);
    assert_memory_equal(&c, &zero, sizeof(c));
    /* out may be NULL */
    char *tok = make_token(HS256, "{\"sub\":\"a\",\"role\":\"agent\",\"exp\":1900000000}", SECRET);
    assert_int_equal(kf_token_verify(tok, strlen(tok), one_secret, 1, NOW, 0, NULL), KF_TOKEN_OK);
    free(tok);
}

static void test_names(void **state) {
    (void)state;
    assert_string_equal(kf_token_result_str(KF_TOKEN_OK), "ok");
    assert_string_equal(kf_token_result_str(KF_TOKEN_MALFORMED), "malformed");
    assert_string_equal(kf_token_result_str(KF_TOKEN_BAD_ALG), "bad_alg");
    assert_string_equal(kf_token_result_str(KF_TOKEN_BAD_SIGNATURE), "bad_signature");
    assert_string_equal(kf_token_result_str(KF_TOKEN_EXPIRED), "expired");
    assert_string_equal(kf_token_result_str(KF_TOKEN_NOT_YET_VALID), "not_yet_valid");
    assert_string_equal(kf_token_result_str(KF_TOKEN_BAD_CLAIMS), "bad_claims");
    assert_string_equal(kf_token_result_str((kf_token_result)42), "unknown");
    assert_string_equal(kf_role_name(KF_ROLE_NONE), "none");
    assert_string_equal(kf_role_name(KF_ROLE_CUSTOMER), "customer");
    assert_string_equal(kf_role_name(KF_ROLE_AGENT), "agent");
    assert_string_equal(kf_role_name(KF_ROLE_SUPERVISOR), "supervisor");
    assert_string_equal(kf_role_name(KF_ROLE_ADMIN), "admin");
    assert_string_equal(kf_role_name((kf_role)17), "none");
    assert_int_equal(kf_role_parse("customer"), KF_ROLE_CUSTOMER);
    assert_int_equal(kf_role_parse("agent"), KF_ROLE_AGENT);
    assert_int_equal(kf_role_parse("supervisor"), KF_ROLE_SUPERVISOR);
    assert_int_equal(kf_role_parse("admin"), KF_ROLE_ADMIN);
    assert_int_equal(kf_role_parse("none"), KF_ROLE_NONE);
    assert_int_equal(kf_role_parse("ADMIN"), KF_ROLE_NONE);
    assert_int_equal(kf_role_parse(""), KF_ROLE_NONE);
    assert_int_equal(kf_role_parse(NULL), KF_ROLE_NONE);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_mint_format),
        cmocka_unit_test(test_mint_minimal),
        cmocka_unit_test(test_mint_invalid),
        cmocka_unit_test(test_expiry),
        cmocka_unit_test(test_nbf),
        cmocka_unit_test(test_secrets),
        cmocka_unit_test(test_bad_alg),
        cmocka_unit_test(test_header_rules),
        cmocka_unit_test(test_tampered),
        cmocka_unit_test(test_bad_base64),
        cmocka_unit_test(test_structure),
        cmocka_unit_test(test_length_bound),
        cmocka_unit_test(test_not_nul_terminated),
        cmocka_unit_test(test_missing_claims),
        cmocka_unit_test(test_claim_types),
        cmocka_unit_test(test_lengths),
        cmocka_unit_test(test_skills),
        cmocka_unit_test(test_out_zeroed),
        cmocka_unit_test(test_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
