/* Protocol v1 frames for the load generator, without building a JSON tree: a one-pass view of
 * the fields kefu-load reads (JSON or msgpack), and a writer for the requests it sends. */
#ifndef KEFU_LOAD_PROTO_H
#define KEFU_LOAD_PROTO_H

#include <stddef.h>
#include <stdint.h>

/** A string inside the frame buffer (not NUL-terminated). esc: a JSON string with backslash
 * escapes; use kl_span_copy to get its value. For arrays: the raw bytes of the array. */
typedef struct kl_span {
    const char *p;
    uint32_t n;
    uint8_t esc;
} kl_span;

/** The fields of one frame (top level; "from" is looked into for its "id"). Absent strings have
 * p == NULL; absent booleans are -1. */
typedef struct kl_view {
    kl_span type, code, message, conv, id, cid, text, state, ticket, user, customer, agent;
    kl_span from_id, prev;
    kl_span msgs, convs;   /* raw arrays (history, conv.list / queue.list) */
    int64_t req, ts;
    uint8_t has_req, has_ts;
    int8_t dup, more;
} kl_view;

/** Parses one frame. Returns 0, or -1 when it is not a well-formed object/map. */
int kl_view_parse(int msgpack, const char *buf, size_t len, kl_view *v);

/** Iterates over the objects of an array span (msgs, convs). */
typedef struct kl_iter {
    const char *p, *end;
    int msgpack;
    uint32_t left;  /* msgpack: elements left */
} kl_iter;

int kl_iter_init(kl_iter *it, int msgpack, kl_span arr);
/** 1 with *v filled, 0 at the end, -1 on malformed input. */
int kl_iter_next(kl_iter *it, kl_view *v);

/** A message (stream) id, "<ms>-<seq>". */
typedef struct kl_sid {
    uint64_t ms, seq;
} kl_sid;

/** Parses a stream id; -1 when the span is not one. */
int kl_sid_parse(kl_span sp, kl_sid *out);
/** <0, 0, >0 as a is older than, the same as, newer than b. */
int kl_sid_cmp(kl_sid a, kl_sid b);

/** 1 when the span holds exactly the string s. */
int kl_span_eq(kl_span s, const char *str);
/** Copies the value of s (unescaped) into out[cap] with a NUL; returns its length, or -1 when it
 * does not fit. */
int kl_span_copy(kl_span s, char *out, size_t cap);

/** Writes one request object/map into a caller's buffer. Strings are written as given (valid
 * UTF-8 expected); JSON escapes what it must. */
typedef struct kl_enc {
    char *buf;
    size_t len, cap;
    int msgpack;
    int nfields;
    int overflow;
} kl_enc;

void kl_enc_begin(kl_enc *e, int msgpack, char *buf, size_t cap, int nfields);
void kl_enc_str(kl_enc *e, const char *key, const char *val, size_t vlen);
void kl_enc_int(kl_enc *e, const char *key, int64_t val);
/** Returns the encoded length, or 0 when the buffer was too small. */
size_t kl_enc_end(kl_enc *e);

#endif
