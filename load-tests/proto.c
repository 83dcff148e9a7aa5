/* Protocol frame views and request writer (see proto.h). */
#include "proto.h"

#include <stdlib.h>
#include <string.h>

#define MAX_DEPTH 16

/* ---- field dispatch, shared by both formats ---- */

enum { F_NONE, F_TYPE, F_CODE, F_MESSAGE, F_CONV, F_ID, F_CID, F_TEXT, F_STATE, F_TICKET, F_USER,
       F_CUSTOMER, F_AGENT, F_FROM, F_MSGS, F_CONVS, F_REQ, F_TS, F_DUP, F_MORE, F_PREV };

static int field_of(const char *k, size_t n) {
    switch (n) {
    case 2:
        if (!memcmp(k, "id", 2)) return F_ID;
        if (!memcmp(k, "ts", 2)) return F_TS;
        break;
    case 3:
        if (!memcmp(k, "cid", 3)) return F_CID;
        if (!memcmp(k, "req", 3)) return F_REQ;
        if (!memcmp(k, "dup", 3)) return F_DUP;
        break;
    case 4:
        if (!memcmp(k, "type", 4)) return F_TYPE;
        if (!memcmp(k, "code", 4)) return F_CODE;
        if (!memcmp(k, "conv", 4)) return F_CONV;
        if (!memcmp(k, "text", 4)) return F_TEXT;
        if (!memcmp(k, "user", 4)) return F_USER;
        if (!memcmp(k, "from", 4)) return F_FROM;
        if (!memcmp(k, "msgs", 4)) return F_MSGS;
        if (!memcmp(k, "more", 4)) return F_MORE;
        if (!memcmp(k, "prev", 4)) return F_PREV;
        break;
    case 5:
        if (!memcmp(k, "state", 5)) return F_STATE;
        if (!memcmp(k, "agent", 5)) return F_AGENT;
        if (!memcmp(k, "convs", 5)) return F_CONVS;
        break;
    case 6:
        if (!memcmp(k, "ticket", 6)) return F_TICKET;
        break;
    case 7:
        if (!memcmp(k, "message", 7)) return F_MESSAGE;
        break;
    case 8:
        if (!memcmp(k, "customer", 8)) return F_CUSTOMER;
        break;
    }
    return F_NONE;
}

static kl_span *span_of(kl_view *v, int f) {
    switch (f) {
    case F_TYPE: return &v->type;
    case F_CODE: return &v->code;
    case F_MESSAGE: return &v->message;
    case F_CONV: return &v->conv;
    case F_ID: return &v->id;
    case F_CID: return &v->cid;
    case F_TEXT: return &v->text;
    case F_STATE: return &v->state;
    case F_TICKET: return &v->ticket;
    case F_USER: return &v->user;
    case F_CUSTOMER: return &v->customer;
    case F_AGENT: return &v->agent;
    case F_PREV: return &v->prev;
    default: return NULL;
    }
}

static void view_clear(kl_view *v) {
    memset(v, 0, sizeof(*v));
    v->dup = v->more = -1;
}

/* ---- JSON ---- */

static const char *j_ws(const char *p, const char *e) {
    while (p < e && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) p++;
    return p;
}

/* p at '"'. Returns the byte after the closing quote, or NULL. */
static const char *j_str(const char *p, const char *e, kl_span *s) {
    const char *q = ++p;
    uint8_t esc = 0;
    while (q < e && *q != '"') {
        if (*q == '\\') {
            esc = 1;
            if (q + 1 >= e) return NULL;
            q++;
        }
        q++;
    }
    if (q >= e) return NULL;
    if (s) {
        s->p = p;
        s->n = (uint32_t)(q - p);
        s->esc = esc;
    }
    return q + 1;
}

static const char *j_skip(const char *p, const char *e, int depth) {
    p = j_ws(p, e);
    if (p >= e || depth > MAX_DEPTH) return NULL;
    if (*p == '"') return j_str(p, e, NULL);
    if (*p == '{' || *p == '[') {
        char close = *p == '{' ? '}' : ']';
        int obj = *p == '{';
        p = j_ws(p + 1, e);
        if (p < e && *p == close) return p + 1;
        for (;;) {
            if (obj) {
                p = j_ws(p, e);
                if (p >= e || *p != '"' || !(p = j_str(p, e, NULL))) return NULL;
                p = j_ws(p, e);
                if (p >= e || *p != ':') return NULL;
                p++;
            }
            if (!(p = j_skip(p, e, depth + 1))) return NULL;
            p = j_ws(p, e);
            if (p >= e) return NULL;
            if (*p == ',') {
                p++;
                continue;
            }
            if (*p == close) return p + 1;
            return NULL;
        }
    }
    const char *q = p;
    while (q < e && *q != ',' && *q != '}' && *q != ']' && *q != ' ' && *q != '\n' && *q != '\r' &&
           *q != '\t')
        q++;
    return q > p ? q : NULL;
}

static int j_int(const char *p, const char *e, int64_t *out) {
    int neg = 0;
    if (p < e && *p == '-') neg = 1, p++;
    if (p >= e || *p < '0' || *p > '9') return -1;
    int64_t v = 0;
    while (p < e && *p >= '0' && *p <= '9') v = v * 10 + (*p++ - '0');
    if (p < e && (*p == '.' || *p == 'e' || *p == 'E')) return -1;
    *out = neg ? -v : v;
    return 0;
}

static int view_json(const char *p, const char *e, kl_view *v, const char **endp, int nested);

/* Parses the object at p into v. Returns 0 and sets *endp after it. */
static int view_json(const char *p, const char *e, kl_view *v, const char **endp, int nested) {
    p = j_ws(p, e);
    if (p >= e || *p != '{') return -1;
    p = j_ws(p + 1, e);
    if (p < e && *p == '}') {
        *endp = p + 1;
        return 0;
    }
    for (;;) {
        kl_span k;
        p = j_ws(p, e);
        if (p >= e || *p != '"' || !(p = j_str(p, e, &k))) return -1;
        p = j_ws(p, e);
        if (p >= e || *p != ':') return -1;
        p = j_ws(p + 1, e);
        if (p >= e) return -1;
        int f = nested ? (k.n == 2 && !memcmp(k.p, "id", 2) ? F_ID : F_NONE) : field_of(k.p, k.n);
        const char *vs = p, *ve = j_skip(p, e, 1);
        if (!ve) return -1;
        kl_span *s = span_of(v, f);
        if (s && *vs == '"') {
            j_str(vs, e, s);
        } else if (f == F_FROM && *vs == '{') {
            kl_view sub;
            const char *se;
            view_clear(&sub);
            if (view_json(vs, e, &sub, &se, 1) == 0) v->from_id = sub.id;
        } else if ((f == F_MSGS || f == F_CONVS) && *vs == '[') {
            kl_span *a = f == F_MSGS ? &v->msgs : &v->convs;
            a->p = vs;
            a->n = (uint32_t)(ve - vs);
        } else if (f == F_REQ) {
            v->has_req = j_int(vs, ve, &v->req) == 0;
        } else if (f == F_TS) {
            v->has_ts = j_int(vs, ve, &v->ts) == 0;
        } else if (f == F_DUP || f == F_MORE) {
            int8_t b = (ve - vs == 4 && !memcmp(vs, "true", 4)) ? 1 : 0;
            if (f == F_DUP) v->dup = b;
            else v->more = b;
        }
        p = j_ws(ve, e);
        if (p >= e) return -1;
        if (*p == ',') {
            p++;
            continue;
        }
        if (*p == '}') {
            *endp = p + 1;
            return 0;
        }
        return -1;
    }
}

/* ---- msgpack ---- */

typedef const unsigned char *up;

static uint64_t be(up p, int n) {
    uint64_t v = 0;
    for (int i = 0; i < n; i++) v = (v << 8) | p[i];
    return v;
}

/* Reads a str header at p. Returns the payload pointer and length, or NULL when p is no str. */
static up m_str(up p, up e, uint32_t *len) {
    if (p >= e) return NULL;
    unsigned t = *p;
    uint64_t n;
    int h;
    if (t >= 0xa0 && t <= 0xbf) n = t & 0x1f, h = 1;
    else if (t == 0xd9 && e - p >= 2) n = p[1], h = 2;
    else if (t == 0xda && e - p >= 3) n = be(p + 1, 2), h = 3;
    else if (t == 0xdb && e - p >= 5) n = be(p + 1, 4), h = 5;
    else return NULL;
    if ((uint64_t)(e - p - h) < n) return NULL;
    *len = (uint32_t)n;
    return p + h;
}

/* Container header: returns elements (maps: pairs) and sets *kind 1 map / 2 array, else 0. */
static up m_container(up p, up e, uint64_t *count, int *kind) {
    if (p >= e) return NULL;
    unsigned t = *p;
    *kind = 0;
    if (t >= 0x80 && t <= 0x8f) return *kind = 1, *count = t & 0x0f, p + 1;
    if (t >= 0x90 && t <= 0x9f) return *kind = 2, *count = t & 0x0f, p + 1;
    if (t == 0xde && e - p >= 3) return *kind = 1, *count = be(p + 1, 2), p + 3;
    if (t == 0xdf && e - p >= 5) return *kind = 1, *count = be(p + 1, 4), p + 5;
    if (t == 0xdc && e - p >= 3) return *kind = 2, *count = be(p + 1, 2), p + 3;
    if (t == 0xdd && e - p >= 5) return *kind = 2, *count = be(p + 1, 4), p + 5;
    return p;
}

static up m_skip(up p, up e, int depth) {
    if (p >= e || depth > MAX_DEPTH) return NULL;
    unsigned t = *p;
    uint64_t n;
    int kind;
    up q = m_container(p, e, &n, &kind);
    if (kind) {
        uint64_t items = kind == 1 ? n * 2 : n;
        if (items > (uint64_t)(e - q)) return NULL;
        for (uint64_t i = 0; i < items; i++)
            if (!(q = m_skip(q, e, depth + 1))) return NULL;
        return q;
    }
    uint32_t sl;
    if ((q = m_str(p, e, &sl))) return q + sl;
    if (t <= 0x7f || t >= 0xe0 || t == 0xc0 || t == 0xc2 || t == 0xc3) return p + 1;
    int h = 0;
    uint64_t len = 0;
    switch (t) {
    case 0xcc: case 0xd0: len = 1; h = 1; break;
    case 0xcd: case 0xd1: len = 2; h = 1; break;
    case 0xca: case 0xce: case 0xd2: len = 4; h = 1; break;
    case 0xcb: case 0xcf: case 0xd3: len = 8; h = 1; break;
    case 0xc4: if (e - p < 2) return NULL; len = p[1]; h = 2; break;
    case 0xc5: if (e - p < 3) return NULL; len = be(p + 1, 2); h = 3; break;
    case 0xc6: if (e - p < 5) return NULL; len = be(p + 1, 4); h = 5; break;
    case 0xd4: len = 2; h = 1; break;
    case 0xd5: len = 3; h = 1; break;
    case 0xd6: len = 5; h = 1; break;
    case 0xd7: len = 9; h = 1; break;
    case 0xd8: len = 17; h = 1; break;
    case 0xc7: if (e - p < 2) return NULL; len = (uint64_t)p[1] + 1; h = 2; break;
    case 0xc8: if (e - p < 3) return NULL; len = be(p + 1, 2) + 1; h = 3; break;
    case 0xc9: if (e - p < 5) return NULL; len = be(p + 1, 4) + 1; h = 5; break;
    default: return NULL;
    }
    if ((uint64_t)(e - p - h) < len) return NULL;
    return p + h + len;
}

static int m_int(up p, up e, int64_t *out) {
    if (p >= e) return -1;
    unsigned t = *p;
    if (t <= 0x7f) return *out = t, 0;
    if (t >= 0xe0) return *out = (int8_t)t, 0;
    int n;
    switch (t) {
    case 0xcc: case 0xd0: n = 1; break;
    case 0xcd: case 0xd1: n = 2; break;
    case 0xce: case 0xd2: n = 4; break;
    case 0xcf: case 0xd3: n = 8; break;
    default: return -1;
    }
    if (e - p < 1 + n) return -1;
    uint64_t u = be(p + 1, n);
    if (t >= 0xd0) {
        /* sign-extend */
        if (n < 8 && (u >> (8 * n - 1))) u |= ~0ull << (8 * n);
    }
    *out = (int64_t)u;
    return 0;
}

static int view_msgpack(up p, up e, kl_view *v, up *endp, int nested) {
    uint64_t n;
    int kind;
    p = m_container(p, e, &n, &kind);
    if (!p || kind != 1 || n > (uint64_t)(e - p)) return -1;
    for (uint64_t i = 0; i < n; i++) {
        uint32_t kl;
        up k = m_str(p, e, &kl);
        if (!k) return -1;
        up vs = k + kl, ve = m_skip(vs, e, 1);
        if (!ve) return -1;
        int f = nested ? (kl == 2 && !memcmp(k, "id", 2) ? F_ID : F_NONE) : field_of((const char *)k, kl);
        kl_span *s = span_of(v, f);
        uint32_t sl;
        up sp;
        if (s && (sp = m_str(vs, e, &sl))) {
            s->p = (const char *)sp;
            s->n = sl;
            s->esc = 0;
        } else if (f == F_FROM) {
            kl_view sub;
            up se;
            view_clear(&sub);
            if (view_msgpack(vs, e, &sub, &se, 1) == 0) v->from_id = sub.id;
        } else if (f == F_MSGS || f == F_CONVS) {
            kl_span *a = f == F_MSGS ? &v->msgs : &v->convs;
            a->p = (const char *)vs;
            a->n = (uint32_t)(ve - vs);
        } else if (f == F_REQ) {
            v->has_req = m_int(vs, e, &v->req) == 0;
        } else if (f == F_TS) {
            v->has_ts = m_int(vs, e, &v->ts) == 0;
        } else if (f == F_DUP || f == F_MORE) {
            int8_t b = *vs == 0xc3;
            if (f == F_DUP) v->dup = b;
            else v->more = b;
        }
        p = ve;
    }
    *endp = p;
    return 0;
}

/* ---- public ---- */

int kl_view_parse(int msgpack, const char *buf, size_t len, kl_view *v) {
    view_clear(v);
    if (msgpack) {
        up end;
        if (view_msgpack((up)buf, (up)buf + len, v, &end, 0) < 0) return -1;
        return end == (up)buf + len ? 0 : -1;
    }
    const char *end;
    if (view_json(buf, buf + len, v, &end, 0) < 0) return -1;
    return j_ws(end, buf + len) == buf + len ? 0 : -1;
}

int kl_iter_init(kl_iter *it, int msgpack, kl_span arr) {
    it->msgpack = msgpack;
    it->end = arr.p + arr.n;
    it->left = 0;
    if (!arr.p) {
        it->p = it->end = NULL;
        return -1;
    }
    if (msgpack) {
        uint64_t n;
        int kind;
        up q = m_container((up)arr.p, (up)it->end, &n, &kind);
        if (!q || kind != 2) return -1;
        it->p = (const char *)q;
        it->left = (uint32_t)n;
        return 0;
    }
    const char *q = j_ws(arr.p, it->end);
    if (q >= it->end || *q != '[') return -1;
    it->p = j_ws(q + 1, it->end);
    if (it->p < it->end && *it->p == ']') it->p = it->end;
    return 0;
}

int kl_iter_next(kl_iter *it, kl_view *v) {
    if (!it->p || it->p >= it->end) return 0;
    view_clear(v);
    if (it->msgpack) {
        if (it->left == 0) return 0;
        up e;
        if (view_msgpack((up)it->p, (up)it->end, v, &e, 0) < 0) return -1;
        it->p = (const char *)e;
        it->left--;
        return 1;
    }
    const char *e;
    if (view_json(it->p, it->end, v, &e, 0) < 0) return -1;
    e = j_ws(e, it->end);
    if (e < it->end && *e == ',') e = j_ws(e + 1, it->end);
    else if (e < it->end && *e == ']') e = it->end;
    else return -1;
    it->p = e;
    return 1;
}

int kl_sid_parse(kl_span sp, kl_sid *out) {
    char b[48];
    if (kl_span_copy(sp, b, sizeof(b)) < 0) return -1;
    char *dash = strchr(b, '-'), *e;
    if (!dash) return -1;
    out->ms = strtoull(b, &e, 10);
    if (e != dash) return -1;
    out->seq = strtoull(dash + 1, &e, 10);
    return *e ? -1 : 0;
}

int kl_sid_cmp(kl_sid a, kl_sid b) {
    if (a.ms != b.ms) return a.ms < b.ms ? -1 : 1;
    if (a.seq != b.seq) return a.seq < b.seq ? -1 : 1;
    return 0;
}

int kl_span_eq(kl_span s, const char *str) {
    size_t n = strlen(str);
    return s.p && !s.esc && s.n == n && memcmp(s.p, str, n) == 0;
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static int put_utf8(char *out, size_t cap, size_t *o, uint32_t cp) {
    char b[4];
    int n;
    if (cp < 0x80) b[0] = (char)cp, n = 1;
    else if (cp < 0x800) b[0] = (char)(0xc0 | (cp >> 6)), b[1] = (char)(0x80 | (cp & 0x3f)), n = 2;
    else if (cp < 0x10000)
        b[0] = (char)(0xe0 | (cp >> 12)), b[1] = (char)(0x80 | ((cp >> 6) & 0x3f)),
        b[2] = (char)(0x80 | (cp & 0x3f)), n = 3;
    else
        b[0] = (char)(0xf0 | (cp >> 18)), b[1] = (char)(0x80 | ((cp >> 12) & 0x3f)),
        b[2] = (char)(0x80 | ((cp >> 6) & 0x3f)), b[3] = (char)(0x80 | (cp & 0x3f)), n = 4;
    if (*o + (size_t)n >= cap) return -1;
    memcpy(out + *o, b, (size_t)n);
    *o += (size_t)n;
    return 0;
}

static int hex4(const char *p, uint32_t *out) {
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        int h = hexval(p[i]);
        if (h < 0) return -1;
        v = (v << 4) | (uint32_t)h;
    }
    *out = v;
    return 0;
}

int kl_span_copy(kl_span s, char *out, size_t cap) {
    if (!s.p || cap == 0) return -1;
    if (!s.esc) {
        if (s.n >= cap) return -1;
        memcpy(out, s.p, s.n);
        out[s.n] = '\0';
        return (int)s.n;
    }
    size_t o = 0;
    for (size_t i = 0; i < s.n; i++) {
        char c = s.p[i];
        if (c != '\\') {
            if (o + 1 >= cap) return -1;
            out[o++] = c;
            continue;
        }
        if (++i >= s.n) return -1;
        char d = s.p[i];
        const char *simple = "\"\\/bfnrt", *real = "\"\\/\b\f\n\r\t";
        const char *k = strchr(simple, d);
        if (k && d) {
            if (o + 1 >= cap) return -1;
            out[o++] = real[k - simple];
            continue;
        }
        uint32_t cp;
        if (d != 'u' || i + 4 >= s.n || hex4(s.p + i + 1, &cp) < 0) return -1;
        i += 4;
        if (cp >= 0xd800 && cp < 0xdc00 && i + 6 < s.n && s.p[i + 1] == '\\' && s.p[i + 2] == 'u') {
            uint32_t lo;
            if (hex4(s.p + i + 3, &lo) == 0 && lo >= 0xdc00 && lo < 0xe000) {
                cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                i += 6;
            }
        }
        if (put_utf8(out, cap, &o, cp) < 0) return -1;
    }
    out[o] = '\0';
    return (int)o;
}

/* ---- writer ---- */

static void put(kl_enc *e, const void *p, size_t n) {
    if (e->overflow || e->len + n > e->cap) {
        e->overflow = 1;
        return;
    }
    memcpy(e->buf + e->len, p, n);
    e->len += n;
}

static void put_be(kl_enc *e, uint8_t tag, uint64_t v, int n) {
    uint8_t b[9];
    b[0] = tag;
    for (int i = 0; i < n; i++) b[1 + i] = (uint8_t)(v >> (8 * (n - 1 - i)));
    put(e, b, (size_t)n + 1);
}

static void mp_str(kl_enc *e, const char *s, size_t n) {
    if (n < 32) {
        uint8_t t = (uint8_t)(0xa0 | n);
        put(e, &t, 1);
    } else if (n < 256) {
        put_be(e, 0xd9, n, 1);
    } else if (n < 65536) {
        put_be(e, 0xda, n, 2);
    } else {
        put_be(e, 0xdb, n, 4);
    }
    put(e, s, n);
}

static void js_str(kl_enc *e, const char *s, size_t n) {
    static const char hex[] = "0123456789abcdef";
    put(e, "\"", 1);
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\') continue;
        put(e, s + run, i - run);
        run = i + 1;
        if (c == '"' || c == '\\') {
            char b[2] = {'\\', (char)c};
            put(e, b, 2);
        } else {
            char b[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
            put(e, b, 6);
        }
    }
    put(e, s + run, n - run);
    put(e, "\"", 1);
}

void kl_enc_begin(kl_enc *e, int msgpack, char *buf, size_t cap, int nfields) {
    e->buf = buf;
    e->cap = cap;
    e->len = 0;
    e->msgpack = msgpack;
    e->nfields = 0;
    e->overflow = 0;
    if (msgpack) {
        if (nfields < 16) {
            uint8_t t = (uint8_t)(0x80 | nfields);
            put(e, &t, 1);
        } else {
            put_be(e, 0xde, (uint64_t)nfields, 2);
        }
    } else {
        put(e, "{", 1);
    }
}

static void key(kl_enc *e, const char *k) {
    size_t n = strlen(k);
    if (e->msgpack) {
        mp_str(e, k, n);
    } else {
        if (e->nfields) put(e, ",", 1);
        js_str(e, k, n);
        put(e, ":", 1);
    }
    e->nfields++;
}

void kl_enc_str(kl_enc *e, const char *k, const char *v, size_t vlen) {
    key(e, k);
    if (e->msgpack) mp_str(e, v, vlen);
    else js_str(e, v, vlen);
}

void kl_enc_int(kl_enc *e, const char *k, int64_t v) {
    key(e, k);
    if (e->msgpack) {
        if (v >= 0 && v < 128) {
            uint8_t t = (uint8_t)v;
            put(e, &t, 1);
        } else if (v >= 0) {
            uint64_t u = (uint64_t)v;
            if (u < 256) put_be(e, 0xcc, u, 1);
            else if (u < 65536) put_be(e, 0xcd, u, 2);
            else if (u < 4294967296ull) put_be(e, 0xce, u, 4);
            else put_be(e, 0xcf, u, 8);
        } else if (v >= -32) {
            uint8_t t = (uint8_t)(int8_t)v;
            put(e, &t, 1);
        } else {
            put_be(e, 0xd3, (uint64_t)v, 8);
        }
    } else {
        char b[24];
        int neg = v < 0;
        uint64_t u = neg ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
        int i = (int)sizeof(b);
        do {
            b[--i] = (char)('0' + u % 10);
            u /= 10;
        } while (u);
        if (neg) b[--i] = '-';
        put(e, b + i, sizeof(b) - (size_t)i);
    }
}

size_t kl_enc_end(kl_enc *e) {
    if (!e->msgpack) put(e, "}", 1);
    return e->overflow ? 0 : e->len;
}
