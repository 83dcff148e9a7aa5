/* Protocol frame codec: one JSON object or one msgpack map <-> jansson values, both directions. */
#include "kefu/codec.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

#include <msgpack.h>

#include "kefu/alloc.h"
#include "kefu/utf8.h"

static const char E_TRUNCATED[] = "truncated msgpack";
static const char E_INVALID_MP[] = "invalid msgpack";
static const char E_NOT_OBJECT[] = "not an object";
static const char E_TRAILING[] = "trailing data";
static const char E_DEPTH[] = "nesting too deep";
static const char E_KEY[] = "map key is not a string";
static const char E_UTF8[] = "invalid UTF-8 in string";
static const char E_NUL[] = "NUL in string";
static const char E_TYPE[] = "unsupported msgpack type";
static const char E_RANGE[] = "integer out of range";
static const char E_FLOAT[] = "non-finite number";
static const char E_DUP[] = "duplicate key";
static const char E_OOM[] = "out of memory";

/* ---- JSON decoding ---- */

/* 1 when no array/object in buf nests deeper than KF_CODEC_MAX_DEPTH (the top level counts as
 * 1). Brackets inside strings are skipped; for valid JSON the result is exact, for invalid JSON
 * the parser reports the error. Runs before jansson so hostile nesting never recurses there. */
static int json_depth_ok(const char *buf, size_t len) {
    int in_str = 0, esc = 0;
    size_t depth = 0;
    for (size_t i = 0; i < len; i++) {
        char c = buf[i];
        if (in_str) {
            if (esc) esc = 0;
            else if (c == '\\') esc = 1;
            else if (c == '"') in_str = 0;
        } else if (c == '"') {
            in_str = 1;
        } else if (c == '[' || c == '{') {
            if (++depth > KF_CODEC_MAX_DEPTH) return 0;
        } else if ((c == ']' || c == '}') && depth > 0) {
            depth--;
        }
    }
    return 1;
}

static json_t *decode_json(const char *buf, size_t len, const char **err) {
    json_error_t e;

    if (!json_depth_ok(buf, len)) {
        *err = E_DEPTH;
        return NULL;
    }
    json_t *j = json_loadb(buf, len, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &e);
    if (!j) {
        switch (json_error_code(&e)) {
        case json_error_end_of_input_expected: *err = E_TRAILING; break;
        case json_error_invalid_utf8: *err = "invalid UTF-8"; break;
        case json_error_duplicate_key: *err = E_DUP; break;
        case json_error_null_character: *err = E_NUL; break;
        case json_error_numeric_overflow: *err = "number out of range"; break;
        case json_error_out_of_memory: *err = E_OOM; break;
        case json_error_stack_overflow: *err = E_DEPTH; break;
        default: *err = "invalid JSON"; break;
        }
        return NULL;
    }
    if (!json_is_object(j)) {
        json_decref(j);
        *err = E_NOT_OBJECT;
        return NULL;
    }
    return j;
}

/* ---- msgpack decoding ---- */

typedef struct {
    const unsigned char *p, *end;
    const char *err;
    int allow_nul; /* kf_codec_recover_req: strings may hold NUL */
} mp_reader;

static json_t *mp_value(mp_reader *r, int depth);

static int mp_need(mp_reader *r, size_t n) {
    if ((size_t)(r->end - r->p) < n) {
        r->err = E_TRUNCATED;
        return -1;
    }
    return 0;
}

static uint64_t mp_be(mp_reader *r, size_t n) {
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) v = v << 8 | r->p[i];
    r->p += n;
    return v;
}

/* Reads an n-byte big-endian length; -1 (with r->err) when the input is too short. */
static int mp_len(mp_reader *r, size_t n, size_t *out) {
    if (mp_need(r, n) < 0) return -1;
    *out = (size_t)mp_be(r, n);
    return 0;
}

/* Consumes the body of a str of n bytes; returns a pointer to it or NULL with r->err set. */
static const char *mp_str_body(mp_reader *r, size_t n) {
    if (mp_need(r, n) < 0) return NULL;
    const char *s = (const char *)r->p;
    if (!kf_utf8_valid(s, n)) {
        r->err = E_UTF8;
        return NULL;
    }
    if (!r->allow_nul && memchr(s, '\0', n)) {
        r->err = E_NUL;
        return NULL;
    }
    r->p += n;
    return s;
}

static json_t *mp_array(mp_reader *r, size_t n, int depth) {
    if (depth > KF_CODEC_MAX_DEPTH) {
        r->err = E_DEPTH;
        return NULL;
    }
    if (mp_need(r, n) < 0) return NULL; /* every element takes at least one byte */
    json_t *arr = json_array();
    if (!arr) {
        r->err = E_OOM;
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *v = mp_value(r, depth + 1);
        if (!v || json_array_append_new(arr, v) < 0) {
            if (v) r->err = E_OOM;
            json_decref(arr);
            return NULL;
        }
    }
    return arr;
}

static json_t *mp_map(mp_reader *r, size_t n, int depth) {
    if (depth > KF_CODEC_MAX_DEPTH) {
        r->err = E_DEPTH;
        return NULL;
    }
    if (n > (size_t)(r->end - r->p) / 2) { /* every pair takes at least two bytes */
        r->err = E_TRUNCATED;
        return NULL;
    }
    json_t *obj = json_object();
    if (!obj) {
        r->err = E_OOM;
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        size_t klen;
        if (mp_need(r, 1) < 0) goto fail;
        unsigned char b = *r->p++;
        if (b >= 0xa0 && b <= 0xbf) klen = b & 0x1f;
        else if (b == 0xd9 || b == 0xda || b == 0xdb) {
            if (mp_len(r, (size_t)1 << (b - 0xd9), &klen) < 0) goto fail;
        } else {
            r->err = E_KEY;
            goto fail;
        }
        const char *key = mp_str_body(r, klen);
        if (!key) goto fail;
        if (json_object_getn(obj, key, klen)) {
            r->err = E_DUP;
            goto fail;
        }
        json_t *v = mp_value(r, depth + 1);
        if (!v) goto fail;
        if (json_object_setn_new_nocheck(obj, key, klen, v) < 0) {
            r->err = E_OOM;
            goto fail;
        }
    }
    return obj;
fail:
    json_decref(obj);
    return NULL;
}

static json_t *mp_string(mp_reader *r, size_t n) {
    const char *s = mp_str_body(r, n);
    if (!s) return NULL;
    json_t *j = json_stringn_nocheck(s, n);
    if (!j) r->err = E_OOM;
    return j;
}

static json_t *mp_real(mp_reader *r, double d) {
    if (!isfinite(d)) {
        r->err = E_FLOAT;
        return NULL;
    }
    json_t *j = json_real(d);
    if (!j) r->err = E_OOM;
    return j;
}

static json_t *mp_int(mp_reader *r, json_int_t v) {
    json_t *j = json_integer(v);
    if (!j) r->err = E_OOM;
    return j;
}

/* Decodes one value at r->p. depth is the nesting level the value would have as a container.
 * Returns a new reference, or NULL with r->err set. */
static json_t *mp_value(mp_reader *r, int depth) {
    size_t n;

    if (mp_need(r, 1) < 0) return NULL;
    unsigned char b = *r->p++;
    if (b <= 0x7f) return mp_int(r, b);
    if (b >= 0xe0) return mp_int(r, (json_int_t)b - 0x100);
    if (b <= 0x8f) return mp_map(r, b & 0x0f, depth);
    if (b <= 0x9f) return mp_array(r, b & 0x0f, depth);
    if (b <= 0xbf) return mp_string(r, b & 0x1f);

    switch (b) {
    case 0xc0: return json_null();
    case 0xc2: return json_false();
    case 0xc3: return json_true();
    case 0xca: {
        if (mp_need(r, 4) < 0) return NULL;
        uint32_t bits = (uint32_t)mp_be(r, 4);
        float f;
        memcpy(&f, &bits, sizeof(f));
        return mp_real(r, (double)f);
    }
    case 0xcb: {
        if (mp_need(r, 8) < 0) return NULL;
        uint64_t bits = mp_be(r, 8);
        double d;
        memcpy(&d, &bits, sizeof(d));
        return mp_real(r, d);
    }
    case 0xcc: case 0xcd: case 0xce: case 0xcf: {
        size_t w = (size_t)1 << (b - 0xcc);
        if (mp_need(r, w) < 0) return NULL;
        uint64_t u = mp_be(r, w);
        if (u > INT64_MAX) {
            r->err = E_RANGE;
            return NULL;
        }
        return mp_int(r, (json_int_t)u);
    }
    case 0xd0: case 0xd1: case 0xd2: case 0xd3: {
        size_t w = (size_t)1 << (b - 0xd0);
        if (mp_need(r, w) < 0) return NULL;
        uint64_t u = mp_be(r, w);
        if (w < 8 && (u >> (w * 8 - 1)) & 1) u |= ~(uint64_t)0 << (w * 8);
        int64_t v;
        memcpy(&v, &u, sizeof(v));
        return mp_int(r, (json_int_t)v);
    }
    case 0xd9: case 0xda: case 0xdb:
        if (mp_len(r, (size_t)1 << (b - 0xd9), &n) < 0) return NULL;
        return mp_string(r, n);
    case 0xdc: case 0xdd:
        if (mp_len(r, b == 0xdc ? 2 : 4, &n) < 0) return NULL;
        return mp_array(r, n, depth);
    case 0xde: case 0xdf:
        if (mp_len(r, b == 0xde ? 2 : 4, &n) < 0) return NULL;
        return mp_map(r, n, depth);
    case 0xc1:
        r->err = E_INVALID_MP;
        return NULL;
    default: /* bin 8/16/32, ext 8/16/32, fixext 1..16 */
        r->err = E_TYPE;
        return NULL;
    }
}

static json_t *decode_msgpack(const char *buf, size_t len, const char **err, int allow_nul) {
    mp_reader r = {(const unsigned char *)buf, (const unsigned char *)buf + len, NULL, allow_nul};

    if (len == 0) {
        *err = E_TRUNCATED;
        return NULL;
    }
    unsigned char b = r.p[0];
    if (!((b >= 0x80 && b <= 0x8f) || b == 0xde || b == 0xdf)) {
        *err = E_NOT_OBJECT;
        return NULL;
    }
    json_t *j = mp_value(&r, 1);
    if (!j) {
        *err = r.err;
        return NULL;
    }
    if (r.p != r.end) {
        json_decref(j);
        *err = E_TRAILING;
        return NULL;
    }
    return j;
}

json_t *kf_codec_decode(kf_format fmt, const char *buf, size_t len, const char **err) {
    const char *dummy;
    if (!err) err = &dummy;
    *err = NULL;
    if (!buf && len) {
        *err = "no input";
        return NULL;
    }
    if (!buf) buf = "";
    if (fmt == KF_FMT_JSON) return decode_json(buf, len, err);
    if (fmt == KF_FMT_MSGPACK) return decode_msgpack(buf, len, err, 0);
    *err = "unknown format";
    return NULL;
}

json_t *kf_codec_recover_req(kf_format fmt, const char *buf, size_t len) {
    json_t *j = NULL;
    const char *err;
    if (!buf) return NULL;
    if (fmt == KF_FMT_JSON) {
        /* A lenient parse gets past a NUL inside a string and repeated keys (the last wins). */
        if (json_depth_ok(buf, len)) j = json_loadb(buf, len, JSON_ALLOW_NUL, NULL);
    } else if (fmt == KF_FMT_MSGPACK) {
        j = decode_msgpack(buf, len, &err, 1);
    }
    if (!j) return NULL;
    json_t *req = json_object_get(j, "req"), *out = NULL;
    if (req && (json_is_integer(req) ||
                (json_is_string(req) && !memchr(json_string_value(req), '\0',
                                                json_string_length(req)))))
        out = json_incref(req);
    json_decref(j);
    return out;
}

/* ---- encoding ---- */

typedef struct {
    char *data;
    size_t len, cap;
} growbuf;

static int growbuf_write(void *data, const char *buf, size_t n) {
    growbuf *g = data;
    if (n > g->cap - g->len) {
        size_t cap = g->cap;
        while (n > cap - g->len) {
            if (cap > SIZE_MAX / 2) return -1;
            cap *= 2;
        }
        g->data = kf_realloc(g->data, cap);
        g->cap = cap;
    }
    memcpy(g->data + g->len, buf, n);
    g->len += n;
    return 0;
}

static int json_dump_write(const char *buf, size_t n, void *data) {
    return growbuf_write(data, buf, n);
}

/* 1 when no array/object in v nests deeper than KF_CODEC_MAX_DEPTH, depth being v's level. */
static int value_depth_ok(const json_t *v, int depth) {
    const char *key;
    json_t *item;
    size_t i;

    if (json_is_object(v)) {
        if (depth > KF_CODEC_MAX_DEPTH) return 0;
        json_object_foreach((json_t *)v, key, item)
            if (!value_depth_ok(item, depth + 1)) return 0;
    } else if (json_is_array(v)) {
        if (depth > KF_CODEC_MAX_DEPTH) return 0;
        json_array_foreach(v, i, item)
            if (!value_depth_ok(item, depth + 1)) return 0;
    }
    return 1;
}

static int pack_str(msgpack_packer *pk, const char *s, size_t n) {
    if (!kf_utf8_valid(s, n)) return -1;
    if (msgpack_pack_str(pk, n) < 0 || msgpack_pack_str_body(pk, s, n) < 0) return -1;
    return 0;
}

/* Packs v (already depth-checked). Returns 0 or -1. */
static int pack_value(msgpack_packer *pk, const json_t *v) {
    const char *key;
    size_t klen, i;
    json_t *item;

    switch (json_typeof(v)) {
    case JSON_OBJECT:
        if (msgpack_pack_map(pk, json_object_size(v)) < 0) return -1;
        json_object_keylen_foreach((json_t *)v, key, klen, item) {
            if (pack_str(pk, key, klen) < 0 || pack_value(pk, item) < 0) return -1;
        }
        return 0;
    case JSON_ARRAY:
        if (msgpack_pack_array(pk, json_array_size(v)) < 0) return -1;
        json_array_foreach(v, i, item)
            if (pack_value(pk, item) < 0) return -1;
        return 0;
    case JSON_STRING:
        return pack_str(pk, json_string_value(v), json_string_length(v));
    case JSON_INTEGER:
        return msgpack_pack_int64(pk, (int64_t)json_integer_value(v));
    case JSON_REAL:
        return msgpack_pack_double(pk, json_real_value(v));
    case JSON_TRUE:
        return msgpack_pack_true(pk);
    case JSON_FALSE:
        return msgpack_pack_false(pk);
    case JSON_NULL:
        return msgpack_pack_nil(pk);
    }
    return -1;
}

/* Writes the encoding after headroom bytes of a growbuf; on success hands the buffer to the
 * caller, on failure frees it and leaves *out NULL. */
int kf_codec_encode(kf_format fmt, const json_t *obj, size_t headroom, char **out,
                    size_t *outlen) {
    growbuf g;
    int rc = -1;

    *out = NULL;
    *outlen = 0;
    if (!obj || headroom > SIZE_MAX / 4 || !value_depth_ok(obj, 1)) return -1;
    g.cap = headroom + 256;
    g.len = headroom;
    g.data = kf_malloc(g.cap);

    if (fmt == KF_FMT_JSON) {
        /* reals with jansson's 17 digits: fewer would not read back as the same number (a
         * rounded rate may print as 0.66669999999999996; it reads back as 0.6667) */
        rc = json_dump_callback(obj, json_dump_write, &g, JSON_COMPACT | JSON_ENCODE_ANY);
    } else if (fmt == KF_FMT_MSGPACK) {
        msgpack_packer pk;
        msgpack_packer_init(&pk, &g, growbuf_write);
        rc = pack_value(&pk, obj);
    }
    if (rc < 0) {
        kf_free(g.data);
        return -1;
    }
    *out = g.data;
    *outlen = g.len - headroom;
    return 0;
}
