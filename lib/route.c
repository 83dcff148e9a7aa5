/* Routing a push through the node inboxes, for programs without client connections. */
#include "kefu/route.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kefu/alloc.h"
#include "kefu/keys.h"
#include "kefu/log.h"

static kf_route_stats stats;
static int shutting_down;

void kf_route_shutdown(void) { shutting_down = 1; }

struct push {
    kf_redis *r;
    char *payload;
    size_t len;
    char *users;       /* '\n'-joined */
    char **nodes;      /* distinct nodes found so far */
    size_t nnodes;
    int pending;       /* presence lookups outstanding */
    long long maxlen;
};

const kf_route_stats *kf_route_get_stats(void) { return &stats; }

static void add_node(struct push *p, const char *node, size_t len) {
    for (size_t i = 0; i < p->nnodes; i++)
        if (strlen(p->nodes[i]) == len && memcmp(p->nodes[i], node, len) == 0) return;
    p->nodes = kf_realloc(p->nodes, sizeof(char *) * (p->nnodes + 1));
    p->nodes[p->nnodes++] = kf_strndup(node, len);
}

static void send_entries(struct push *p) {
    char maxlen[24];
    snprintf(maxlen, sizeof(maxlen), "%lld", p->maxlen);
    if (p->nnodes == 0) stats.no_recipient++;
    for (size_t i = 0; i < p->nnodes; i++) {
        if (shutting_down) {
            kf_free(p->nodes[i]);
            continue;
        }
        char key[KF_KEY_MAX];
        kf_key_node_inbox(key, p->nodes[i]);
        const char *argv[] = {"XADD", key, "MAXLEN", "~", maxlen, "*", "p", p->payload, "u",
                              p->users, "x", ""};
        size_t lens[12];
        for (int k = 0; k < 12; k++) lens[k] = strlen(argv[k]);
        lens[7] = p->len;
        kf_redis_argv(p->r, kf_redis_slot(p->r, key), NULL, NULL, 12, argv, lens);
        stats.entries++;
        kf_free(p->nodes[i]);
    }
    kf_free(p->nodes);
    kf_free(p->payload);
    kf_free(p->users);
    kf_free(p);
}

static void on_presence(const redisReply *reply, const char *err, void *priv) {
    struct push *p = priv;
    if (!err && reply->type == REDIS_REPLY_ARRAY) {
        for (size_t i = 0; i < reply->elements; i++)
            if (reply->element[i]->type == REDIS_REPLY_STRING)
                add_node(p, reply->element[i]->str, reply->element[i]->len);
    } else {
        stats.lookup_failures++;
    }
    if (--p->pending == 0) send_entries(p);
}

char *kf_join_lines(const char *const *items, size_t n) {
    size_t len = 0;
    for (size_t i = 0; i < n; i++) len += strlen(items[i]) + 1;
    char *out = kf_malloc(len + 1), *w = out;
    for (size_t i = 0; i < n; i++) {
        size_t l = strlen(items[i]);
        memcpy(w, items[i], l);
        w += l;
        *w++ = '\n';
    }
    *w = '\0';
    return out;
}

void kf_route_push(kf_redis *r, const char *payload, size_t len, const char *const *users,
                   size_t nusers, long long inbox_maxlen, long long now_ms) {
    stats.pushes++;
    if (nusers == 0 || shutting_down) return;
    struct push *p = kf_calloc(1, sizeof(*p));
    p->r = r;
    p->payload = kf_malloc(len + 1);
    memcpy(p->payload, payload, len);
    p->payload[len] = '\0';
    p->len = len;
    p->maxlen = inbox_maxlen;
    p->users = kf_join_lines(users, nusers);
    p->pending = (int)nusers;
    char now[24];
    snprintf(now, sizeof(now), "%lld", now_ms);
    for (size_t i = 0; i < nusers; i++) {
        char key[KF_KEY_MAX];
        kf_key_user_nodes(key, users[i]);
        kf_redis_cmd_key(r, key, on_presence, p, "ZRANGEBYSCORE %s %s +inf", key, now);
    }
}
