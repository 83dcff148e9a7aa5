/* Allocation wrappers that abort when the process runs out of memory. */
#include "kefu/alloc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void oom(size_t n) {
    fprintf(stderr, "kefu: out of memory allocating %zu bytes\n", n);
    fflush(stderr);
    abort();
}

void *kf_malloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) oom(n);
    return p;
}

void *kf_calloc(size_t nmemb, size_t n) {
    void *p = calloc(nmemb ? nmemb : 1, n ? n : 1);
    if (!p) oom(nmemb * n);
    return p;
}

void *kf_realloc(void *p, size_t n) {
    void *q = realloc(p, n ? n : 1);
    if (!q) oom(n);
    return q;
}

char *kf_strdup(const char *s) {
    return kf_strndup(s, strlen(s));
}

char *kf_strndup(const char *s, size_t n) {
    size_t len = strnlen(s, n);
    char *d = kf_malloc(len + 1);
    memcpy(d, s, len);
    d[len] = '\0';
    return d;
}

void kf_free(void *p) {
    free(p);
}
