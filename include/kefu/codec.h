/* Protocol v1 frame codec: one JSON object (text) or one msgpack map (binary) <-> jansson. */
#ifndef KEFU_CODEC_H
#define KEFU_CODEC_H

#include <stddef.h>

#include <jansson.h>

typedef enum {
    KF_FMT_JSON = 0,    /* subprotocol kefu.v1.json: UTF-8 text frames */
    KF_FMT_MSGPACK = 1, /* subprotocol kefu.v1.msgpack: binary frames */
} kf_format;

#define KF_CODEC_MAX_DEPTH 16 /* deepest nesting of maps/arrays accepted */

/** Decodes exactly one top-level object (JSON object or msgpack map with string keys) from
 * buf[0..len). Returns a new reference the caller owns, or NULL with *err set to a static
 * human-readable reason ("invalid JSON", "not an object", "trailing data",
 * "nesting too deep", "map key is not a string", "invalid UTF-8 in string",
 * "unsupported msgpack type", "integer out of range", ...).
 * msgpack mapping: nil->null, bool->true/false, int->integer (must fit int64),
 * float32/64->real, str->string (valid UTF-8), array->array, map->object; bin and ext are
 * rejected. In both formats duplicate keys ("duplicate key"), NUL characters in strings
 * ("NUL in string") and non-finite reals are rejected, so every decoded value re-encodes
 * losslessly in either format. */
json_t *kf_codec_decode(kf_format fmt, const char *buf, size_t len, const char **err);
/** For the error answer to a frame kf_codec_decode refused: its "req" (a new reference) when the
 * frame is an object whose only faults are NULs inside strings or (JSON) repeated keys, and whose
 * req is a string without NUL or an integer; NULL otherwise. */
json_t *kf_codec_recover_req(kf_format fmt, const char *buf, size_t len);

/** Encodes obj (any JSON value; protocol uses objects) as compact JSON text without a NUL, or as
 * msgpack (integers in the smallest encoding, reals as float64, strings as str).
 * The result is written after `headroom` spare bytes: *out is a malloc'd buffer of
 * headroom + *outlen bytes whose payload starts at (*out + headroom). Returns 0, or -1 when obj
 * cannot be encoded (e.g. nesting too deep). */
int kf_codec_encode(kf_format fmt, const json_t *obj, size_t headroom, char **out,
                    size_t *outlen);

#endif
