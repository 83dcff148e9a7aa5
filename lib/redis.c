/* Async Redis over hiredis + libevent for one stand-alone server or a Redis Cluster: routing by
 * slot, MOVED/ASK/TRYAGAIN/CLUSTERDOWN, slot map refreshes, reconnects, timeouts, scripts,
 * replica-confirmed commands (WAIT), statistics.
 *
 * Every command is addressed by a slot. owner[] maps slots to servers ("nodes"): all slots to
 * the one server of a stand-alone setup, or to the masters a cluster's CLUSTER SLOTS names.
 * In a cluster, each request keeps its formatted command until it is answered, so that a
 * redirection can send it again; a stand-alone server never redirects and the copy is skipped. */
#include "kefu/redis.h"

#include <event2/event.h>
#include <hiredis/async.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kefu/alloc.h"
#include "kefu/log.h"
#include "kefu/slot.h"

#define NO_NODE 0xffffu
#define MAX_REDIRECTS 8          /* per command: more means the cluster is reconfiguring */
#define RETRY_DELAY_US 100000    /* TRYAGAIN / CLUSTERDOWN: again after 100 ms ... */
#define REFRESH_EVERY_US 5000000 /* the slot map is read every 5 s ... */
#define REFRESH_FAST_US 100000   /* ... and at every tick while some slot has no server up, so
                                    that a promoted replica is followed within about 100 ms */
#define REFRESH_STUCK_US 300000  /* a map read unanswered this long while slots have no
                                    server up: ask another server too (it may sit behind a
                                    blocking read or a WAIT) */

enum node_state { NODE_DOWN, NODE_CONNECTING, NODE_UP };
enum mode { MODE_UNKNOWN = -1, MODE_SINGLE = 0, MODE_CLUSTER = 1 };

struct node;
struct req;

/* The durable commands one loop iteration sent to one server, confirmed by one WAIT sent after
 * them. A member that is redirected or fails leaves (its place is cleared). */
struct waitgrp {
    struct node *n;
    unsigned gen;         /* the node's connection it was opened on */
    struct waitgrp *next; /* the groups whose WAIT is not sent yet */
    size_t len, cap;
    struct req **qs;
};

struct req {
    kf_redis_cb *cb;
    void *priv;
    struct node *n;       /* where it was sent */
    uint64_t t0_us;       /* sent (round-trip statistics) */
    uint64_t first_us;    /* issued (retries give up after the timeout) */
    struct req *next;     /* the node's in-flight list, or the retry list */
    char *cmd;            /* formatted command, kept for redirections (cluster) */
    size_t len;
    struct waitgrp *grp;  /* the WAIT that confirms this durable command (with others) */
    redisReply *held;     /* its reply, held until the WAIT answers */
    uint16_t slot;
    uint8_t redirects;
    unsigned internal : 1, durable : 1, asking : 1;
};

struct node {
    kf_redis *r;
    unsigned idx;
    char host[256];
    int port;
    char addr[280];
    redisAsyncContext *ac;
    enum node_state state;
    struct req *head, *tail; /* commands in flight, oldest first (Redis answers in order) */
    size_t npending;
    int setup_pending;        /* scripts to load, cluster state to confirm: then it is up */
    int backoff_ms;
    uint64_t connect_started_us;
    uint64_t progress_us;     /* last reply, or when the queue last went from empty to busy */
    char run_id[48];          /* the server's run_id: a new one means it restarted */
    const char *drop_reason;  /* set while we tear the context down ourselves */
    struct event *reconnect_ev, *check_ev;
    struct waitgrp *grp;      /* durable commands of this iteration, WAIT not sent yet */
    unsigned gen;             /* connections made so far */
    struct waitgrp *wait_sent; /* the group whose WAIT is in flight (at most one) */
    uint64_t asked_us;        /* last ASK that sent a command here */
    unsigned seed : 1,        /* given in the configuration: always kept connected */
        master : 1,           /* serves slots in the current map */
        restarted : 1,        /* reached a restarted server, or took over a failed master's
                                 slots: may lack acknowledged writes (reported once up) */
        in_multi : 1,         /* between MULTI and EXEC: no redirections */
        native : 1;           /* this connection's server has KEFU.MSGSEND (kefu_redis.so) */
};

struct kf_redis {
    struct event_base *base;
    struct node **nodes;
    unsigned nnodes, nseeds;
    uint16_t owner[KF_SLOTS];
    enum mode mode;
    int refused;              /* several stand-alone servers: nothing is served */
    int timeout_ms;
    int ack_replicas, ack_timeout_ms;
    int use_module;           /* use kefu_redis.so's commands where a server has them */
    struct event *tick, *retry_ev, *wait_ev;
    uint32_t waiting[KF_SLOTS]; /* per slot: requests in the retry list */
    int have_map;             /* a cluster slot map was applied */
    struct req *retry_head, *retry_tail;
    size_t nretry;
    int refreshing;
    unsigned refresh_next;
    uint64_t last_refresh_us;
    unsigned slots_up;
    uint64_t uncovered_us;    /* when some slot last lost its server; 0 while all are served */
    int served_all;           /* every slot had a server up once: later losses are logged */
    int uncovered_told;       /* the loss was logged (it lasted a tick): so will the end */
    kf_redis_state_cb *state_cb;
    void *state_priv;
    kf_redis_before_cb *before_cb;
    void *before_priv;
    kf_redis_stats stats;
};

const double kf_redis_latency_bounds_s[11] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
                                              0.01, 0.025, 0.05, 0.1, 1.0};

static uint64_t now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void node_connect(struct node *n);
static void on_check(evutil_socket_t fd, short what, void *arg);
static void route(kf_redis *r, struct req *q);
static void map_refresh(kf_redis *r);
static void coverage_check(kf_redis *r);

static int node_wanted(const struct node *n) {
    return n->seed || n->master;
}

static void report(kf_redis *r, int how) {
    if (r->state_cb) r->state_cb(r, how, r->state_priv);
}

static void set_state(struct node *n, enum node_state st) {
    int was_up = n->state == NODE_UP;
    n->state = st;
    int up = st == NODE_UP;
    if (was_up == up) return;
    coverage_check(n->r);
    /* a cluster node that serves no slots (a replica given as a seed, an ASK target) changes
     * nothing for the callers */
    int quiet = n->r->mode == MODE_CLUSTER && !n->master;
    if (up) {
        kf_info("redis %s up%s", n->addr,
                n->restarted ? " (it restarted or took over from a failed master: it may lack "
                               "recent writes)"
                             : "");
        int how = n->restarted ? KF_REDIS_UP_RESTARTED : KF_REDIS_UP;
        n->restarted = 0;
        if (!quiet) report(n->r, how);
    } else {
        kf_warn("redis %s down", n->addr);
        if (!quiet) report(n->r, KF_REDIS_DOWN);
    }
}

static void schedule_reconnect(struct node *n) {
    if (!node_wanted(n)) return;
    struct timeval tv = {n->backoff_ms / 1000, (n->backoff_ms % 1000) * 1000};
    event_add(n->reconnect_ev, &tv);
    n->backoff_ms = n->backoff_ms * 2 > 5000 ? 5000 : n->backoff_ms * 2;
}

static void on_reconnect(evutil_socket_t fd, short what, void *arg) {
    (void)fd, (void)what;
    struct node *n = arg;
    if (!n->ac && node_wanted(n)) node_connect(n);
}

/* ---- replies held for a WAIT: a deep copy, since hiredis frees the reply after its callback */

static redisReply *reply_dup(const redisReply *s) {
    redisReply *d = kf_calloc(1, sizeof(*d));
    d->type = s->type;
    d->integer = s->integer;
    if (s->str) {
        d->str = kf_malloc(s->len + 1);
        memcpy(d->str, s->str, s->len);
        d->str[s->len] = '\0';
        d->len = s->len;
    }
    if (s->elements) {
        d->element = kf_malloc(sizeof(*d->element) * s->elements);
        for (size_t i = 0; i < s->elements; i++) d->element[i] = reply_dup(s->element[i]);
        d->elements = s->elements;
    }
    return d;
}

static void reply_free(redisReply *d) {
    if (!d) return;
    for (size_t i = 0; i < d->elements; i++) reply_free(d->element[i]);
    kf_free(d->element);
    kf_free(d->str);
    kf_free(d);
}

static void req_free(struct req *q) {
    kf_free(q->cmd);
    reply_free(q->held);
    kf_free(q);
}

static void grp_leave(struct req *q) {
    struct waitgrp *g = q->grp;
    if (!g) return;
    for (size_t i = 0; i < g->len; i++)
        if (g->qs[i] == q) g->qs[i] = NULL;
    q->grp = NULL;
}

/* Hands a request its answer (or failure) and frees it. A durable command that succeeded waits
 * for its group's WAIT instead. */
static void finish(struct req *q, const redisReply *reply, const char *err) {
    kf_redis_stats *st = q->n ? &q->n->r->stats : NULL;
    if (q->grp) {
        if (!err && reply->type != REDIS_REPLY_ERROR) {
            q->held = reply_dup(reply);
            return; /* on_waited() answers */
        }
        grp_leave(q);
    }
    if (err && st) st->failures++;
    if (q->cb) q->cb(reply, err, q->priv);
    req_free(q);
}

static void grp_free(struct waitgrp *g) {
    kf_free(g->qs);
    kf_free(g);
}

/* The WAIT of a group answered: each member still in it is confirmed (its held reply goes to
 * its caller) or not ("unreplicated": executed, but not on enough replicas in time). */
static void on_waited(const redisReply *reply, const char *err, void *priv) {
    struct waitgrp *g = priv;
    kf_redis *r = g->n->r;
    if (g->n->wait_sent == g) {
        g->n->wait_sent = NULL;
        if (g->n->grp) event_active(r->wait_ev, EV_TIMEOUT, 0); /* the next group's turn */
    }
    if (!err && (reply->type != REDIS_REPLY_INTEGER || reply->integer < r->ack_replicas)) {
        r->stats.unreplicated += 1;
        err = "unreplicated";
    }
    for (size_t i = 0; i < g->len; i++) {
        struct req *q = g->qs[i];
        if (!q) continue;
        q->grp = NULL;
        if (!q->held) { /* cannot happen: the WAIT is answered after the commands before it */
            kf_error("redis %s: WAIT answered before a command it confirms", g->n->addr);
            abort();
        }
        if (err) r->stats.failures++;
        if (q->cb) q->cb(err ? NULL : q->held, err, q->priv);
        req_free(q);
    }
    grp_free(g);
}

/* ---- failures and retries that are answered later, from the loop ---- */

struct deferred {
    kf_redis_cb *cb;
    void *priv;
    const char *err;
};

static void on_deferred(evutil_socket_t fd, short what, void *arg) {
    (void)fd, (void)what;
    struct deferred *d = arg;
    d->cb(NULL, d->err, d->priv);
    kf_free(d);
}

static void fail_later(kf_redis *r, struct req *q, const char *err) {
    r->stats.failures++;
    if (q->cb) {
        struct deferred *d = kf_malloc(sizeof(*d));
        d->cb = q->cb, d->priv = q->priv, d->err = err;
        struct timeval zero = {0, 0};
        if (event_base_once(r->base, -1, EV_TIMEOUT, on_deferred, d, &zero) < 0) {
            kf_error("event_base_once failed");
            abort();
        }
    }
    req_free(q);
}

static void retry_enqueue(kf_redis *r, struct req *q) {
    q->next = NULL;
    if (r->retry_tail) r->retry_tail->next = q;
    else r->retry_head = q;
    r->retry_tail = q;
    r->nretry++;
    r->waiting[q->slot]++;
}

/* Whether a request for slot waits to be tried again: a later one for that slot waits behind
 * it, so that the commands of one slot keep their order. */
static int slot_waits(const kf_redis *r, unsigned slot) {
    return r->waiting[slot & (KF_SLOTS - 1)] != 0;
}

/* Queues q behind the requests of its slot that wait, due at once after them. */
static void queue_behind(kf_redis *r, struct req *q) {
    q->t0_us = 0;
    retry_enqueue(r, q);
}

static void retry_later(kf_redis *r, struct req *q) {
    q->next = NULL;
    q->t0_us = now_us() + RETRY_DELAY_US; /* due */
    retry_enqueue(r, q);
    if (!evtimer_pending(r->retry_ev, NULL)) {
        struct timeval tv = {0, RETRY_DELAY_US};
        evtimer_add(r->retry_ev, &tv);
    }
}

static void on_retry(evutil_socket_t fd, short what, void *arg) {
    (void)fd, (void)what;
    kf_redis *r = arg;
    uint64_t now = now_us();
    while (r->retry_head && r->retry_head->t0_us <= now) {
        struct req *q = r->retry_head;
        r->retry_head = q->next;
        if (!r->retry_head) r->retry_tail = NULL;
        r->nretry--;
        r->waiting[q->slot]--;
        route(r, q);
    }
    if (r->retry_head) {
        uint64_t d = r->retry_head->t0_us - now;
        struct timeval tv = {(time_t)(d / 1000000u), (suseconds_t)(d % 1000000u)};
        evtimer_add(r->retry_ev, &tv);
    }
}

/* ---- sending ---- */

static struct req *req_new(kf_redis_cb *cb, void *priv, unsigned slot) {
    struct req *q = kf_calloc(1, sizeof(*q));
    q->cb = cb, q->priv = priv, q->slot = (uint16_t)slot;
    q->first_us = now_us();
    return q;
}

static int is_cmd(const char *cmd, size_t len, const char *resp) {
    size_t n = strlen(resp);
    return len == n && memcmp(cmd, resp, n) == 0;
}

static void send_wait(struct node *n, struct req *q);
static void on_reply(redisAsyncContext *ac, void *reply, void *privdata);

/* Queues q on n's connection; commands may be queued while it connects (the scripts are loaded
 * first, being queued first). */
static void node_send(struct node *n, struct req *q, const char *cmd, size_t len) {
    kf_redis *r = n->r;
    if (!n->ac) {
        fail_later(r, q, "unavailable");
        return;
    }
    if (q->asking) {
        struct req *a = req_new(NULL, NULL, q->slot);
        a->internal = 1;
        node_send(n, a, "*1\r\n$6\r\nASKING\r\n", 16);
        q->asking = 0;
    }
    q->n = n;
    q->next = NULL;
    q->t0_us = now_us();
    if (redisAsyncFormattedCommand(n->ac, on_reply, q, cmd, len) != REDIS_OK) {
        fail_later(r, q, "unavailable");
        return;
    }
    if (n->tail) {
        n->tail->next = q;
    } else {
        n->head = q;
        n->progress_us = q->t0_us;
    }
    n->tail = q;
    n->npending++;
    /* a MOVED inside MULTI ... EXEC must not take one command out of the transaction */
    if (is_cmd(cmd, len, "*1\r\n$5\r\nMULTI\r\n")) n->in_multi = 1;
    else if (is_cmd(cmd, len, "*1\r\n$4\r\nEXEC\r\n") || is_cmd(cmd, len, "*1\r\n$7\r\nDISCARD\r\n"))
        n->in_multi = 0;
    else if (n->in_multi) q->internal = 1; /* internal: answered as it is, never redirected */
    if (q->durable && r->ack_replicas > 0) send_wait(n, q);
}

static void send_wait(struct node *n, struct req *q) {
    kf_redis *r = n->r;
    struct waitgrp *g = n->grp;
    if (!g) {
        g = n->grp = kf_calloc(1, sizeof(*g));
        g->n = n;
        g->gen = n->gen;
        if (!n->wait_sent) event_active(r->wait_ev, EV_TIMEOUT, 0); /* after this iteration */
    }
    if (g->len == g->cap) {
        g->cap = g->cap ? 2 * g->cap : 8;
        g->qs = kf_realloc(g->qs, sizeof(*g->qs) * g->cap);
    }
    g->qs[g->len++] = q;
    q->grp = g;
}

/* End of the loop iteration: for each server, one WAIT confirms the durable commands sent to
 * it since the last one. At most one WAIT per connection is in flight: Redis runs nothing
 * behind a WAIT that blocks, so a second one would only add its wait to the first's; what
 * gathers meanwhile goes with the next. */
static void on_wait_flush(evutil_socket_t fd, short what, void *arg) {
    (void)fd, (void)what;
    kf_redis *r = arg;
    for (unsigned i = 0; i < r->nnodes; i++) {
        struct node *n = r->nodes[i];
        struct waitgrp *g = n->grp;
        if (!g || (n->wait_sent && n->ac && n->gen == g->gen && fd != -1)) continue;
        n->grp = NULL;
        size_t live = 0;
        for (size_t k = 0; k < g->len; k++) live += g->qs[k] != NULL;
        if (!live) {
            grp_free(g);
            continue;
        }
        if (!n->ac || n->gen != g->gen) {
            /* the connection went (a WAIT on another one would confirm nothing) */
            on_waited(NULL, "unavailable", g);
            continue;
        }
        struct req *w = req_new(on_waited, g, 0);
        w->internal = 1;
        char *cmd;
        int len = redisFormatCommand(&cmd, "WAIT %d %d", r->ack_replicas, r->ack_timeout_ms);
        if (len < 0) abort();
        n->wait_sent = g;
        node_send(n, w, cmd, (size_t)len);
        redisFreeCommand(cmd);
    }
}

/* The server that serves slot, NULL when none does. */
static struct node *slot_node(const kf_redis *r, unsigned slot) {
    unsigned i = r->owner[slot & (KF_SLOTS - 1)];
    return i == NO_NODE ? NULL : r->nodes[i];
}

/* Sends a request to the server of its slot, or fails it when there is none. */
static void route(kf_redis *r, struct req *q) {
    struct node *n = slot_node(r, q->slot);
    if (!n || !n->ac) {
        fail_later(r, q, "unavailable");
        return;
    }
    node_send(n, q, q->cmd, q->len);
}

/* A command from the caller: formatted once; kept for redirections unless the server is
 * stand-alone. */
static void dispatch(kf_redis *r, unsigned slot, kf_redis_cb *cb, void *priv, char *cmd,
                     size_t len, int durable) {
    slot &= KF_SLOTS - 1;
    if (r->before_cb) r->before_cb(r, slot, r->before_priv);
    struct req *q = req_new(cb, priv, slot);
    q->durable = durable != 0;
    struct node *n = slot_node(r, slot);
    if (!n || !n->ac) {
        fail_later(r, q, "unavailable");
        return;
    }
    if (r->mode != MODE_SINGLE) {
        q->cmd = kf_malloc(len);
        memcpy(q->cmd, cmd, len);
        q->len = len;
        if (slot_waits(r, slot)) {
            queue_behind(r, q);
            return;
        }
    }
    node_send(n, q, cmd, len);
}

static void send_internal(struct node *n, kf_redis_cb *cb, void *priv, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    char *cmd;
    int len = redisvFormatCommand(&cmd, fmt, ap);
    va_end(ap);
    if (len < 0) abort();
    struct req *q = req_new(cb, priv, 0);
    q->internal = 1;
    node_send(n, q, cmd, (size_t)len);
    redisFreeCommand(cmd);
}

/* ---- the hiredis <-> libevent adapter ----
 * hiredis' own libevent adapter re-adds a one-shot read event after every read and adds and
 * deletes the write event around every write: two to four epoll_ctl calls per loop iteration
 * per connection. Here the read event persists, and the commands of a loop iteration are
 * written at its end, straight away (one write, no write event); the write event is armed only
 * while connecting and when the socket's buffer is full. */
struct kf_ev {
    redisAsyncContext *ac;
    struct event *rev, *wev, *flush;
    unsigned reading : 1, flushing : 1, writing : 1, in_cb : 1, dead : 1;
};

static void kf_ev_free(struct kf_ev *e) {
    event_free(e->rev);
    event_free(e->wev);
    event_free(e->flush);
    kf_free(e);
}

/* Runs one hiredis handler; the context (and with it e) may be freed inside it. */
static void kf_ev_handle(struct kf_ev *e, void (*handler)(redisAsyncContext *)) {
    int nested = e->in_cb;
    e->in_cb = 1;
    handler(e->ac);
    if (nested) return;
    if (e->dead) {
        kf_ev_free(e);
        return;
    }
    e->in_cb = e->writing = 0;
}

static void kf_ev_on_read(evutil_socket_t fd, short what, void *arg) {
    (void)fd, (void)what;
    kf_ev_handle(arg, redisAsyncHandleRead);
}

static void kf_ev_write(struct kf_ev *e) {
    e->writing = 1;
    kf_ev_handle(e, redisAsyncHandleWrite);
    /* e may be gone: kf_ev_handle freed it when the context died (then dead was set) */
}

static void kf_ev_on_write(evutil_socket_t fd, short what, void *arg) {
    (void)fd, (void)what;
    kf_ev_write(arg);
}

static void kf_ev_on_flush(evutil_socket_t fd, short what, void *arg) {
    (void)fd, (void)what;
    struct kf_ev *e = arg;
    e->flushing = 0;
    kf_ev_write(e);
}

static void kf_ev_add_read(void *p) {
    struct kf_ev *e = p;
    if (!e->reading) event_add(e->rev, NULL);
    e->reading = 1;
}

static void kf_ev_del_read(void *p) {
    struct kf_ev *e = p;
    if (e->reading) event_del(e->rev);
    e->reading = 0;
}

static void kf_ev_add_write(void *p) {
    struct kf_ev *e = p;
    if (e->writing || !(e->ac->c.flags & REDIS_CONNECTED)) {
        /* connecting, or a write just left data behind: wait until the socket takes more */
        event_add(e->wev, NULL);
    } else if (!e->flushing) {
        e->flushing = 1;
        event_active(e->flush, EV_TIMEOUT, 0); /* after the callbacks active in this iteration */
    }
}

static void kf_ev_del_write(void *p) {
    struct kf_ev *e = p;
    event_del(e->wev);
}

static void kf_ev_cleanup(void *p) {
    struct kf_ev *e = p;
    if (e->in_cb) {
        event_del(e->rev);
        event_del(e->wev);
        event_del(e->flush);
        e->dead = 1; /* freed when the handler returns */
        return;
    }
    kf_ev_free(e);
}

static void kf_redis_attach(redisAsyncContext *ac, struct event_base *base) {
    struct kf_ev *e = kf_calloc(1, sizeof(*e));
    e->ac = ac;
    e->rev = event_new(base, ac->c.fd, EV_READ | EV_PERSIST, kf_ev_on_read, e);
    e->wev = event_new(base, ac->c.fd, EV_WRITE, kf_ev_on_write, e);
    e->flush = event_new(base, -1, 0, kf_ev_on_flush, e);
    ac->ev.addRead = kf_ev_add_read;
    ac->ev.delRead = kf_ev_del_read;
    ac->ev.addWrite = kf_ev_add_write;
    ac->ev.delWrite = kf_ev_del_write;
    ac->ev.cleanup = kf_ev_cleanup;
    ac->ev.data = e;
    kf_ev_add_read(e);
    event_add(e->wev, NULL); /* the connect completes when the socket is writable */
}

/* ---- nodes ---- */

static struct node *node_find(kf_redis *r, const char *host, int port) {
    for (unsigned i = 0; i < r->nnodes; i++)
        if (r->nodes[i]->port == port && strcmp(r->nodes[i]->host, host) == 0) return r->nodes[i];
    return NULL;
}

static struct node *node_add(kf_redis *r, const char *host, int port) {
    if (r->nnodes >= NO_NODE) return NULL;
    struct node *n = kf_calloc(1, sizeof(*n));
    n->r = r;
    n->idx = r->nnodes;
    snprintf(n->host, sizeof(n->host), "%s", host);
    n->port = port;
    snprintf(n->addr, sizeof(n->addr), "%s:%d", n->host, port);
    n->backoff_ms = 100;
    n->reconnect_ev = evtimer_new(r->base, on_reconnect, n);
    n->check_ev = evtimer_new(r->base, on_check, n);
    r->nodes = kf_realloc(r->nodes, sizeof(*r->nodes) * (r->nnodes + 1));
    r->nodes[r->nnodes++] = n;
    return n;
}

/* The node at host:port, connected (or connecting) as a master. */
static struct node *node_master(kf_redis *r, const char *host, int port) {
    struct node *n = node_find(r, host, port);
    if (!n && !(n = node_add(r, host, port))) return NULL;
    n->master = 1;
    if (!n->ac && !evtimer_pending(n->reconnect_ev, NULL)) node_connect(n);
    return n;
}

static struct req *pop_req(struct node *n, struct req *expect) {
    struct req *q = n->head;
    if (q != expect) {
        /* hiredis answers in order; anything else is a bug worth crashing on in tests */
        kf_error("redis %s: reply out of order", n->addr);
        abort();
    }
    n->head = q->next;
    if (!n->head) n->tail = NULL;
    n->npending--;
    n->progress_us = now_us();
    return q;
}

/* An error reply that asks for the command elsewhere or later: returns 1 when q was taken care
 * of (sent again, or queued for a retry), -1 when it should fail "unavailable" (redirected too
 * often, or the slot stayed unserved for the timeout), 0 for an ordinary error reply. */
static int redirect(kf_redis *r, struct node *n, struct req *q, const redisReply *rp) {
    unsigned slot;
    char host[256];
    int port;
    enum kf_redirect k = kf_redirect_parse(rp->str, rp->len, &slot, host, sizeof(host), &port);
    if (k == KF_REDIR_NONE) return 0;
    int hop = k == KF_REDIR_MOVED || k == KF_REDIR_ASK;
    if ((hop && q->redirects >= MAX_REDIRECTS) ||
        (!hop && now_us() - q->first_us > (uint64_t)r->timeout_ms * 1000u)) {
        kf_warn("redis: giving up on a command for slot %u after %u redirections (%.*s)",
                (unsigned)q->slot, (unsigned)q->redirects, (int)(rp->len > 60 ? 60 : rp->len),
                rp->str);
        return -1;
    }
    if (hop) q->redirects++;
    grp_leave(q); /* the WAIT of this node confirms nothing about it now */
    if (!host[0]) snprintf(host, sizeof(host), "%s", n->host);
    switch (k) {
    case KF_REDIR_MOVED: {
        r->stats.moved++;
        struct node *t = node_master(r, host, port);
        if (!t) return -1;
        r->owner[slot] = (uint16_t)t->idx;
        kf_debug("redis: slot %u moved to %s", slot, t->addr);
        map_refresh(r); /* more slots probably moved with it */
        if (slot_waits(r, q->slot))
            queue_behind(r, q); /* an earlier command of its slot waits: keep the order */
        else if (slot == q->slot)
            route(r, q);
        else
            node_send(t, q, q->cmd, q->len); /* the server knows the key's slot better */
        return 1;
    }
    case KF_REDIR_ASK: {
        r->stats.ask++;
        struct node *t = node_find(r, host, port);
        if (!t) t = node_add(r, host, port);
        if (!t) return -1;
        t->asked_us = now_us(); /* kept connected a while, though it serves no slot yet */
        if (!t->ac) node_connect(t); /* importing a slot; the command queues behind setup */
        if (slot_waits(r, q->slot)) {
            queue_behind(r, q); /* sent by route() later: it may need ASK again, or not */
            return 1;
        }
        q->asking = 1;
        node_send(t, q, q->cmd, q->len);
        return 1;
    }
    default:
        r->stats.retried++;
        retry_later(r, q);
        return 1;
    }
}

static void on_reply(redisAsyncContext *ac, void *reply, void *privdata) {
    struct node *n = ac->data;
    struct req *q = pop_req(n, privdata);
    kf_redis *r = n->r;
    const redisReply *rp = reply;
    if (!rp) {
        finish(q, NULL, n->drop_reason ? n->drop_reason : "unavailable");
        return;
    }
    uint64_t d = now_us() - q->t0_us;
    r->stats.commands++;
    r->stats.latency_us_sum += d;
    int b = 0;
    while (b < 11 && (double)d > kf_redis_latency_bounds_s[b] * 1e6) b++;
    r->stats.latency_bucket[b]++;
    if (rp->type == REDIS_REPLY_ERROR && q->cmd && !q->internal) {
        int how = redirect(r, n, q, rp);
        if (how > 0) return;
        if (how < 0) {
            finish(q, NULL, "unavailable");
            return;
        }
    }
    finish(q, rp, NULL);
}

static void node_drop(struct node *n, const char *reason) {
    if (!n->ac) return;
    redisAsyncContext *ac = n->ac;
    n->drop_reason = reason;
    redisAsyncFree(ac); /* fails every pending command with a NULL reply */
    n->drop_reason = NULL;
    n->ac = NULL;
    n->in_multi = 0;
    set_state(n, NODE_DOWN);
    schedule_reconnect(n);
}

static void on_drop_later(evutil_socket_t fd, short what, void *arg) {
    (void)fd, (void)what;
    node_drop(arg, "unavailable");
}

static void setup_done(struct node *n) {
    if (--n->setup_pending == 0 && n->state == NODE_CONNECTING) {
        n->backoff_ms = 100;
        set_state(n, NODE_UP);
    }
}

/* A cluster node serves once it says cluster_state:ok: a restarted master answers CLUSTERDOWN
 * until it has heard from the others, so it is not up before. Asked again every 200 ms. */
static void on_cluster_state(const redisReply *reply, const char *err, void *priv) {
    struct node *n = priv;
    if (err) return;
    if (reply->type == REDIS_REPLY_STRING && strstr(reply->str, "cluster_state:ok")) {
        setup_done(n);
        return;
    }
    struct timeval tv = {0, 200000};
    evtimer_add(n->check_ev, &tv);
}

static void send_internal(struct node *n, kf_redis_cb *cb, void *priv, const char *fmt, ...);

static void on_check(evutil_socket_t fd, short what, void *arg) {
    (void)fd, (void)what;
    struct node *n = arg;
    if (n->ac && n->state == NODE_CONNECTING) send_internal(n, on_cluster_state, n, "CLUSTER INFO");
}

static void on_script_loaded(const redisReply *reply, const char *err, void *priv) {
    struct node *n = priv;
    if (err) return; /* the connection is gone; the next one loads them again */
    if (reply->type == REDIS_REPLY_ERROR) {
        kf_error("redis %s: SCRIPT LOAD failed: %s", n->addr, reply->str);
        struct timeval zero = {0, 0};
        event_base_once(n->r->base, -1, EV_TIMEOUT, on_drop_later, n, &zero);
        return;
    }
    setup_done(n);
}

static void set_all_owners(kf_redis *r, unsigned idx) {
    for (unsigned s = 0; s < KF_SLOTS; s++) r->owner[s] = (uint16_t)idx;
}

/* INFO server, sent first on every connection: the run_id (a new one means the server
 * restarted and may have lost what it had not persisted) and, the first time, whether this is
 * a stand-alone server or a cluster node. */
static void on_server_info(const redisReply *reply, const char *err, void *priv) {
    struct node *n = priv;
    kf_redis *r = n->r;
    if (err || reply->type != REDIS_REPLY_STRING) return;
    const char *p = strstr(reply->str, "run_id:");
    if (p) {
        p += 7;
        size_t len = strcspn(p, "\r\n");
        if (len >= sizeof(n->run_id)) len = sizeof(n->run_id) - 1;
        if (n->run_id[0] && (strlen(n->run_id) != len || memcmp(n->run_id, p, len) != 0) &&
            (r->mode != MODE_CLUSTER || n->master))
            n->restarted = 1; /* a replica that restarted lost nothing anyone was told */
        memcpy(n->run_id, p, len);
        n->run_id[len] = '\0';
    }
    if (r->mode != MODE_UNKNOWN || r->refused) return;
    int cluster = strstr(reply->str, "redis_mode:cluster") != NULL;
    if (cluster) {
        r->mode = MODE_CLUSTER;
        kf_info("redis: %s is a Redis Cluster node; reading the slot map", n->addr);
        map_refresh(r);
    } else if (r->nseeds == 1) {
        r->mode = MODE_SINGLE;
        n->master = 1;
        kf_info("redis: %s is a stand-alone server", n->addr);
    } else {
        r->refused = 1;
        set_all_owners(r, NO_NODE);
        kf_error("redis: %s is a stand-alone server, but %u addresses are configured: several "
                 "addresses must be nodes of one Redis Cluster (kefu no longer splits keys over "
                 "independent servers; see docs/operations.md, \"Migrating from a shard list\")",
                 n->addr, r->nseeds);
    }
}

/* COMMAND INFO kefu.msgsend: [nil] when the server lacks kefu_redis.so. Until the answer comes
 * the connection uses the script, which every server has. */
static void on_module_info(const redisReply *reply, const char *err, void *priv) {
    struct node *n = priv;
    if (err || reply->type != REDIS_REPLY_ARRAY || reply->elements != 1) return;
    int has = reply->element[0]->type == REDIS_REPLY_ARRAY;
    if (has && !n->native) kf_info("redis %s: has the kefu module; msg.send uses KEFU.MSGSEND", n->addr);
    n->native = has;
}

static void on_connect(const redisAsyncContext *ac, int status) {
    struct node *n = ac->data;
    if (status != REDIS_OK) {
        kf_debug("redis %s: connect failed: %s", n->addr, ac->errstr);
        /* hiredis frees the context after this; what was queued fails with "unavailable" */
        n->ac = NULL;
        n->in_multi = 0;
        n->state = NODE_DOWN;
        schedule_reconnect(n);
        return;
    }
    if (n->setup_pending == 0 && n->state == NODE_CONNECTING) {
        n->backoff_ms = 100;
        set_state(n, NODE_UP);
    }
}

static void on_disconnect(const redisAsyncContext *ac, int status) {
    struct node *n = ac->data;
    (void)status;
    if (n->drop_reason) return; /* node_drop() handles the rest */
    n->ac = NULL;
    n->in_multi = 0;
    kf_debug("redis %s disconnected: %s", n->addr, ac->errstr);
    set_state(n, NODE_DOWN);
    schedule_reconnect(n);
    if (n->r->mode == MODE_CLUSTER) map_refresh(n->r); /* did a replica take over? */
}

static void node_connect(struct node *n) {
    redisAsyncContext *ac = redisAsyncConnect(n->host, n->port);
    if (!ac || ac->err) {
        kf_debug("redis %s: %s", n->addr, ac ? ac->errstr : "out of memory");
        if (ac) redisAsyncFree(ac);
        schedule_reconnect(n);
        return;
    }
    ac->data = n;
    n->ac = ac;
    n->gen++;
    evtimer_del(n->check_ev); /* a check meant for the previous connection */
    n->state = NODE_CONNECTING;
    n->connect_started_us = now_us();
    kf_redis_attach(ac, n->r->base);
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    /* Queued before anything else, so every command sent on this connection finds them. */
    send_internal(n, on_server_info, n, "INFO server");
    n->native = 0;
    send_internal(n, on_module_info, n, "COMMAND INFO kefu.msgsend");
    n->setup_pending = 0;
    for (int i = 0; kf_script_name_at(i); i++) {
        size_t len;
        const char *src = kf_script_source(kf_script_name_at(i), &len);
        n->setup_pending++;
        send_internal(n, on_script_loaded, n, "SCRIPT LOAD %b", src, len);
    }
    if (n->r->mode == MODE_CLUSTER) {
        n->setup_pending++;
        send_internal(n, on_cluster_state, n, "CLUSTER INFO");
    }
}

/* Counts the slots whose server is up, and notes when some lose it and when all are served
 * again. A loss that outlasts a tick is logged (on_tick), and then its end too, with how long it
 * took: the time a failover took to follow, as this process saw it. */
static void coverage_check(kf_redis *r) {
    unsigned up = 0;
    for (unsigned s = 0; s < KF_SLOTS; s++) up += kf_redis_is_up(r, s);
    r->slots_up = up;
    if (r->mode == MODE_UNKNOWN || r->refused) return;
    if (up == KF_SLOTS) r->served_all = 1;
    if (up < KF_SLOTS && !r->uncovered_us && r->served_all) {
        r->uncovered_us = now_us();
    } else if (up == KF_SLOTS && r->uncovered_us) {
        if (r->uncovered_told)
            kf_info("redis: every slot is served again, %llu ms after some lost their server",
                    (unsigned long long)((now_us() - r->uncovered_us) / 1000u));
        r->uncovered_us = 0;
        r->uncovered_told = 0;
    }
}

/* ---- the slot map (cluster) ---- */

static void on_slots(const redisReply *reply, const char *err, void *priv) {
    struct node *from = priv;
    kf_redis *r = from->r;
    r->refreshing = 0;
    if (err) return;
    size_t max = reply->type == REDIS_REPLY_ARRAY ? reply->elements : 0;
    kf_slot_range *ranges = kf_malloc(sizeof(*ranges) * (max ? max : 1));
    int nr = kf_cluster_slots_parse(reply, ranges, (int)max);
    if (nr < 0) {
        kf_error("redis %s: unexpected CLUSTER SLOTS reply%s%s", from->addr,
                 reply->type == REDIS_REPLY_ERROR ? ": " : "",
                 reply->type == REDIS_REPLY_ERROR ? reply->str : "");
        kf_free(ranges);
        return;
    }
    r->stats.map_refreshes++;
    uint16_t *owner = kf_malloc(sizeof(uint16_t) * KF_SLOTS);
    for (unsigned s = 0; s < KF_SLOTS; s++) owner[s] = NO_NODE;
    unsigned char *was = kf_calloc(r->nnodes + 1, 1);
    unsigned nbefore = r->nnodes;
    for (unsigned i = 0; i < r->nnodes; i++) {
        was[i] = r->nodes[i]->master;
        r->nodes[i]->master = 0;
    }
    for (int i = 0; i < nr; i++) {
        const char *host = ranges[i].host[0] ? ranges[i].host : from->host;
        struct node *n = node_master(r, host, ranges[i].port);
        if (!n) continue;
        for (unsigned s = ranges[i].first; s <= ranges[i].last; s++) owner[s] = (uint16_t)n->idx;
    }
    kf_free(ranges);
    /* A slot whose server was down when it changed hands: a replica took over (a failover),
     * and it has only what had reached it. A slot moved between live servers (resharding)
     * carries its keys with it. The first map only replaces the guess made before it. */
    unsigned char *took = kf_calloc(r->nnodes, 1);
    for (unsigned s = 0; r->have_map && s < KF_SLOTS; s++) {
        unsigned old = r->owner[s];
        if (owner[s] == old || owner[s] == NO_NODE || old == NO_NODE) continue;
        if (r->nodes[old]->state != NODE_UP && !took[owner[s]]) {
            took[owner[s]] = 1;
            kf_warn("redis: %s took over slots of %s, which is down (a failover)",
                    r->nodes[owner[s]]->addr, r->nodes[old]->addr);
        }
    }
    r->have_map = 1;
    memcpy(r->owner, owner, sizeof(uint16_t) * KF_SLOTS);
    kf_free(owner);
    /* reported once the map routes to the new server: callers re-register what may be lost */
    int report_now = 0;
    for (unsigned i = 0; i < r->nnodes; i++) {
        if (!took[i]) continue;
        if (r->nodes[i]->state == NODE_UP) report_now = 1;
        else r->nodes[i]->restarted = 1; /* set_state() reports it when it comes up */
    }
    kf_free(took);
    /* a server already up that now serves slots was not reported (set_state() is quiet about
     * servers that serve none): callers learn of it now */
    int newly = 0;
    for (unsigned i = 0; i < r->nnodes; i++)
        if (r->nodes[i]->master && (i >= nbefore || !was[i]) && r->nodes[i]->state == NODE_UP)
            newly = 1;
    kf_free(was);
    coverage_check(r);
    if (report_now) report(r, KF_REDIS_UP_RESTARTED);
    else if (newly) report(r, KF_REDIS_UP);
}

static void map_refresh(kf_redis *r) {
    if (r->mode != MODE_CLUSTER || r->refreshing) return;
    /* ask a server that is up, starting after the one asked last time: one with nothing in
     * flight first (a command queued behind a blocking XREAD or a WAIT waits for it: up to a
     * second, while the slots of a failed master go unserved), masters before replicas */
    unsigned next = r->refresh_next;
    struct node *pick = NULL;
    for (int pass = 0; pass < 4 && !pick; pass++)
        for (unsigned k = 0; k < r->nnodes && !pick; k++) {
            struct node *n = r->nodes[(next + k) % r->nnodes];
            if (n->state != NODE_UP) continue;
            if (pass < 2 && n->head) continue;
            if ((pass == 0 || pass == 2) && !n->master) continue;
            pick = n;
        }
    if (!pick) return; /* the seeds keep reconnecting; the tick asks again */
    r->refresh_next = pick->idx + 1;
    r->refreshing = 1;
    r->last_refresh_us = now_us();
    send_internal(pick, on_slots, pick, "CLUSTER SLOTS");
}

/* Every 100 ms: drop connections whose oldest command or connect attempt is overdue; keep the
 * slot map fresh; close connections to servers that no longer serve slots. */
static void on_tick(evutil_socket_t fd, short what, void *arg) {
    (void)fd, (void)what;
    kf_redis *r = arg;
    uint64_t now = now_us(), limit = (uint64_t)r->timeout_ms * 1000u;
    for (unsigned i = 0; i < r->nnodes; i++) {
        struct node *n = r->nodes[i];
        if (!n->ac) continue;
        /* progress_us may be later than now: a command queued during this tick (a map refresh
         * after the drop above) */
        if (n->head && now > n->progress_us && now - n->progress_us > limit) {
            /* No reply at all for timeout_ms while commands wait: dead, not merely busy. A slow
             * server that keeps answering keeps its connection, however long the queue. */
            kf_warn("redis %s: no reply for %d ms with %zu commands pending, reconnecting",
                    n->addr, r->timeout_ms, n->npending);
            node_drop(n, "timeout");
            if (r->mode == MODE_CLUSTER) map_refresh(r);
        } else if (!node_wanted(n) && !n->head && r->mode == MODE_CLUSTER &&
                   now - n->asked_us > 10000000u) {
            kf_info("redis %s serves no slots any more; disconnecting", n->addr);
            node_drop(n, "unavailable");
        }
    }
    coverage_check(r);
    unsigned up = r->slots_up;
    if (r->uncovered_us && !r->uncovered_told && now > r->uncovered_us &&
        now - r->uncovered_us >= 100000u) {
        r->uncovered_told = 1; /* not a moment's gap while the map changes */
        kf_warn("redis: %u of %u slots have no server up", KF_SLOTS - up, KF_SLOTS);
    }
    if (r->mode != MODE_CLUSTER) return;
    /* a read that has not come back (its server is slow, or the answer sits behind a blocking
     * command) must not hold back the next while slots go unserved: its answer, when it comes,
     * is applied like any other (it is a map the cluster had) */
    if (r->refreshing && up < KF_SLOTS && now - r->last_refresh_us >= REFRESH_STUCK_US)
        r->refreshing = 0;
    if (now - r->last_refresh_us >= (up < KF_SLOTS ? REFRESH_FAST_US : REFRESH_EVERY_US))
        map_refresh(r);
}

/* Frees the nodes (their connections are gone already). */
static void nodes_free(kf_redis *r) {
    for (unsigned i = 0; i < r->nnodes; i++) {
        event_free(r->nodes[i]->reconnect_ev);
        event_free(r->nodes[i]->check_ev);
        kf_free(r->nodes[i]);
    }
    kf_free(r->nodes);
    r->nodes = NULL;
    r->nnodes = 0;
}

kf_redis *kf_redis_new(struct event_base *base, const char *addrs, int timeout_ms, char *err,
                       size_t errlen) {
    kf_redis *r = kf_calloc(1, sizeof(*r));
    r->base = base;
    r->timeout_ms = timeout_ms;
    r->mode = MODE_UNKNOWN;
    r->use_module = 1;
    char *list = kf_strdup(addrs), *save = NULL;
    for (char *tok = strtok_r(list, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        while (*tok == ' ') tok++;
        char *colon = strrchr(tok, ':');
        char *end = NULL;
        long port = colon ? strtol(colon + 1, &end, 10) : 6379;
        size_t hl = colon ? (size_t)(colon - tok) : strlen(tok);
        if ((colon && (end == colon + 1 || *end)) || port <= 0 || port > 65535 || hl == 0 ||
            hl >= sizeof(r->nodes[0]->host)) {
            snprintf(err, errlen, "bad redis address '%s' (expected host:port)", tok);
            kf_free(list);
            nodes_free(r);
            kf_free(r);
            return NULL;
        }
        char host[256];
        memcpy(host, tok, hl);
        host[hl] = '\0';
        if (node_find(r, host, (int)port)) continue;
        node_add(r, host, (int)port)->seed = 1;
    }
    kf_free(list);
    if (r->nnodes == 0) {
        snprintf(err, errlen, "no redis address given");
        kf_free(r);
        return NULL;
    }
    r->nseeds = r->nnodes;
    /* Until the first server says what it is, everything goes to it: a stand-alone server
     * serves it, a cluster node redirects it. */
    set_all_owners(r, 0);
    r->retry_ev = evtimer_new(base, on_retry, r);
    r->wait_ev = event_new(base, -1, 0, on_wait_flush, r);
    for (unsigned i = 0; i < r->nnodes; i++) node_connect(r->nodes[i]);
    r->tick = event_new(base, -1, EV_PERSIST, on_tick, r);
    struct timeval tv = {0, 100000};
    event_add(r->tick, &tv);
    return r;
}

void kf_redis_free(kf_redis *r) {
    if (!r) return;
    for (unsigned i = 0; i < r->nnodes; i++) {
        struct node *n = r->nodes[i];
        n->master = n->seed = 0; /* no reconnects */
        if (n->ac) {
            n->drop_reason = "unavailable";
            redisAsyncFree(n->ac);
            n->ac = NULL;
        }
    }
    on_wait_flush(-1, 0, r); /* groups whose WAIT was not sent: nothing is confirmed */
    while (r->retry_head) {
        struct req *q = r->retry_head;
        r->retry_head = q->next;
        if (q->cb) q->cb(NULL, "unavailable", q->priv);
        req_free(q);
    }
    nodes_free(r);
    event_free(r->wait_ev);
    event_free(r->retry_ev);
    event_free(r->tick);
    kf_free(r);
}

void kf_redis_before_send(kf_redis *r, kf_redis_before_cb *cb, void *priv) {
    r->before_cb = cb;
    r->before_priv = priv;
}

void kf_redis_on_state(kf_redis *r, kf_redis_state_cb *cb, void *priv) {
    r->state_cb = cb;
    r->state_priv = priv;
}

void kf_redis_use_module(kf_redis *r, int on) { r->use_module = on != 0; }

void kf_redis_set_durable(kf_redis *r, int replicas, int timeout_ms) {
    r->ack_replicas = replicas > 0 ? replicas : 0;
    r->ack_timeout_ms = timeout_ms > 0 ? timeout_ms : 1;
}

unsigned kf_redis_slot(const kf_redis *r, const char *key) {
    (void)r;
    return kf_key_slot(key, strlen(key));
}

int kf_redis_is_up(const kf_redis *r, unsigned slot) {
    const struct node *n = slot_node(r, slot);
    return n && n->state == NODE_UP;
}

int kf_redis_same_server(const kf_redis *r, unsigned a, unsigned b) {
    const struct node *n = slot_node(r, a);
    return n && n == slot_node(r, b);
}

unsigned kf_redis_slots_up(const kf_redis *r) { return r->slots_up; }

int kf_redis_is_cluster(const kf_redis *r) { return r->mode; }

unsigned kf_redis_masters(const kf_redis *r, unsigned *up) {
    unsigned n = 0, u = 0;
    for (unsigned i = 0; i < r->nnodes; i++) {
        const struct node *x = r->nodes[i];
        if (!x->master) continue;
        n++;
        u += x->state == NODE_UP;
    }
    if (up) *up = u;
    return n;
}

unsigned kf_redis_batch_group(const kf_redis *r, unsigned slot) {
    return r->mode == MODE_SINGLE ? 0 : slot & (KF_SLOTS - 1);
}

const kf_redis_stats *kf_redis_get_stats(const kf_redis *r) { return &r->stats; }

size_t kf_redis_pending(const kf_redis *r) {
    size_t n = r->nretry;
    for (unsigned i = 0; i < r->nnodes; i++) n += r->nodes[i]->npending;
    return n;
}

void kf_redis_argv(kf_redis *r, unsigned slot, kf_redis_cb *cb, void *priv, int argc,
                   const char **argv, const size_t *argvlen) {
    char *cmd;
    int n = redisFormatCommandArgv(&cmd, argc, argv, argvlen);
    if (n < 0) abort();
    dispatch(r, slot, cb, priv, cmd, (size_t)n, 0);
    redisFreeCommand(cmd);
}

static void vcmd(kf_redis *r, unsigned slot, kf_redis_cb *cb, void *priv, const char *fmt,
                 va_list ap) {
    char *cmd;
    int n = redisvFormatCommand(&cmd, fmt, ap);
    if (n < 0) abort();
    dispatch(r, slot, cb, priv, cmd, (size_t)n, 0);
    redisFreeCommand(cmd);
}

void kf_redis_cmd(kf_redis *r, unsigned slot, kf_redis_cb *cb, void *priv, const char *fmt,
                  ...) {
    va_list ap;
    va_start(ap, fmt);
    vcmd(r, slot, cb, priv, fmt, ap);
    va_end(ap);
}

void kf_redis_cmd_key(kf_redis *r, const char *key, kf_redis_cb *cb, void *priv, const char *fmt,
                      ...) {
    va_list ap;
    va_start(ap, fmt);
    vcmd(r, kf_redis_slot(r, key), cb, priv, fmt, ap);
    va_end(ap);
}

static void script(kf_redis *r, unsigned slot, const char *name, kf_redis_cb *cb, void *priv,
                   int nkeys, int argc, const char **argv, const size_t *argvlen, int durable) {
    const char *sha = kf_script_sha(name);
    if (!sha) {
        kf_error("unknown redis script %s", name);
        abort();
    }
    enum { MAXARGS = 32 }; /* on the stack up to this; a batch call gets the heap */
    const char *sav[MAXARGS + 3];
    size_t sal[MAXARGS + 3];
    const char **av = sav;
    size_t *al = sal;
    if (argc > MAXARGS) {
        av = kf_malloc(sizeof(*av) * ((size_t)argc + 3));
        al = kf_malloc(sizeof(*al) * ((size_t)argc + 3));
    }
    char nk[16];
    snprintf(nk, sizeof(nk), "%d", nkeys);
    /* KEFU.MSGSEND takes the script's arguments (redis-module/kefu_redis.c) */
    const struct node *to = slot_node(r, slot & (KF_SLOTS - 1));
    int native = r->use_module && to && to->native && strcmp(name, "msg_send") == 0;
    int k = 0;
    if (native) {
        av[k] = "KEFU.MSGSEND", al[k++] = 12;
    } else {
        av[k] = "EVALSHA", al[k++] = 7;
        av[k] = sha, al[k++] = 40;
    }
    av[k] = nk, al[k] = strlen(nk), k++;
    for (int i = 0; i < argc; i++, k++) {
        av[k] = argv[i];
        al[k] = argvlen ? argvlen[i] : strlen(argv[i]);
    }
    char *cmd;
    int n = redisFormatCommandArgv(&cmd, k, av, al);
    if (n < 0) abort();
    dispatch(r, slot, cb, priv, cmd, (size_t)n, durable);
    redisFreeCommand(cmd);
    if (av != sav) {
        kf_free(av);
        kf_free(al);
    }
}

void kf_redis_script(kf_redis *r, unsigned slot, const char *name, kf_redis_cb *cb, void *priv,
                     int nkeys, int argc, const char **argv, const size_t *argvlen) {
    script(r, slot, name, cb, priv, nkeys, argc, argv, argvlen, 0);
}

void kf_redis_script_durable(kf_redis *r, unsigned slot, const char *name, kf_redis_cb *cb,
                             void *priv, int nkeys, int argc, const char **argv,
                             const size_t *argvlen) {
    script(r, slot, name, cb, priv, nkeys, argc, argv, argvlen, 1);
}
