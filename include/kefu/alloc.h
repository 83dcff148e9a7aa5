/* Allocation wrappers: abort on failure of small, server-controlled allocations. */
#ifndef KEFU_ALLOC_H
#define KEFU_ALLOC_H

#include <stddef.h>

/** malloc that aborts the process when memory is exhausted. Never returns NULL. */
void *kf_malloc(size_t n);
/** calloc that aborts on exhaustion. */
void *kf_calloc(size_t nmemb, size_t n);
/** realloc that aborts on exhaustion. */
void *kf_realloc(void *p, size_t n);
/** strdup / strndup that abort on exhaustion. */
char *kf_strdup(const char *s);
char *kf_strndup(const char *s, size_t n);
void kf_free(void *p);

#endif
