/* Pushes to users from a process that holds no client connections (the worker): presence
 * lookup of each user, then one XADD per gateway node inbox. The gateway has its own routing
 * (gateway/router.c), which also delivers to its local connections directly. */
#ifndef KEFU_ROUTE_H
#define KEFU_ROUTE_H

#include <stddef.h>
#include <stdint.h>

#include "kefu/redis.h"

typedef struct kf_route_stats {
    uint64_t pushes;         /* kf_route_push calls */
    uint64_t entries;        /* inbox entries written */
    uint64_t lookup_failures; /* presence lookups that failed (those users miss the push) */
    uint64_t no_recipient;   /* pushes none of whose users was connected anywhere */
} kf_route_stats;

/** Sends the push `payload` (JSON text, len bytes) to every connection of the given users on
 * whatever node they are connected to: ZRANGEBYSCORE of each user's presence (members not yet
 * expired at now_ms), then XADD p=payload u=<users '\n'-joined> x="" MAXLEN ~ inbox_maxlen to
 * each node's inbox. Best effort and asynchronous; nothing is retried. Copies what it needs. */
void kf_route_push(kf_redis *r, const char *payload, size_t len, const char *const *users,
                   size_t nusers, long long inbox_maxlen, long long now_ms);

const kf_route_stats *kf_route_get_stats(void);

/** The n strings each followed by '\n', in one malloc'd NUL-terminated string (the inbox `u`
 * field). */
char *kf_join_lines(const char *const *items, size_t n);

/** From now on pushes whose lookups are still outstanding are dropped instead of written: call
 * before freeing the Redis client, whose failing callbacks must not issue new commands. */
void kf_route_shutdown(void);

#endif
