/* The hot request read in one pass: a JSON msg.send frame is scanned in place, without building
 * a jansson tree, and its answer and push are written as JSON text directly (gw_json_*).
 *
 * Only the common, fully valid shape takes this path: a flat object whose keys are exactly
 * type ("msg.send"), conv, text, cid and optionally req (string or integer), each once, with
 * valid values. Anything else (another type, an unknown or repeated key, a nested value, a
 * number that is not a plain integer, a NUL, a field out of bounds) returns 0 and the frame
 * goes through the general decoder, which gives the precise error. So both paths accept and
 * refuse exactly the same frames. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gateway.h"
#include "auth.h"
#include "handlers.h"
#include "kefu/alloc.h"

typedef struct fspan {
    const char *p; /* between the quotes */
    size_t n;
    int esc;       /* holds backslash escapes */
} fspan;

static const char *ws(const char *p, const char *e) {
    while (p < e && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) p++;
    return p;
}

static int hex4(const char *p, unsigned *out) {
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char ch = p[i];
        v <<= 4;
        if (ch >= '0' && ch <= '9') v |= (unsigned)(ch - '0');
        else if (ch >= 'a' && ch <= 'f') v |= (unsigned)(ch - 'a' + 10);
        else if (ch >= 'A' && ch <= 'F') v |= (unsigned)(ch - 'A' + 10);
        else return -1;
    }
    *out = v;
    return 0;
}

/* Scans a string at p (on its opening quote); returns the position after the closing quote or
 * NULL. Refuses raw control characters, bad escapes, \u0000 and lone surrogates. */
static const char *scan_str(const char *p, const char *e, fspan *s) {
    if (p >= e || *p != '"') return NULL;
    s->p = ++p;
    s->esc = 0;
    while (p < e) {
        unsigned char ch = (unsigned char)*p;
        if (ch == '"') {
            s->n = (size_t)(p - s->p);
            return p + 1;
        }
        if (ch < 0x20) return NULL;
        if (ch != '\\') {
            p++;
            continue;
        }
        s->esc = 1;
        if (p + 1 >= e) return NULL;
        char x = p[1];
        if (x == 'u') {
            unsigned u;
            if (p + 6 > e || hex4(p + 2, &u) < 0 || u == 0) return NULL;
            p += 6;
            if (u >= 0xDC00 && u <= 0xDFFF) return NULL;
            if (u >= 0xD800 && u <= 0xDBFF) {
                unsigned lo;
                if (p + 6 > e || p[0] != '\\' || p[1] != 'u' || hex4(p + 2, &lo) < 0 ||
                    lo < 0xDC00 || lo > 0xDFFF)
                    return NULL;
                p += 6;
            }
        } else if (strchr("\"\\/bfnrt", x) && x) {
            p += 2;
        } else {
            return NULL;
        }
    }
    return NULL;
}

/* Decodes a scanned string into out (at least s->n + 1 bytes: escapes only shrink). */
static size_t unescape(const fspan *s, char *out) {
    if (!s->esc) {
        memcpy(out, s->p, s->n);
        out[s->n] = '\0';
        return s->n;
    }
    size_t o = 0;
    for (const char *p = s->p, *e = s->p + s->n; p < e;) {
        if (*p != '\\') {
            out[o++] = *p++;
            continue;
        }
        char x = p[1];
        if (x != 'u') {
            out[o++] = x == 'b' ? '\b' : x == 'f' ? '\f' : x == 'n' ? '\n' : x == 'r' ? '\r'
                     : x == 't' ? '\t' : x;
            p += 2;
            continue;
        }
        unsigned u, lo;
        hex4(p + 2, &u);
        p += 6;
        if (u >= 0xD800 && u <= 0xDBFF) {
            hex4(p + 2, &lo);
            p += 6;
            u = 0x10000 + ((u - 0xD800) << 10) + (lo - 0xDC00);
        }
        if (u < 0x80) {
            out[o++] = (char)u;
        } else if (u < 0x800) {
            out[o++] = (char)(0xC0 | (u >> 6));
            out[o++] = (char)(0x80 | (u & 0x3F));
        } else if (u < 0x10000) {
            out[o++] = (char)(0xE0 | (u >> 12));
            out[o++] = (char)(0x80 | ((u >> 6) & 0x3F));
            out[o++] = (char)(0x80 | (u & 0x3F));
        } else {
            out[o++] = (char)(0xF0 | (u >> 18));
            out[o++] = (char)(0x80 | ((u >> 12) & 0x3F));
            out[o++] = (char)(0x80 | ((u >> 6) & 0x3F));
            out[o++] = (char)(0x80 | (u & 0x3F));
        }
    }
    out[o] = '\0';
    return o;
}

static int id_ok(const char *s, size_t n) {
    if (n == 0) return 0;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '-' || ch == '_'))
            return 0;
    }
    return 1;
}

int gw_fast_msg_send(gw_conn *c, const char *buf, size_t len) {
    enum { K_TYPE, K_REQ, K_CONV, K_TEXT, K_CID, K__N };
    fspan f[K__N];
    int seen = 0, req_int = 0;
    long long req_v = 0;
    const char *p = ws(buf, buf + len), *e = buf + len;
    if (p >= e || *p != '{') return 0;
    p = ws(p + 1, e);
    for (;;) {
        fspan k;
        if (!(p = scan_str(p, e, &k)) || k.esc) return 0;
        int ki = k.n == 4 && !memcmp(k.p, "type", 4)   ? K_TYPE
                 : k.n == 3 && !memcmp(k.p, "req", 3)  ? K_REQ
                 : k.n == 4 && !memcmp(k.p, "conv", 4) ? K_CONV
                 : k.n == 4 && !memcmp(k.p, "text", 4) ? K_TEXT
                 : k.n == 3 && !memcmp(k.p, "cid", 3)  ? K_CID
                                                       : -1;
        if (ki < 0 || (seen & (1 << ki))) return 0;
        seen |= 1 << ki;
        p = ws(p, e);
        if (p >= e || *p != ':') return 0;
        p = ws(p + 1, e);
        if (p < e && *p == '"') {
            if (!(p = scan_str(p, e, &f[ki]))) return 0;
        } else if (ki == K_REQ && p < e && (*p == '-' || (*p >= '0' && *p <= '9'))) {
            /* a plain integer that surely fits: at most 18 digits, no leading zero */
            const char *q = p + (*p == '-');
            const char *d = q;
            while (q < e && *q >= '0' && *q <= '9') q++;
            if (q == d || q - d > 18 || (*d == '0' && q - d > 1)) return 0;
            if (q < e && (*q == '.' || *q == 'e' || *q == 'E')) return 0;
            req_v = strtoll(p, NULL, 10);
            req_int = 1;
            p = q;
        } else {
            return 0;
        }
        p = ws(p, e);
        if (p < e && *p == ',') {
            p = ws(p + 1, e);
            continue;
        }
        if (p < e && *p == '}') break;
        return 0;
    }
    if (ws(p + 1, e) != e) return 0;
    int need = (1 << K_TYPE) | (1 << K_CONV) | (1 << K_TEXT) | (1 << K_CID);
    if ((seen & need) != need) return 0;
    if (f[K_TYPE].esc || f[K_TYPE].n != 8 || memcmp(f[K_TYPE].p, "msg.send", 8) != 0) return 0;
    /* bounds as the general path checks them (escaped strings: their decoded length) */
    if (f[K_CONV].esc || !id_ok(f[K_CONV].p, f[K_CONV].n) || f[K_CONV].n > CONV_ID_MAX) return 0;
    if (f[K_CID].n == 0 || f[K_TEXT].n == 0) return 0;
    if ((seen & (1 << K_REQ)) && !req_int && f[K_REQ].n > 64 * 6) return 0;

    char cid[CID_MAX * 6 + 1];
    if (f[K_CID].n > CID_MAX * 6) return 0;
    size_t cid_len = unescape(&f[K_CID], cid);
    if (cid_len == 0 || cid_len > CID_MAX) return 0;
    char *text = kf_malloc(f[K_TEXT].n + 1);
    size_t text_len = unescape(&f[K_TEXT], text);
    if (text_len == 0 || text_len > (size_t)gw->opt.max_text_bytes) {
        kf_free(text);
        return 0;
    }
    json_t *req = NULL;
    if (req_int) {
        req = json_integer(req_v);
    } else if (seen & (1 << K_REQ)) {
        char r[64 * 6 + 1];
        size_t rl = unescape(&f[K_REQ], r);
        if (rl > 64) {
            kf_free(text);
            return 0;
        }
        req = json_stringn(r, rl);
    }
    char conv[CONV_ID_MAX + 1];
    memcpy(conv, f[K_CONV].p, f[K_CONV].n);
    conv[f[K_CONV].n] = '\0';
    /* what gw_handle_frame checks before any request */
    if (gw_token_expired(c)) {
        gw_reply_error(c, req, "unauthorized", "token expired: send hello with a fresh token");
        kf_free(text);
        if (req) json_decref(req);
        return 1;
    }
    req_ctx *x = gw_ctx_new(c, req);
    memcpy(x->conv, conv, sizeof(conv));
    gw_msg_send(x, text, text_len, cid);
    if (req) json_decref(req);
    return 1;
}

/* ---- writing JSON text ---- */

void gw_json_init(gw_json *j, size_t headroom, size_t cap) {
    j->buf = kf_malloc(headroom + cap);
    j->len = headroom;
    j->cap = headroom + cap;
}

static void reserve(gw_json *j, size_t n) {
    if (j->len + n <= j->cap) return;
    while (j->len + n > j->cap) j->cap *= 2;
    j->buf = kf_realloc(j->buf, j->cap);
}

void gw_json_raw(gw_json *j, const char *s, size_t n) {
    reserve(j, n);
    memcpy(j->buf + j->len, s, n);
    j->len += n;
}

void gw_json_str(gw_json *j, const char *s, size_t n) {
    static const char hex[] = "0123456789abcdef";
    reserve(j, n * 6 + 2);
    char *o = j->buf + j->len;
    *o++ = '"';
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '"' || ch == '\\') {
            *o++ = '\\';
            *o++ = (char)ch;
        } else if (ch >= 0x20) {
            *o++ = (char)ch;
        } else if (ch == '\n') {
            *o++ = '\\', *o++ = 'n';
        } else if (ch == '\r') {
            *o++ = '\\', *o++ = 'r';
        } else if (ch == '\t') {
            *o++ = '\\', *o++ = 't';
        } else {
            *o++ = '\\', *o++ = 'u', *o++ = '0', *o++ = '0';
            *o++ = hex[ch >> 4], *o++ = hex[ch & 15];
        }
    }
    *o++ = '"';
    j->len = (size_t)(o - j->buf);
}

void gw_json_int(gw_json *j, long long v) {
    char t[24];
    int n = 0;
    unsigned long long u = v < 0 ? 0ull - (unsigned long long)v : (unsigned long long)v;
    do t[n++] = (char)('0' + u % 10); while ((u /= 10));
    if (v < 0) t[n++] = '-';
    reserve(j, (size_t)n);
    while (n) j->buf[j->len++] = t[--n];
}

/* "req" as given: an integer or a string. */
void gw_json_req(gw_json *j, const json_t *req) {
    if (json_is_integer(req))
        gw_json_int(j, (long long)json_integer_value(req));
    else
        gw_json_str(j, json_string_value(req), json_string_length(req));
}
