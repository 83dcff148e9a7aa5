/* libFuzzer target: JSON frame decoding, plus JSON/msgpack re-encoding round trips. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "kefu/codec.h"

static json_t *reencode(kf_format f, const json_t *j, size_t headroom) {
    char *out;
    size_t n;
    const char *err;
    if (kf_codec_encode(f, j, headroom, &out, &n) != 0) abort();
    json_t *back = kf_codec_decode(f, out + headroom, n, &err);
    free(out);
    if (!back) abort();
    return back;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *err = NULL;
    json_t *j = kf_codec_decode(KF_FMT_JSON, (const char *)data, size, &err);
    if (!j) {
        if (!err) abort();
        /* the req of a refused frame, for its error answer: an integer or a NUL-free string */
        json_t *req = kf_codec_recover_req(KF_FMT_JSON, (const char *)data, size);
        if (req && !json_is_integer(req) &&
            !(json_is_string(req) && !memchr(json_string_value(req), 0, json_string_length(req))))
            abort();
        if (req) json_decref(req);
        return 0;
    }
    if (!json_is_object(j) || err) abort();
    json_t *viamp = reencode(KF_FMT_MSGPACK, j, size & 15);
    json_t *viajson = reencode(KF_FMT_JSON, j, 0);
    if (!json_equal(j, viamp) || !json_equal(j, viajson)) abort();
    json_decref(viamp);
    json_decref(viajson);
    json_decref(j);
    return 0;
}
