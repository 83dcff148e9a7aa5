/* JWT HS256 verification (with secret rotation) and minting for kefu's claim set. */
#include "kefu/token.h"

#include <limits.h>
#include <string.h>

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "kefu/alloc.h"
#include "kefu/utf8.h"

#define TOKEN_MAX 4096                  /* longest token accepted, in bytes */
#define PART_MAX (TOKEN_MAX / 4 * 3 + 3) /* longest decoded part of such a token */
#define SIG_LEN 32                      /* HMAC-SHA256 output */
#define SKILL_MAX 32                    /* bytes of one skill name */
#define LEVEL_MAX 100
#define MAX_CHATS_MAX 1000

static const char b64url_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static int b64url_value(unsigned char c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '-') return 62;
    if (c == '_') return 63;
    return -1;
}

/* Encodes src[0..n) as unpadded base64url into dst, which must hold (n * 4 + 2) / 3 bytes.
 * Returns the number of characters written (no NUL). */
static size_t b64url_encode(char *dst, const unsigned char *src, size_t n) {
    size_t o = 0, i = 0;
    for (; i + 3 <= n; i += 3) {
        unsigned long v = (unsigned long)src[i] << 16 | (unsigned long)src[i + 1] << 8 | src[i + 2];
        dst[o++] = b64url_alphabet[(v >> 18) & 63];
        dst[o++] = b64url_alphabet[(v >> 12) & 63];
        dst[o++] = b64url_alphabet[(v >> 6) & 63];
        dst[o++] = b64url_alphabet[v & 63];
    }
    if (n - i == 1) {
        unsigned long v = (unsigned long)src[i] << 16;
        dst[o++] = b64url_alphabet[(v >> 18) & 63];
        dst[o++] = b64url_alphabet[(v >> 12) & 63];
    } else if (n - i == 2) {
        unsigned long v = (unsigned long)src[i] << 16 | (unsigned long)src[i + 1] << 8;
        dst[o++] = b64url_alphabet[(v >> 18) & 63];
        dst[o++] = b64url_alphabet[(v >> 12) & 63];
        dst[o++] = b64url_alphabet[(v >> 6) & 63];
    }
    return o;
}

/* Decodes unpadded base64url src[0..n) into dst (room for n / 4 * 3 + 2 bytes). Rejects
 * characters outside the alphabet, '=' padding, a length of 4k+1 and non-zero unused bits in
 * the last character, so every byte string has exactly one accepted encoding.
 * Returns the decoded length, or -1. */
static long b64url_decode(unsigned char *dst, const char *src, size_t n) {
    size_t o = 0, i = 0;
    int v[4];

    if (n % 4 == 1) return -1;
    for (; i < n; i += 4) {
        size_t k = n - i < 4 ? n - i : 4;
        for (size_t j = 0; j < k; j++)
            if ((v[j] = b64url_value((unsigned char)src[i + j])) < 0) return -1;
        dst[o++] = (unsigned char)(v[0] << 2 | v[1] >> 4);
        if (k == 2) {
            if (v[1] & 0x0f) return -1;
            break;
        }
        dst[o++] = (unsigned char)((v[1] & 0x0f) << 4 | v[2] >> 2);
        if (k == 3) {
            if (v[2] & 0x03) return -1;
            break;
        }
        dst[o++] = (unsigned char)((v[2] & 0x03) << 6 | v[3]);
    }
    return (long)o;
}

const char *kf_token_result_str(kf_token_result r) {
    switch (r) {
    case KF_TOKEN_OK: return "ok";
    case KF_TOKEN_MALFORMED: return "malformed";
    case KF_TOKEN_BAD_ALG: return "bad_alg";
    case KF_TOKEN_BAD_SIGNATURE: return "bad_signature";
    case KF_TOKEN_EXPIRED: return "expired";
    case KF_TOKEN_NOT_YET_VALID: return "not_yet_valid";
    case KF_TOKEN_BAD_CLAIMS: return "bad_claims";
    }
    return "unknown";
}

static const char *const role_names[] = {"none", "customer", "agent", "supervisor", "admin"};

const char *kf_role_name(kf_role r) {
    if ((unsigned)r >= sizeof(role_names) / sizeof(role_names[0])) return "none";
    return role_names[r];
}

kf_role kf_role_parse(const char *s) {
    if (!s) return KF_ROLE_NONE;
    for (int r = KF_ROLE_CUSTOMER; r <= KF_ROLE_ADMIN; r++)
        if (strcmp(s, role_names[r]) == 0) return (kf_role)r;
    return KF_ROLE_NONE;
}

/* 1 when s[0..n) is UTF-8 without C0 controls, DEL or C1 controls (U+0080..U+009F). */
static int text_ok(const char *s, size_t n) {
    const unsigned char *p = (const unsigned char *)s;
    if (!kf_utf8_valid(s, n)) return 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] < 0x20 || p[i] == 0x7f) return 0;
        if (p[i] == 0xc2 && i + 1 < n && p[i + 1] < 0xa0) return 0;
    }
    return 1;
}

static int skill_ok(const char *s, size_t n) {
    if (n < 1 || n > SKILL_MAX) return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

/* 1 when s is "" or skill names joined by single commas, at most KF_SKILLS_MAX bytes. */
static int skills_joined_ok(const char *s) {
    size_t n = strnlen(s, KF_SKILLS_MAX + 1);
    if (n > KF_SKILLS_MAX) return 0;
    size_t start = 0;
    for (size_t i = 0; n > 0 && i <= n; i++) {
        if (i == n || s[i] == ',') {
            if (!skill_ok(s + start, i - start)) return 0;
            start = i + 1;
        }
    }
    return 1;
}

/* Copies the string member key of obj into dst[cap] when it is a string of min..max bytes that
 * passes text_ok. Returns 0 when copied, 1 when absent, -1 when invalid. */
static int claim_text(json_t *obj, const char *key, char *dst, size_t min, size_t max) {
    json_t *v = json_object_get(obj, key);
    if (!v) return 1;
    if (!json_is_string(v)) return -1;
    size_t n = json_string_length(v);
    const char *s = json_string_value(v);
    if (n < min || n > max || !text_ok(s, n)) return -1;
    memcpy(dst, s, n);
    dst[n] = '\0';
    return 0;
}

/* Reads the integer member key into *out when it lies in lo..hi. Returns 0, 1 when absent, or
 * -1 when it is not an integer or out of range. */
static int claim_int(json_t *obj, const char *key, long long lo, long long hi, long long *out) {
    json_t *v = json_object_get(obj, key);
    if (!v) return 1;
    if (!json_is_integer(v)) return -1;
    long long x = json_integer_value(v);
    if (x < lo || x > hi) return -1;
    *out = x;
    return 0;
}

static int claim_skills(json_t *obj, char *dst) {
    json_t *arr = json_object_get(obj, "skills");
    size_t used = 0, i;
    json_t *v;

    if (!arr) return 1;
    if (!json_is_array(arr)) return -1;
    json_array_foreach(arr, i, v) {
        if (!json_is_string(v)) return -1;
        size_t n = json_string_length(v);
        if (!skill_ok(json_string_value(v), n)) return -1;
        if (used + (i > 0) + n > KF_SKILLS_MAX) return -1;
        if (i > 0) dst[used++] = ',';
        memcpy(dst + used, json_string_value(v), n);
        used += n;
    }
    dst[used] = '\0';
    return 0;
}

/* Fills *c from the payload object; time claims are checked by the caller. */
static kf_token_result read_claims(json_t *p, kf_claims *c) {
    long long x;

    if (claim_text(p, "sub", c->sub, 1, KF_SUB_MAX) != 0) return KF_TOKEN_BAD_CLAIMS;
    json_t *role = json_object_get(p, "role");
    if (!json_is_string(role) || (c->role = kf_role_parse(json_string_value(role))) == KF_ROLE_NONE)
        return KF_TOKEN_BAD_CLAIMS;
    if (claim_text(p, "name", c->name, 0, KF_NAME_MAX) < 0) return KF_TOKEN_BAD_CLAIMS;
    json_t *ch = json_object_get(p, "channel");
    if (ch) {
        if (!json_is_string(ch) || !kf_channel_valid(json_string_value(ch)))
            return KF_TOKEN_BAD_CLAIMS;
        strcpy(c->channel, json_string_value(ch));
    }
    int rc = claim_int(p, "level", 0, LEVEL_MAX, &x);
    if (rc < 0) return KF_TOKEN_BAD_CLAIMS;
    if (rc == 0) c->level = (int)x;
    if (claim_skills(p, c->skills) < 0) return KF_TOKEN_BAD_CLAIMS;
    rc = claim_int(p, "max_chats", 1, MAX_CHATS_MAX, &x);
    if (rc < 0) return KF_TOKEN_BAD_CLAIMS;
    if (rc == 0) c->max_chats = (int)x;
    return KF_TOKEN_OK;
}

static json_t *load_object(const unsigned char *buf, long n) {
    json_t *j = json_loadb((const char *)buf, (size_t)n, JSON_REJECT_DUPLICATES, NULL);
    if (j && !json_is_object(j)) {
        json_decref(j);
        j = NULL;
    }
    return j;
}

static kf_token_result check_header(json_t *h) {
    json_t *alg = json_object_get(h, "alg");
    json_t *typ = json_object_get(h, "typ");
    if (!json_is_string(alg) || strcmp(json_string_value(alg), "HS256") != 0)
        return KF_TOKEN_BAD_ALG;
    if (typ && (!json_is_string(typ) || strcmp(json_string_value(typ), "JWT") != 0))
        return KF_TOKEN_MALFORMED;
    if (json_object_get(h, "crit")) return KF_TOKEN_MALFORMED; /* no extensions understood */
    return KF_TOKEN_OK;
}

/* 1 when HMAC-SHA256 of msg under one of the non-empty secrets equals sig. */
static int signature_ok(const char *msg, size_t n, const unsigned char *sig,
                        const char *const *secrets, size_t nsecrets) {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned mdlen = 0;
    for (size_t i = 0; i < nsecrets; i++) {
        if (!secrets[i] || !secrets[i][0]) continue;
        size_t klen = strlen(secrets[i]);
        if (klen > INT_MAX) continue;
        if (!HMAC(EVP_sha256(), secrets[i], (int)klen, (const unsigned char *)msg, n, md, &mdlen))
            continue;
        if (mdlen == SIG_LEN && CRYPTO_memcmp(md, sig, SIG_LEN) == 0) return 1;
    }
    return 0;
}

/* Order of checks: shape and base64url of all three parts, header (MALFORMED / BAD_ALG),
 * signature, payload JSON, exp/nbf types (BAD_CLAIMS) and times, then the remaining claims.
 * Empty or NULL secrets never match. */
kf_token_result kf_token_verify(const char *token, size_t len, const char *const *secrets,
                                size_t nsecrets, long long now, long long leeway, kf_claims *out) {
    unsigned char hbuf[PART_MAX], pbuf[PART_MAX], sbuf[PART_MAX];
    json_t *h = NULL, *p = NULL;
    kf_claims c;
    kf_token_result r = KF_TOKEN_MALFORMED;
    long long exp = 0, nbf = 0;

    memset(&c, 0, sizeof(c));
    if (!token || len == 0 || len > TOKEN_MAX) goto done;
    const char *d1 = memchr(token, '.', len);
    if (!d1) goto done;
    const char *d2 = memchr(d1 + 1, '.', len - (size_t)(d1 + 1 - token));
    if (!d2 || memchr(d2 + 1, '.', len - (size_t)(d2 + 1 - token))) goto done;
    size_t hlen = (size_t)(d1 - token), plen = (size_t)(d2 - d1 - 1);
    size_t slen = len - (size_t)(d2 + 1 - token);
    if (hlen == 0 || plen == 0) goto done;
    long hn = b64url_decode(hbuf, token, hlen);
    long pn = b64url_decode(pbuf, d1 + 1, plen);
    long sn = b64url_decode(sbuf, d2 + 1, slen);
    if (hn < 0 || pn < 0 || sn < 0) goto done;

    if (!(h = load_object(hbuf, hn))) goto done;
    if ((r = check_header(h)) != KF_TOKEN_OK) goto done;
    r = KF_TOKEN_BAD_SIGNATURE;
    if (sn != SIG_LEN || !secrets ||
        !signature_ok(token, (size_t)(d2 - token), sbuf, secrets, nsecrets))
        goto done;
    r = KF_TOKEN_MALFORMED;
    if (!(p = load_object(pbuf, pn))) goto done;

    r = KF_TOKEN_BAD_CLAIMS;
    if (claim_int(p, "exp", LLONG_MIN, LLONG_MAX, &exp) != 0) goto done;
    int has_nbf = claim_int(p, "nbf", LLONG_MIN, LLONG_MAX, &nbf);
    if (has_nbf < 0) goto done;
    if (leeway < 0) leeway = 0;
    r = KF_TOKEN_EXPIRED;
    if (now >= exp && (unsigned long long)now - (unsigned long long)exp >= (unsigned long long)leeway)
        goto done;
    r = KF_TOKEN_NOT_YET_VALID;
    if (has_nbf == 0 && nbf > now &&
        (unsigned long long)nbf - (unsigned long long)now > (unsigned long long)leeway)
        goto done;
    if ((r = read_claims(p, &c)) != KF_TOKEN_OK) goto done;
    c.exp = exp;

done:
    json_decref(h);
    json_decref(p);
    if (r != KF_TOKEN_OK) memset(&c, 0, sizeof(c));
    if (out) *out = c;
    return r;
}

/* 1 when c holds claims kf_token_verify would accept back (ignoring exp's value). */
static int claims_ok(const kf_claims *c) {
    size_t n = strnlen(c->sub, sizeof(c->sub));
    if (n == 0 || n > KF_SUB_MAX || !text_ok(c->sub, n)) return 0;
    if (c->role < KF_ROLE_CUSTOMER || c->role > KF_ROLE_ADMIN) return 0;
    n = strnlen(c->name, sizeof(c->name));
    if (n > KF_NAME_MAX || !text_ok(c->name, n)) return 0;
    if (strnlen(c->channel, sizeof(c->channel)) > KF_CHANNEL_MAX) return 0;
    if (c->channel[0] && !kf_channel_valid(c->channel)) return 0;
    if (c->level < 0 || c->level > LEVEL_MAX) return 0;
    if (!skills_joined_ok(c->skills)) return 0;
    if (c->max_chats < 0 || c->max_chats > MAX_CHATS_MAX) return 0;
    return 1;
}

static json_t *skills_array(const char *s) {
    json_t *arr = json_array();
    while (*s) {
        const char *comma = strchr(s, ',');
        size_t n = comma ? (size_t)(comma - s) : strlen(s);
        json_array_append_new(arr, json_stringn(s, n));
        s += comma ? n + 1 : n;
    }
    return arr;
}

static char *b64url_json(const json_t *j, size_t *outlen) {
    char *text = json_dumps(j, JSON_COMPACT);
    if (!text) return NULL;
    size_t n = strlen(text);
    char *enc = kf_malloc((n * 4 + 2) / 3 + 1);
    *outlen = b64url_encode(enc, (const unsigned char *)text, n);
    free(text);
    return enc;
}

char *kf_token_mint(const char *secret, const kf_claims *c) {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned mdlen = 0;
    size_t hlen = 0, plen = 0;
    char *henc = NULL, *penc = NULL, *tok = NULL;

    if (!secret || !secret[0] || strlen(secret) > INT_MAX || !c || !claims_ok(c)) return NULL;

    json_t *h = json_pack("{s:s, s:s}", "alg", "HS256", "typ", "JWT");
    json_t *p = json_pack("{s:s, s:s}", "sub", c->sub, "role", kf_role_name(c->role));
    if (!h || !p) goto done;
    if (c->name[0]) json_object_set_new(p, "name", json_string(c->name));
    if (c->channel[0]) json_object_set_new(p, "channel", json_string(c->channel));
    if (c->level) json_object_set_new(p, "level", json_integer(c->level));
    if (c->skills[0]) json_object_set_new(p, "skills", skills_array(c->skills));
    if (c->max_chats) json_object_set_new(p, "max_chats", json_integer(c->max_chats));
    json_object_set_new(p, "exp", json_integer(c->exp));

    if (!(henc = b64url_json(h, &hlen)) || !(penc = b64url_json(p, &plen))) goto done;
    size_t siglen = (SIG_LEN * 4 + 2) / 3;
    tok = kf_malloc(hlen + 1 + plen + 1 + siglen + 1);
    memcpy(tok, henc, hlen);
    tok[hlen] = '.';
    memcpy(tok + hlen + 1, penc, plen);
    if (!HMAC(EVP_sha256(), secret, (int)strlen(secret), (const unsigned char *)tok, hlen + 1 + plen,
              md, &mdlen) || mdlen != SIG_LEN) {
        kf_free(tok);
        tok = NULL;
        goto done;
    }
    tok[hlen + 1 + plen] = '.';
    size_t w = b64url_encode(tok + hlen + 1 + plen + 1, md, SIG_LEN);
    tok[hlen + 1 + plen + 1 + w] = '\0';

done:
    json_decref(h);
    json_decref(p);
    kf_free(henc);
    kf_free(penc);
    return tok;
}
