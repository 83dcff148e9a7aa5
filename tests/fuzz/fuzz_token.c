/* libFuzzer target: JWT verification on raw input, and claim parsing behind a valid signature. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "kefu/token.h"
#include "kefu/utf8.h"

#define NOW 1800000000LL
#define LEEWAY 30

static const char *const secrets[] = {"fuzz-key-1", "fuzz-key-2"};

static size_t b64url(char *dst, const unsigned char *src, size_t n) {
    static const char al[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned)src[i] << 16;
        if (i + 1 < n) v |= (unsigned)src[i + 1] << 8;
        if (i + 2 < n) v |= src[i + 2];
        dst[o++] = al[v >> 18 & 63];
        dst[o++] = al[v >> 12 & 63];
        if (i + 1 < n) dst[o++] = al[v >> 6 & 63];
        if (i + 2 < n) dst[o++] = al[v & 63];
    }
    return o;
}

/* Properties every accepted claim set must have; then it must survive mint + verify. */
static void check_claims(const kf_claims *c) {
    size_t n = strlen(c->sub);
    if (n == 0 || n > KF_SUB_MAX || !kf_utf8_valid(c->sub, n)) abort();
    if (c->role < KF_ROLE_CUSTOMER || c->role > KF_ROLE_ADMIN) abort();
    if (c->level < 0 || c->level > 100 || c->max_chats < 0 || c->max_chats > 1000) abort();
    if (c->channel[0] && !kf_channel_valid(c->channel)) abort();

    kf_claims back;
    char *tok = kf_token_mint(secrets[1], c);
    if (!tok) abort();
    if (kf_token_verify(tok, strlen(tok), secrets, 2, NOW, LEEWAY, &back) != KF_TOKEN_OK) abort();
    if (memcmp(c, &back, sizeof(back)) != 0) abort();
    free(tok);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    kf_claims c;
    kf_token_result r;

    if (size > 0 && data[0] == 'P') {
        /* "P" + payload JSON: signed with a valid header, so claim checks are reached */
        static const char hdr[] = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"; /* alg HS256, typ JWT */
        size_t plen = size - 1;
        char *tok = malloc(sizeof(hdr) + plen * 4 / 3 + 64);
        size_t n = sizeof(hdr) - 1;
        memcpy(tok, hdr, n);
        tok[n++] = '.';
        n += b64url(tok + n, data + 1, plen);
        unsigned char md[32];
        unsigned mdlen = 0;
        HMAC(EVP_sha256(), secrets[1], (int)strlen(secrets[1]), (unsigned char *)tok, n, md,
             &mdlen);
        tok[n++] = '.';
        n += b64url(tok + n, md, mdlen);
        r = kf_token_verify(tok, n, secrets, 2, NOW, LEEWAY, &c);
        free(tok);
    } else {
        r = kf_token_verify((const char *)data, size, secrets, 2, NOW, LEEWAY, &c);
    }
    if (r == KF_TOKEN_OK) {
        check_claims(&c);
    } else {
        static const kf_claims zero;
        if (memcmp(&c, &zero, sizeof(c)) != 0) abort();
    }
    if (!kf_token_result_str(r)) abort();
    return 0;
}
