/* SHA1 digests of the embedded Redis scripts, computed once. */
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
