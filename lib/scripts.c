/* The embedded Redis scripts: SHA1 digests computed once, and the reader of their answers. */
#include <openssl/sha.h>
#include <stdio.h>
#include <string.h>

#include "kefu/redis.h"

#define MAX_SCRIPTS 64

static struct {
    char name[48];
    char sha[41];
} shas[MAX_SCRIPTS];
static int nshas;

const char *kf_script_sha(const char *name) {
    for (int i = 0; i < nshas; i++)
        if (strcmp(shas[i].name, name) == 0) return shas[i].sha;
    size_t len;
    const char *src = kf_script_source(name, &len);
    if (!src || nshas == MAX_SCRIPTS || strlen(name) >= sizeof(shas[0].name)) return NULL;
    unsigned char md[SHA_DIGEST_LENGTH];
    SHA1((const unsigned char *)src, len, md);
    for (int i = 0; i < SHA_DIGEST_LENGTH; i++) sprintf(shas[nshas].sha + 2 * i, "%02x", md[i]);
    snprintf(shas[nshas].name, sizeof(shas[nshas].name), "%s", name);
    return shas[nshas++].sha;
}

char kf_script_parse(const redisReply *r, const char *err, size_t nstr, kf_script_ans *a) {
    memset(a, 0, sizeof(*a));
    if (err) {
        a->kind = KF_SCRIPT_UNAVAILABLE;
        a->code = "unavailable";
        a->detail = err;
        return 0;
    }
    a->kind = KF_SCRIPT_BROKEN;
    a->code = "internal";
    if (r->type == REDIS_REPLY_ERROR) {
        a->detail = r->str;
        return 0;
    }
    if (r->type != REDIS_REPLY_ARRAY || r->elements < 1 ||
        r->element[0]->type != REDIS_REPLY_STRING || r->element[0]->len != 1)
        return 0;
    if (r->element[0]->str[0] == 'E') {
        /* the code is copied into answers and counted: a missing one is the script's bug */
        if (r->elements < 2 || r->element[1]->type != REDIS_REPLY_STRING || r->element[1]->len == 0)
            return 0;
        a->kind = KF_SCRIPT_REFUSED;
        a->code = r->element[1]->str;
        if (r->elements >= 3 && r->element[2]->type == REDIS_REPLY_STRING)
            a->message = r->element[2]->str;
        return 0;
    }
    if (r->elements < nstr) return 0;
    for (size_t i = 1; i < nstr; i++)
        if (r->element[i]->type != REDIS_REPLY_STRING) return 0;
    a->kind = KF_SCRIPT_OK;
    a->code = NULL;
    a->tag = r->element[0]->str[0];
    return a->tag;
}
