/* libFuzzer target: msgpack frame decoding, plus canonical re-encoding and JSON round trips. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "kefu/codec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *err = NULL;
    char *a, *b, *t;
    size_t na, nb, nt;

    json_t *j = kf_codec_decode(KF_FMT_MSGPACK, (const char *)data, size, &err);
    if (!j) {
        if (!err) abort();
        /* the req of a refused frame, for its error answer: an integer or a NUL-free string */
        json_t *req = kf_codec_recover_req(KF_FMT_MSGPACK, (const char *)data, size);
        if (req && !json_is_integer(req) &&
            !(json_is_string(req) && !memchr(json_string_value(req), 0, json_string_length(req))))
            abort();
        if (req) json_decref(req);
        return 0;
    }
    if (!json_is_object(j)) abort();

    /* encode -> decode -> encode gives identical bytes and an equal value */
    if (kf_codec_encode(KF_FMT_MSGPACK, j, 0, &a, &na) != 0) abort();
    json_t *j2 = kf_codec_decode(KF_FMT_MSGPACK, a, na, &err);
    if (!j2 || !json_equal(j, j2)) abort();
    if (kf_codec_encode(KF_FMT_MSGPACK, j2, 7, &b, &nb) != 0) abort();
    if (na != nb || memcmp(a, b + 7, na) != 0) abort();

    /* every decoded msgpack value is representable as JSON and comes back equal */
    if (kf_codec_encode(KF_FMT_JSON, j, 3, &t, &nt) != 0) abort();
    json_t *j3 = kf_codec_decode(KF_FMT_JSON, t + 3, nt, &err);
    if (!j3 || !json_equal(j, j3)) abort();

    free(a);
    free(b);
    free(t);
    json_decref(j);
    json_decref(j2);
    json_decref(j3);
    return 0;
}
