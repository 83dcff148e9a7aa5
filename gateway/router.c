/* Message routing between nodes: the local user index, presence in Redis, one XADD per
 * destination node inbox, and the blocking inbox reader that delivers to local connections. */
#include <event2/event.h>
#include <hiredis/async.h>
#include <libwebsockets.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gateway.h"
#include "handlers.h"
#include "kefu/alloc.h"
#include "kefu/hash.h"
#include "kefu/keys.h"
#include "kefu/slot.h"
#include "kefu/log.h"
#include "kefu/redis.h"
#include "kefu/route.h"

/* ---- local user index: gw->users, a uthash table by user id ---- */

gw_user *gw_user_find(const char *id) {
    gw_user *u;
    HASH_FIND(hh, gw->users, id, strlen(id), u);
    return u;
}

static gw_user *hb_next; /* the next user the sliced presence refresh visits (NULL: the first) */

static gw_user *user_get(const char *id) {
    gw_user *u = gw_user_find(id);
    if (u) return u;
    size_t len = strlen(id);
    /* the id inline: one allocation per user, and no padding after the flags */
    u = kf_calloc(1, offsetof(gw_user, id) + len + 1);
    memcpy(u->id, id, len + 1);
    HASH_ADD_KEYPTR(hh, gw->users, u->id, len, u);
    return u;
}

static void user_remove(gw_user *u) {
    if (hb_next == u) hb_next = u->hh.next;
    HASH_DEL(gw->users, u);
    kf_free(u);
}

/* ---- presence ---- */

struct attach_req {
    gw_conn *c;
    void (*done)(gw_conn *c, const char *err);
    char user[];                     /* the user, to find after c has gone */
};

/* A presence resync waiting for other nodes' copies to expire (see on_presence_stored). */
struct resync_timer {
    struct event *ev;
    struct resync_timer *prev, *next; /* so shutdown can free them */
    char user[];
};
static struct resync_timer *resync_timers;

static void pc_drop(const char *user);
static void batch_add(const char *node, const char *p, size_t plen, const char *u, const char *x,
                      const char *conv);
static void inbox_deliver(const char *p, size_t plen, const char *u, size_t ulen, const char *x,
                          size_t xlen);

static void resync_timer_free(struct resync_timer *t) {
    if (t->prev)
        t->prev->next = t->next;
    else
        resync_timers = t->next;
    if (t->next) t->next->prev = t->prev;
    event_free(t->ev);
    kf_free(t);
}

/* Every local connection of the user re-checks its conversations. */
static void on_presence_resync(evutil_socket_t fd, short what, void *arg) {
    (void)fd, (void)what;
    struct resync_timer *t = arg;
    gw_user *u = gw_user_find(t->user);
    if (u) {
        static const char p[] = "{\"type\":\"resync\",\"reason\":\"presence\"}";
        u->resync_due = 0;
        GW_M->resync_sent += u->nconns;
        inbox_deliver(p, sizeof(p) - 1, u->id, strlen(u->id), "", 0);
    }
    resync_timer_free(t);
}

static void on_presence_stored(const redisReply *reply, const char *err, void *priv) {
    struct attach_req *a = priv;
    if (!err && reply->type == REDIS_REPLY_ERROR) {
        kf_error("presence_attach: %s", reply->str);
        err = "redis error";
    }
    if (!err && a->c->user) a->c->user->presence_ok = 1;
    a->done(a->c, err);
    gw_conn_unref(a->c);
    /* {ms, node...}: for ms, a node may route the user's pushes from a node list looked up
     * before this registration (presence_attach.lua). The listed nodes drop their copy when
     * they read our note (usually within milliseconds), but a push may be routed from it
     * before that; so once every such copy has expired, each local connection of the user
     * gets a resync, and its history call covers whatever was routed without this node. The
     * welcome does not wait. Handled per user: another connection of the user may have been
     * welcomed meanwhile (its own answer is {0}), or this one may have gone. */
    gw_user *u = err ? NULL : gw_user_find(a->user);
    long long ms = 0;
    if (u && reply->type == REDIS_REPLY_ARRAY && reply->elements >= 1 &&
        reply->element[0]->type == REDIS_REPLY_INTEGER) {
        ms = reply->element[0]->integer;
        for (size_t i = 1; i < reply->elements; i++)
            if (reply->element[i]->type == REDIS_REPLY_STRING)
                batch_add(reply->element[i]->str, NULL, 0, u->id, "", NULL);
    }
    if (ms > 10000) ms = 10000; /* the largest presence_cache_ms; guards against clock jumps */
    if (ms > 0) {
        uint32_t due = gw_clock_ms() + (uint32_t)ms;
        if (!u->resync_due || (int32_t)(due - u->resync_due) > 0) {
            /* a timer already due later covers this one */
            u->resync_due = due;
            GW_M->welcome_resync++;
            size_t ul = strlen(u->id);
            struct resync_timer *t = kf_malloc(sizeof(*t) + ul + 1);
            memcpy(t->user, u->id, ul + 1);
            t->ev = evtimer_new(gw->base, on_presence_resync, t);
            t->prev = NULL;
            t->next = resync_timers;
            if (resync_timers) resync_timers->prev = t;
            resync_timers = t;
            struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
            evtimer_add(t->ev, &tv);
        }
    }
    kf_free(a);
}

static void presence_store(const char *user, kf_redis_cb *cb, void *priv) {
    char key[KF_KEY_MAX], cached[KF_KEY_MAX], now_s[24], exp_s[24], ttl_s[24];
    kf_key_user_nodes(key, user);
    kf_key_user_cached(cached, user);
    long long ttl = gw->opt.presence_ttl_ms, now = (long long)gw_now_ms();
    snprintf(now_s, sizeof(now_s), "%lld", now);
    snprintf(exp_s, sizeof(exp_s), "%lld", now + ttl);
    snprintf(ttl_s, sizeof(ttl_s), "%lld", ttl * 2);
    const char *argv[] = {key, cached, now_s, gw->node, exp_s, ttl_s};
    kf_redis_script(gw->redis, kf_redis_slot(gw->redis, key), "presence_attach", cb, priv, 2, 6,
                    argv, NULL);
}

void gw_router_attach(gw_conn *c, void (*done)(gw_conn *c, const char *err)) {
    gw_user *u = user_get(c->ident.sub);
    c->user = u;
    c->user_next = u->conns;
    u->conns = c;
    u->nconns++;
    if (!u->presence_ok) pc_drop(u->id); /* a copy from before lacks this node */
    size_t ul = strlen(u->id);
    struct attach_req *a = kf_calloc(1, sizeof(*a) + ul + 1);
    memcpy(a->user, u->id, ul + 1);
    a->c = c;
    a->done = done;
    gw_conn_ref(c);
    presence_store(u->id, on_presence_stored, a);
}

void gw_router_detach(gw_conn *c) {
    gw_user *u = c->user;
    gw_conn **pp = &u->conns;
    while (*pp && *pp != c) pp = &(*pp)->user_next;
    if (*pp) *pp = c->user_next;
    c->user = NULL;
    if (--u->nconns > 0) return;
    char key[KF_KEY_MAX];
    kf_key_user_nodes(key, u->id);
    kf_redis_cmd_key(gw->redis, key, NULL, NULL, "ZREM %s %s", key, gw->node);
    /* the worker checks later whether the customer is back on any node (worker/callback.c) */
    if (c->ident.role == KF_ROLE_CUSTOMER) {
        GW_M->customer_left++;
        gw_lifecycle("customer_left", "", c, NULL, NULL, NULL, NULL);
    }
    user_remove(u);
}

/* Refreshes presence in slices: every second a share of the user index, so that each user is
 * refreshed once per third of presence_ttl_ms without a burst of commands (and of output
 * buffer memory) every few seconds. The slice walks the table in insertion order from hb_next;
 * a user added meanwhile joins at the end and is reached within the period. */
static void presence_refresh(const char *user) {
    char key[KF_KEY_MAX];
    kf_key_user_nodes(key, user);
    long long ttl = gw->opt.presence_ttl_ms, now = (long long)gw_now_ms();
    unsigned slot = kf_redis_slot(gw->redis, key);
    kf_redis_cmd(gw->redis, slot, NULL, NULL, "ZADD %s %lld %s", key, now + ttl, gw->node);
    kf_redis_cmd(gw->redis, slot, NULL, NULL, "PEXPIRE %s %lld", key, ttl * 2);
}

static void on_heartbeat(evutil_socket_t fd, short what, void *arg) {
    (void)fd, (void)arg;
    if (what == 0) {
        /* fd -1, what 0: a Redis server came back: everything at once */
        for (gw_user *u = gw->users; u; u = u->hh.next) presence_store(u->id, NULL, NULL);
    } else {
        long long period_s = gw->opt.presence_ttl_ms / 3000;
        if (period_s < 1) period_s = 1;
        size_t n = HASH_COUNT(gw->users);
        size_t slice = (n + (size_t)period_s - 1) / (size_t)period_s;
        for (size_t i = 0; i < slice; i++) {
            if (!hb_next) hb_next = gw->users;
            presence_refresh(hb_next->id);
            hb_next = hb_next->hh.next;
        }
    }
    kf_redis_cmd_key(gw->redis, KF_KEY_NODES, NULL, NULL, "ZADD %s %lld %s", KF_KEY_NODES,
                     (long long)gw_now_ms(), gw->node);
}

/* ---- presence cache: user -> nodes, for presence_cache_ms (see on_presence_stored) ---- */

typedef struct pcache {
    UT_hash_handle hh;    /* in pc_table, keyed by user */
    char *nodes;          /* '\n'-joined node ids */
    uint32_t fetched;     /* gw_clock_ms() when the lookup was sent */
    char user[];
} pcache;

static pcache *pc_table;

static pcache *pc_find(const char *user) {
    pcache *e;
    HASH_FIND(hh, pc_table, user, strlen(user), e);
    return e;
}

static void pc_free_entry(pcache *e) {
    HASH_DEL(pc_table, e);
    kf_free(e->nodes);
    kf_free(e);
}

/* Drops every entry older than the cache lifetime (once a second, bounds the memory). */
static void pc_expire(void) {
    uint32_t now = gw_clock_ms();
    pcache *e, *tmp;
    HASH_ITER(hh, pc_table, e, tmp) {
        if ((uint32_t)(now - e->fetched) >= (uint64_t)gw->opt.presence_cache_ms) pc_free_entry(e);
    }
}

/* A node (this one, or another through our inbox) registered this user: the copy lacks it. */
static void pc_drop(const char *user) {
    pcache *e = pc_find(user);
    if (!e) return;
    pc_free_entry(e);
    GW_M->presence_drops++;
}

static void pc_store(const char *user, const redisReply *reply, uint32_t fetched) {
    if (gw->opt.presence_cache_ms <= 0) return;
    size_t len = 0;
    for (size_t i = 0; i < reply->elements; i++) len += reply->element[i]->len + 1;
    char *nodes = kf_malloc(len + 1), *p = nodes;
    for (size_t i = 0; i < reply->elements; i++) {
        memcpy(p, reply->element[i]->str, reply->element[i]->len);
        p += reply->element[i]->len;
        *p++ = '\n';
    }
    *p = '\0';
    pcache *e = pc_find(user);
    if (e) {
        if ((int32_t)(fetched - e->fetched) < 0) { /* an older lookup answered late */
            kf_free(nodes);
            return;
        }
        kf_free(e->nodes);
    } else {
        size_t ul = strlen(user);
        e = kf_calloc(1, offsetof(pcache, user) + ul + 1);
        memcpy(e->user, user, ul + 1);
        HASH_ADD_KEYPTR(hh, pc_table, e->user, ul, e);
    }
    e->nodes = nodes;
    e->fetched = fetched;
}

/* ---- routing a push: presence lookups, then one XADD per node ----
 *
 * Nothing is dropped quietly. A presence lookup that fails is retried (the route keeps its place
 * in line, so a conversation's pushes still leave in order) for route_retry_ms; a push that
 * finally cannot be routed, an inbox XADD that fails, and a route refused because the line is
 * full each leave a "resync notice" for the conversation's users. Notices go out as
 * {"type":"resync","conv":...} pushes once Redis is healthy again, telling each client which
 * conversation to fetch with `history after=<last id seen>` (docs/protocol.md). */

struct route {
    struct route *next;      /* routes go out in the order they were asked for */
    struct route *retry_next;
    int ready;               /* every presence lookup answered */
    int pending;
    char *payload;           /* JSON text */
    size_t payload_len;
    char *users;             /* '\n'-separated */
    char *retry;             /* '\n'-separated users whose lookup failed, or NULL */
    char conv[CONV_ID_MAX + 1]; /* "" when the push concerns no conversation */
    uint8_t signal;          /* a lost copy must be signalled (everything but typing) */
    uint32_t asked_ms;       /* gw_clock_ms() when asked for */
    char skip[160];          /* "<node>/<conn id>" or "" */
    char **nodes;
    size_t nnodes;
};

static struct route *routes_head, *routes_tail;
static size_t nroutes;
static struct route *retry_list;
static int router_stopping;
static struct event *retry_ev, *local_resync_ev;

size_t gw_route_backlog(void) { return nroutes; }

/* Losses are logged once per cause, then summed up at most every 10 s. */
enum { LOST_PRESENCE, LOST_INBOX, LOST_OVERFLOW, LOST__COUNT };
static const char *const lost_what[LOST__COUNT] = {
    "presence lookups kept failing for route_retry_ms",
    "the XADD into a node inbox failed",
    "the route queue was full (route_queue_max)"};
static uint64_t lost_logged[LOST__COUNT];
static uint32_t lost_logged_ms[LOST__COUNT];

static void lost_count(int cause, size_t pushes) {
    GW_M->push_lost[cause] += pushes;
    uint32_t now = gw_clock_ms();
    if (lost_logged[cause] == 0 || (uint32_t)(now - lost_logged_ms[cause]) >= 10000) {
        kf_warn("%llu push(es) not delivered so far because %s; their users get a resync notice "
                "for each conversation", (unsigned long long)GW_M->push_lost[cause],
                lost_what[cause]);
        lost_logged[cause] = GW_M->push_lost[cause];
        lost_logged_ms[cause] = now;
    }
}

/* ---- resync notices: (conversation, users) to tell, kept until Redis can carry them ---- */

#define NOTICE_MAX 8192
struct notice {
    UT_hash_handle hh;    /* in notice_table, keyed by conv '\0' users: one per pair */
    struct notice *next;  /* in the list notices_take() hands over */
    char *users;          /* '\n'-separated, inside conv[] after the conversation */
    char conv[];
};
static struct notice *notice_table; /* in insertion order: notices go out as they came */
static int resync_everyone;  /* too many notices: every client of every node re-checks all */

static void notice_add(const char *conv, const char *users, size_t ulen) {
    if (ulen == 0) return;
    if (resync_everyone) return;
    /* Built before the lookup, which needs the key in one piece; notices are rare (lost
     * pushes only), so a duplicate's allocation does not matter. */
    size_t cl = strlen(conv), kl = cl + 1 + ulen;
    struct notice *n = kf_malloc(sizeof(*n) + kl + 1), *old;
    memcpy(n->conv, conv, cl + 1);
    n->users = n->conv + cl + 1;
    memcpy(n->users, users, ulen);
    n->users[ulen] = '\0';
    HASH_FIND(hh, notice_table, n->conv, kl, old);
    if (old) {
        kf_free(n);
        return;
    }
    if (HASH_COUNT(notice_table) >= NOTICE_MAX) {
        kf_warn("more than %d conversations to resync: every client will re-check all of its "
                "conversations", NOTICE_MAX);
        resync_everyone = 1;
        kf_free(n);
        return;
    }
    n->next = NULL;
    HASH_ADD_KEYPTR(hh, notice_table, n->conv, kl, n);
    GW_M->resync_pending = (int64_t)HASH_COUNT(notice_table);
}

/* Hands over every pending notice, oldest first (the caller frees them), and empties the set:
 * notices added while the caller routes them (a full route queue) wait for the next round. */
static struct notice *notices_take(void) {
    struct notice *list = NULL, **tail = &list, *n, *tmp;
    HASH_ITER(hh, notice_table, n, tmp) {
        HASH_DEL(notice_table, n);
        *tail = n;
        tail = &n->next;
    }
    GW_M->resync_pending = 0;
    return list;
}

static void notice_free(struct notice *n) { kf_free(n); }

static void notices_clear(void) {
    for (struct notice *n = notices_take(), *next; n; n = next) {
        next = n->next;
        notice_free(n);
    }
}

static void route_lost(const struct route *rt, const char *users, size_t ulen, int cause) {
    lost_count(cause, 1);
    if (rt->signal) notice_add(rt->conv, users, ulen);
}

static void route_add_node(struct route *rt, const char *node, size_t len) {
    for (size_t i = 0; i < rt->nnodes; i++)
        if (strlen(rt->nodes[i]) == len && memcmp(rt->nodes[i], node, len) == 0) return;
    rt->nodes = kf_realloc(rt->nodes, sizeof(char *) * (rt->nnodes + 1));
    rt->nodes[rt->nnodes++] = kf_strndup(node, len);
}

static void inbox_deliver(const char *p, size_t plen, const char *u, size_t ulen, const char *x,
                          size_t xlen);

/* Pushes for one remote node gathered during a loop iteration; flushed as ONE XADD whose entry
 * carries the pushes as repeated p/u/x field triples (a reader delivers them in order). */
#define BATCH_MAX 256
struct batch_push {
    char *p, *u, *x;
    size_t plen;
    char *conv;              /* NULL: nothing to signal when lost */
    uint8_t drop;            /* not a push: "drop your cached presence of user u" */
};
struct node_batch {
    char *node;
    int n;
    struct batch_push push[BATCH_MAX];
    struct node_batch *next;
};
static struct node_batch *batches;
static struct event *flush_ev;
static int flush_armed;

/* What an XADD in flight carries, to signal its pushes if it fails. */
struct sent_batch {
    int n;
    struct batch_push push[];
};

static void sent_batch_free(struct sent_batch *sb) {
    for (int i = 0; i < sb->n; i++) {
        kf_free(sb->push[i].u);
        kf_free(sb->push[i].conv);
    }
    kf_free(sb);
}

static void on_batch_stored(const redisReply *reply, const char *err, void *priv) {
    struct sent_batch *sb = priv;
    if (!router_stopping && (err || reply->type == REDIS_REPLY_ERROR)) {
        for (int i = 0; i < sb->n; i++) {
            if (sb->push[i].drop) continue; /* that node's copy expires by itself */
            lost_count(LOST_INBOX, 1);
            if (sb->push[i].conv) notice_add(sb->push[i].conv, sb->push[i].u, strlen(sb->push[i].u));
        }
    }
    sent_batch_free(sb);
}

static void batch_send(struct node_batch *b) {
    if (b->n == 0) return;
    char key[KF_KEY_MAX], maxlen[24];
    kf_key_node_inbox(key, b->node);
    snprintf(maxlen, sizeof(maxlen), "%lld", gw->opt.inbox_maxlen);
    int argc = 6 + 6 * b->n;
    const char **argv = kf_malloc(sizeof(char *) * (size_t)argc);
    size_t *lens = kf_malloc(sizeof(size_t) * (size_t)argc);
    const char *head[6] = {"XADD", key, "MAXLEN", "~", maxlen, "*"};
    for (int k = 0; k < 6; k++) argv[k] = head[k], lens[k] = strlen(head[k]);
    int k = 6;
    for (int i = 0; i < b->n; i++) {
        const struct batch_push *bp = &b->push[i];
        if (bp->drop) {
            /* "drop your cached presence of this user" (see on_presence_stored) */
            argv[k] = "d", lens[k] = 1;
            argv[k + 1] = bp->u, lens[k + 1] = strlen(bp->u);
            k += 2;
            continue;
        }
        argv[k] = "p", lens[k] = 1;
        argv[k + 1] = bp->p, lens[k + 1] = bp->plen;
        argv[k + 2] = "u", lens[k + 2] = 1;
        argv[k + 3] = bp->u, lens[k + 3] = strlen(bp->u);
        argv[k + 4] = "x", lens[k + 4] = 1;
        argv[k + 5] = bp->x, lens[k + 5] = strlen(bp->x);
        k += 6;
    }
    argc = k;
    struct sent_batch *sb = kf_malloc(sizeof(*sb) + sizeof(sb->push[0]) * (size_t)b->n);
    sb->n = b->n;
    kf_redis_argv(gw->redis, kf_redis_slot(gw->redis, key), on_batch_stored, sb, argc, argv, lens);
    for (int i = 0; i < b->n; i++) {
        sb->push[i] = b->push[i];
        kf_free(b->push[i].p);
        kf_free(b->push[i].x);
        sb->push[i].p = sb->push[i].x = NULL;
    }
    b->n = 0;
    kf_free(argv);
    kf_free(lens);
}

static void on_flush(evutil_socket_t fd, short what, void *arg) {
    (void)fd, (void)what, (void)arg;
    flush_armed = 0;
    for (struct node_batch *b = batches; b; b = b->next) batch_send(b);
}

static void batch_add(const char *node, const char *p, size_t plen, const char *u, const char *x,
                      const char *conv) {
    struct node_batch *b = batches;
    while (b && strcmp(b->node, node) != 0) b = b->next;
    if (!b) {
        b = kf_calloc(1, sizeof(*b));
        b->node = kf_strdup(node);
        b->next = batches;
        batches = b;
    }
    if (b->n == BATCH_MAX) batch_send(b);
    struct batch_push *bp = &b->push[b->n++];
    bp->drop = p == NULL;
    bp->p = kf_malloc(plen + 1);
    if (p)
        memcpy(bp->p, p, plen + 1);
    else
        bp->p[0] = '\0';
    bp->plen = plen;
    bp->u = kf_strdup(u);
    bp->x = kf_strdup(x);
    bp->conv = conv ? kf_strdup(conv) : NULL;
    if (!flush_armed) {
        /* Runs after the callbacks already active in this loop iteration. */
        flush_armed = 1;
        event_active(flush_ev, EV_TIMEOUT, 0);
    }
}

static void route_free(struct route *rt) {
    for (size_t i = 0; i < rt->nnodes; i++) kf_free(rt->nodes[i]);
    kf_free(rt->nodes);
    kf_free(rt->payload);
    kf_free(rt->users);
    kf_free(rt->retry);
    kf_free(rt);
}

static void route_send(struct route *rt) {
    for (size_t i = 0; i < rt->nnodes; i++) {
        if (strcmp(rt->nodes[i], gw->node) == 0) {
            /* Our own connections need no round trip through our inbox. */
            inbox_deliver(rt->payload, rt->payload_len, rt->users, strlen(rt->users), rt->skip,
                          strlen(rt->skip));
        } else {
            batch_add(rt->nodes[i], rt->payload, rt->payload_len, rt->users, rt->skip,
                      rt->signal ? rt->conv : NULL);
        }
    }
    route_free(rt);
}

/* Sends every route at the head of the line whose lookups are done, so the pushes of one
 * conversation leave in the order their messages were stored even when some lookups are
 * answered from the cache and others wait for Redis. */
static void routes_flush(void) {
    while (routes_head && routes_head->ready) {
        struct route *rt = routes_head;
        routes_head = rt->next;
        if (!routes_head) routes_tail = NULL;
        nroutes--;
        route_send(rt);
    }
    GW_M->route_queue = (int64_t)nroutes;
}

struct lookup {
    struct route *rt;
    uint32_t sent;
    char user[];
};

static void on_presence(const redisReply *reply, const char *err, void *priv);

static void lookup_send(struct route *rt, const char *user, size_t ul, const char *now) {
    struct lookup *lk = kf_malloc(sizeof(*lk) + ul + 1);
    lk->rt = rt;
    lk->sent = gw_clock_ms();
    memcpy(lk->user, user, ul);
    lk->user[ul] = '\0';
    char key[KF_KEY_MAX];
    kf_key_user_nodes(key, lk->user);
    if (gw->opt.presence_cache_ms <= 0) {
        kf_redis_cmd_key(gw->redis, key, on_presence, lk, "ZRANGEBYSCORE %s %s +inf", key, now);
        return;
    }
    /* The answer will be reused: say until when (see presence_attach.lua), BEFORE reading. A
     * registration that runs after the marker sees it (and its connections get a resync once
     * the copy has expired); one that runs before it is in the list read next. Three plain commands pipelined on the user's slot
     * cost less than a script. */
    char cached[KF_KEY_MAX];
    kf_key_user_cached(cached, lk->user);
    unsigned slot = kf_redis_slot(gw->redis, key);
    /* + 2 ms: the copy is reused while the monotonic clock (whole ms) says it is younger than
     * presence_cache_ms, and `now` is the wall clock truncated to the ms; the two truncations
     * may let it live up to 2 ms past now + presence_cache_ms. */
    kf_redis_cmd(gw->redis, slot, NULL, NULL, "ZADD %s %lld %s", cached,
                 atoll(now) + gw->opt.presence_cache_ms + 2, gw->node);
    kf_redis_cmd(gw->redis, slot, NULL, NULL, "PEXPIRE %s %lld", cached,
                 gw->opt.presence_cache_ms * 2 + 1000);
    kf_redis_cmd(gw->redis, slot, on_presence, lk, "ZRANGEBYSCORE %s %s +inf", key, now);
}

/* Every lookup of the route answered: send it, or try the failed ones again later, or give up
 * on those users and leave a resync notice for them. */
static void route_lookups_done(struct route *rt) {
    if (rt->retry) {
        if ((uint32_t)(gw_clock_ms() - rt->asked_ms) < (uint64_t)gw->opt.route_retry_ms) {
            GW_M->push_retries++;
            rt->retry_next = retry_list;
            retry_list = rt;
            if (!evtimer_pending(retry_ev, NULL)) {
                struct timeval tv = {0, 200000};
                evtimer_add(retry_ev, &tv);
            }
            return;
        }
        route_lost(rt, rt->retry, strlen(rt->retry), LOST_PRESENCE);
        kf_free(rt->retry);
        rt->retry = NULL;
    }
    rt->ready = 1;
    routes_flush();
}

static void on_retry(evutil_socket_t fd, short what, void *arg) {
    (void)fd, (void)what, (void)arg;
    struct route *list = retry_list;
    retry_list = NULL;
    char now[24];
    snprintf(now, sizeof(now), "%lld", (long long)gw_now_ms());
    for (struct route *rt = list, *next; rt; rt = next) {
        next = rt->retry_next;
        char *users = rt->retry;
        rt->retry = NULL;
        rt->pending = 1; /* held while the lookups go out */
        for (const char *u = users; *u;) {
            size_t l = strcspn(u, "\n");
            rt->pending++;
            lookup_send(rt, u, l, now);
            u += l;
            if (*u == '\n') u++;
        }
        kf_free(users);
        if (--rt->pending == 0) route_lookups_done(rt);
    }
}

static void retry_add(struct route *rt, const char *user) {
    size_t ul = strlen(user), old = rt->retry ? strlen(rt->retry) : 0;
    rt->retry = kf_realloc(rt->retry, old + ul + 2);
    if (old) rt->retry[old++] = '\n';
    memcpy(rt->retry + old, user, ul + 1);
}

static void on_presence(const redisReply *reply, const char *err, void *priv) {
    struct lookup *lk = priv;
    struct route *rt = lk->rt;
    if (router_stopping) {
        kf_free(lk);
        if (--rt->pending == 0) route_free(rt);
        return;
    }
    if (!err && reply->type == REDIS_REPLY_ARRAY) {
        int all_strings = 1;
        for (size_t i = 0; i < reply->elements; i++) {
            if (reply->element[i]->type == REDIS_REPLY_STRING)
                route_add_node(rt, reply->element[i]->str, reply->element[i]->len);
            else
                all_strings = 0;
        }
        if (all_strings) pc_store(lk->user, reply, lk->sent);
    } else {
        retry_add(rt, lk->user);
    }
    kf_free(lk);
    if (--rt->pending == 0) route_lookups_done(rt);
}

void gw_route_push(json_t *payload, const char *const *users, size_t nusers, const gw_conn *skip) {
    const char *conv = json_string_value(json_object_get(payload, "conv"));
    const char *type = json_string_value(json_object_get(payload, "type"));
    char *text = json_dumps(payload, JSON_COMPACT);
    if (text)
        gw_route_push_text(text, strlen(text), conv ? conv : "", !type || strcmp(type, "typing") != 0,
                           users, nusers, skip);
    json_decref(payload);
}

void gw_route_push_text(char *json, size_t len, const char *conv, int signal,
                        const char *const *users, size_t nusers, const gw_conn *skip) {
    struct route *rt = kf_calloc(1, sizeof(*rt));
    snprintf(rt->conv, sizeof(rt->conv), "%s", conv);
    rt->signal = (uint8_t)signal;
    rt->payload = json;
    rt->payload_len = len;
    rt->users = kf_join_lines(users, nusers);
    rt->asked_ms = gw_clock_ms();
    if (nroutes >= (size_t)gw->opt.route_queue_max) {
        route_lost(rt, rt->users, strlen(rt->users), LOST_OVERFLOW);
        route_free(rt);
        return;
    }
    if (skip) snprintf(rt->skip, sizeof(rt->skip), "%s/%llu", gw->node, (unsigned long long)skip->id);
    rt->pending = 1; /* held while the lookups go out */
    if (routes_tail)
        routes_tail->next = rt;
    else
        routes_head = rt;
    routes_tail = rt;
    nroutes++;
    char now[24];
    snprintf(now, sizeof(now), "%lld", (long long)gw_now_ms());
    uint32_t clk = rt->asked_ms;
    for (size_t i = 0; i < nusers; i++) {
        pcache *e = gw->opt.presence_cache_ms > 0 ? pc_find(users[i]) : NULL;
        if (e && (uint32_t)(clk - e->fetched) < (uint64_t)gw->opt.presence_cache_ms) {
            for (const char *n = e->nodes, *nl; (nl = strchr(n, '\n')); n = nl + 1)
                route_add_node(rt, n, (size_t)(nl - n));
            GW_M->presence_cache_hits++;
            continue;
        }
        rt->pending++;
        lookup_send(rt, users[i], strlen(users[i]), now);
    }
    if (--rt->pending == 0) route_lookups_done(rt);
}

/* ---- sending the notices, and resyncs for everyone ---- */

static void on_nodes_for_resync(const redisReply *reply, const char *err, void *priv) {
    (void)priv;
    if (router_stopping) return;
    if (err || reply->type != REDIS_REPLY_ARRAY) {
        resync_everyone = 1; /* try again at the next check */
        return;
    }
    static const char p[] = "{\"type\":\"resync\",\"reason\":\"routing\"}";
    for (size_t i = 0; i < reply->elements; i++) {
        const redisReply *n = reply->element[i];
        if (n->type != REDIS_REPLY_STRING || strcmp(n->str, gw->node) == 0) continue;
        batch_add(n->str, p, sizeof(p) - 1, "*", "", NULL);
    }
    inbox_deliver(p, sizeof(p) - 1, "*", 1, "", 0);
}

/* Once Redis is healthy and the line is short: every pending notice becomes a resync push. */
static void notices_send(void) {
    if (kf_redis_slots_up(gw->redis) < KF_SLOTS || nroutes > (size_t)gw->opt.route_queue_max / 2) return;
    if (resync_everyone) {
        resync_everyone = 0;
        notices_clear();
        char since[24];
        snprintf(since, sizeof(since), "%lld", (long long)(gw_now_ms() - 3 * gw->opt.presence_ttl_ms));
        kf_redis_cmd_key(gw->redis, KF_KEY_NODES, on_nodes_for_resync, NULL,
                         "ZRANGEBYSCORE %s %s +inf", KF_KEY_NODES, since);
        GW_M->resync_sent++;
        return;
    }
    for (struct notice *n = notices_take(), *next; n; n = next) {
        next = n->next;
        const char *users[64];
        size_t nu = 0;
        for (char *u = n->users; u && *u && nu < 64;) {
            char *nl = strchr(u, '\n');
            users[nu++] = u;
            if (!nl) break;
            *nl = '\0';
            u = nl + 1;
        }
        json_t *push = json_pack("{s:s, s:s, s:s}", "type", "resync", "conv", n->conv, "reason",
                                 "routing");
        if (!n->conv[0]) json_object_del(push, "conv");
        gw_route_push(push, users, nu, NULL);
        GW_M->resync_sent++;
        notice_free(n);
    }
}

void gw_route_resync(const char *conv, const char *const *users, size_t nusers) {
    char *joined = kf_join_lines(users, nusers);
    notice_add(conv, joined, strlen(joined));
    kf_free(joined);
}

/* Tells every local connection to re-check all of its conversations. */
static void on_local_resync(evutil_socket_t fd, short what, void *arg) {
    (void)fd, (void)what, (void)arg;
    static const char p[] = "{\"type\":\"resync\",\"reason\":\"redis_restart\"}";
    inbox_deliver(p, sizeof(p) - 1, "*", 1, "", 0);
    GW_M->resync_sent++;
}

/* ---- the inbox reader: its own Redis client (gw->reader), since XREAD BLOCK holds a
 * connection; it follows the inbox stream's slot like every other command ---- */

static void inbox_read(void);
static void inbox_trim(void);
static uint32_t inbox_untrimmed;

static void inbox_retry_later(void) {
    struct timeval tv = {0, 500000};
    event_add(gw->inbox_retry_ev, &tv);
}

static void on_inbox_retry(evutil_socket_t fd, short what, void *arg) {
    (void)fd, (void)what, (void)arg;
    inbox_read();
}

/* One inbox entry being delivered: the payload (JSON text) and its frames, each format encoded
 * at most once, on first need. */
struct delivery {
    const char *p;
    size_t plen;
    gw_buf *bufs[2]; /* JSON, msgpack */
    json_t *obj;     /* the payload parsed, for msgpack */
};

static void deliver_to(struct delivery *d, gw_conn *c) {
    int f = c->fmt == KF_FMT_MSGPACK;
    if (!d->bufs[f]) {
        if (f == KF_FMT_JSON) {
            char *b = kf_malloc(LWS_PRE + d->plen);
            memcpy(b + LWS_PRE, d->p, d->plen);
            d->bufs[f] = gw_buf_new(b, d->plen, 0);
        } else {
            if (!d->obj) d->obj = json_loadb(d->p, d->plen, 0, NULL);
            char *b;
            size_t bl;
            if (!d->obj || kf_codec_encode(KF_FMT_MSGPACK, d->obj, LWS_PRE, &b, &bl) < 0) {
                kf_error("inbox entry cannot be re-encoded");
                return;
            }
            d->bufs[f] = gw_buf_new(b, bl, 1);
        }
    }
    gw_conn_send_buf(c, d->bufs[f]);
    GW_M->inbox_deliveries++;
}

/* Delivers one inbox entry: payload p to every local connection of the users in u but x; u "*"
 * means every authenticated connection of this node (a resync for everyone). */
static void inbox_deliver(const char *p, size_t plen, const char *u, size_t ulen, const char *x,
                          size_t xlen) {
    struct delivery d = {p, plen, {NULL, NULL}, NULL};
    unsigned long long skip_id = 0;
    size_t nodelen = strlen(gw->node);
    if (xlen > nodelen + 1 && memcmp(x, gw->node, nodelen) == 0 && x[nodelen] == '/')
        skip_id = strtoull(x + nodelen + 1, NULL, 10);
    if (ulen == 1 && u[0] == '*') {
        for (gw_conn *c = gw->conns; c; c = c->next)
            if (c->id != skip_id && gw_conn_alive(c)) deliver_to(&d, c);
        ulen = 0;
    }
    const char *end = u + ulen;
    while (u < end) {
        const char *nl = memchr(u, '\n', (size_t)(end - u));
        size_t l = nl ? (size_t)(nl - u) : (size_t)(end - u);
        char id[KF_SUB_MAX + 1];
        if (l > 0 && l <= KF_SUB_MAX) {
            memcpy(id, u, l);
            id[l] = '\0';
            gw_user *usr = gw_user_find(id);
            for (gw_conn *c = usr ? usr->conns : NULL; c; c = c->user_next)
                if (c->id != skip_id && gw_conn_alive(c)) deliver_to(&d, c);
        }
        u += l + 1;
    }
    if (d.bufs[0]) gw_buf_unref(d.bufs[0]);
    if (d.bufs[1]) gw_buf_unref(d.bufs[1]);
    if (d.obj) json_decref(d.obj);
}

static void on_inbox(const redisReply *reply, const char *err, void *priv) {
    (void)priv;
    gw->inbox_reading = 0;
    if (!gw->reader) return; /* stopping */
    if (err || reply->type == REDIS_REPLY_ERROR) {
        kf_warn("inbox reader: %s; retrying", err ? err : reply->str);
        inbox_retry_later();
        return;
    }
    gw->inbox_ready = 1;
    /* [[key, [[id, [f, v, ...]], ...]]] or nil on timeout */
    if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 1 &&
        reply->element[0]->elements == 2) {
        const redisReply *entries = reply->element[0]->element[1];
        for (size_t i = 0; i < entries->elements; i++) {
            const redisReply *e = entries->element[i];
            if (e->elements != 2 || e->element[0]->type != REDIS_REPLY_STRING) continue;
            snprintf(gw->inbox_last_id, sizeof(gw->inbox_last_id), "%s", e->element[0]->str);
            GW_M->inbox_entries++;
            /* One or more pushes, each a p/u/x triple in that order. */
            const redisReply *kv = e->element[1], *p = NULL, *u = NULL, *x = NULL;
            inbox_untrimmed += (uint32_t)(kv->elements / 6 + 1);
            for (size_t f = 0; f + 1 < kv->elements; f += 2) {
                const redisReply *k = kv->element[f];
                if (k && k->type == REDIS_REPLY_STRING && k->len == 1 && k->str[0] == 'p') {
                    if (p && u) inbox_deliver(p->str, p->len, u->str, u->len, x ? x->str : "", x ? x->len : 0);
                    p = kv->element[f + 1], u = x = NULL;
                } else if (k && k->type == REDIS_REPLY_STRING && k->len == 1 && k->str[0] == 'u') {
                    u = kv->element[f + 1];
                } else if (k && k->type == REDIS_REPLY_STRING && k->len == 1 && k->str[0] == 'x') {
                    x = kv->element[f + 1];
                } else if (k && k->type == REDIS_REPLY_STRING && k->len == 1 && k->str[0] == 'd' &&
                           kv->element[f + 1]->type == REDIS_REPLY_STRING) {
                    pc_drop(kv->element[f + 1]->str);
                }
            }
            if (p && u) inbox_deliver(p->str, p->len, u->str, u->len, x ? x->str : "", x ? x->len : 0);
        }
        GW_M->inbox_lag_ms = gw_now_ms() - strtoll(gw->inbox_last_id, NULL, 10);
        if (inbox_untrimmed >= 1024) inbox_trim();
    } else {
        GW_M->inbox_lag_ms = 0;
    }
    if (!gw->draining || gw->nconns) inbox_read();
}

/* Entries already read are trimmed by their id, so MAXLEN only bounds a dead reader's inbox and
 * a lagging reader never loses what it has not read yet. Trimmed every 1024 pushes read (and
 * every second): one large XTRIM a second held Redis for milliseconds at high rates. */
static char inbox_trimmed[48];

static void inbox_trim(void) {
    if (!gw->inbox_last_id[0] || strcmp(inbox_trimmed, gw->inbox_last_id) == 0 ||
        strcmp(gw->inbox_last_id, "0-0") == 0)
        return;
    char key[KF_KEY_MAX];
    kf_key_node_inbox(key, gw->node);
    kf_redis_cmd_key(gw->redis, key, NULL, NULL, "XTRIM %s MINID ~ %s", key, gw->inbox_last_id);
    snprintf(inbox_trimmed, sizeof(inbox_trimmed), "%s", gw->inbox_last_id);
    inbox_untrimmed = 0;
}

static void on_inbox_start(const redisReply *reply, const char *err, void *priv) {
    (void)priv;
    gw->inbox_reading = 0;
    if (!gw->reader) return;
    if (err || reply->type == REDIS_REPLY_ERROR) {
        kf_warn("inbox reader: %s; retrying", err ? err : reply->str);
        inbox_retry_later();
        return;
    }
    if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 1 &&
        reply->element[0]->elements == 2)
        snprintf(gw->inbox_last_id, sizeof(gw->inbox_last_id), "%s",
                 reply->element[0]->element[0]->str);
    else
        snprintf(gw->inbox_last_id, sizeof(gw->inbox_last_id), "0-0");
    gw->inbox_ready = 1;
    kf_info("inbox reader started after %s", gw->inbox_last_id);
    inbox_read();
}

/* Reads the inbox after the last entry read, so a reconnect misses nothing; the first read
 * starts after the newest entry (older ones were meant for a previous run of this node). A
 * dead link is noticed by the reader's client: no answer for 1 s (the BLOCK) plus
 * redis_timeout_ms drops and re-establishes its connection, and the read fails and is tried
 * again. */
static void inbox_read(void) {
    if (!gw->reader || gw->inbox_reading) return;
    char key[KF_KEY_MAX];
    kf_key_node_inbox(key, gw->node);
    gw->inbox_reading = 1;
    if (!gw->inbox_last_id[0])
        kf_redis_cmd_key(gw->reader, key, on_inbox_start, NULL, "XREVRANGE %s + - COUNT 1", key);
    else
        kf_redis_cmd_key(gw->reader, key, on_inbox, NULL,
                         "XREAD COUNT %lld BLOCK 1000 STREAMS %s %s", gw->opt.inbox_batch, key,
                         gw->inbox_last_id);
}

/* A server that comes back may have lost its data (no persistence, failover): register every
 * local user's presence again at once rather than at the next heartbeat. */
static void on_redis_state(kf_redis *r, int up, void *priv) {
    (void)r, (void)priv;
    if (!up) return;
    on_heartbeat(-1, 0, NULL);
    if (up == KF_REDIS_UP_RESTARTED) {
        /* The server restarted: inbox entries, presence and messages it had not persisted may
         * be gone, and with them pushes meant for our clients. Once our presence is back (and
         * other nodes' cached lookups made before it have expired), every local client
         * re-checks its conversations. */
        long long ms = gw->opt.presence_cache_ms + 500;
        struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
        event_del(local_resync_ev);
        evtimer_add(local_resync_ev, &tv);
    }
}

void gw_router_check(void) {
    pc_expire();
    if (notice_table || resync_everyone) notices_send();
    inbox_trim();
}

void gw_router_start(void) {
    flush_ev = event_new(gw->base, -1, 0, on_flush, NULL);
    retry_ev = evtimer_new(gw->base, on_retry, NULL);
    local_resync_ev = evtimer_new(gw->base, on_local_resync, NULL);
    kf_redis_on_state(gw->redis, on_redis_state, NULL);
    gw->inbox_retry_ev = evtimer_new(gw->base, on_inbox_retry, NULL);
    gw->heartbeat_ev = event_new(gw->base, -1, EV_PERSIST, on_heartbeat, NULL);
    long long every = gw->opt.presence_ttl_ms / 3 < 1000 ? gw->opt.presence_ttl_ms / 3 : 1000;
    struct timeval tv = {every / 1000, (every % 1000) * 1000};
    event_add(gw->heartbeat_ev, &tv);
    inbox_read();
}

void gw_router_stop(void) {
    for (struct node_batch *b = batches, *next; b; b = next) {
        next = b->next;
        batch_send(b);
        kf_free(b->node);
        kf_free(b);
    }
    batches = NULL;
    if (flush_ev) event_free(flush_ev);
    flush_ev = NULL;
    /* Routes whose lookups are still out are freed by their callbacks, which run when the
     * Redis client is freed after us; the others go now. */
    router_stopping = 1;
    retry_list = NULL;
    while (routes_head) {
        struct route *rt = routes_head;
        routes_head = rt->next;
        if (rt->pending == 0) route_free(rt);
    }
    routes_tail = NULL;
    nroutes = 0;
    notices_clear();
    if (retry_ev) event_free(retry_ev);
    retry_ev = NULL;
    if (local_resync_ev) event_free(local_resync_ev);
    local_resync_ev = NULL;
    while (resync_timers) resync_timer_free(resync_timers);
    if (gw->reader) {
        kf_redis *rd = gw->reader;
        gw->reader = NULL; /* on_inbox() sees it gone and reads no more */
        kf_redis_free(rd);
    }
    event_free(gw->inbox_retry_ev);
    event_free(gw->heartbeat_ev);
    gw_user *u, *utmp;
    HASH_ITER(hh, gw->users, u, utmp) {
        HASH_DEL(gw->users, u);
        kf_free(u);
    }
    hb_next = NULL;
    pcache *e, *etmp;
    HASH_ITER(hh, pc_table, e, etmp) pc_free_entry(e);
}
