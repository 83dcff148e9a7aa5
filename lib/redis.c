/* Sharded async Redis over hiredis + libevent: reconnects, timeouts, scripts, statistics. */
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
#include "kefu/shard.h"

enum shard_state { SHARD_DOWN, SHARD_CONNECTING, SHARD_LOADING, SHARD_UP };

struct req {
    kf_redis_cb *cb;
    void *priv;
    struct shard *s;
    uint64_t t0_us;
    struct req *next;
};

struct shard {
    kf_redis *r;
    unsigned idx;
    char host[256];
    int port;
    char addr[280];
    redisAsyncContext *ac;
    enum shard_state state;
    struct req *head, *tail; /* commands in flight, oldest first (Redis answers in order) */
    size_t npending;
    int scripts_pending;
    int backoff_ms;
    uint64_t connect_started_us;
    uint64_t progress_us;     /* last reply, or when the queue last went from empty to busy */
    char run_id[48];          /* the server's run_id: a new one means it restarted */
    int restarted;            /* the current connection reached a restarted server */
    const char *drop_reason;  /* set while we tear the context down ourselves */
    struct event *reconnect_ev;
};

struct kf_redis {
    struct event_base *base;
    struct shard *shards;
    unsigned n;
    int timeout_ms;
    struct event *tick;
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

static void shard_connect(struct shard *s);

static void set_state(struct shard *s, enum shard_state st) {
    int was_up = s->state == SHARD_UP;
    s->state = st;
    int up = st == SHARD_UP;
    if (was_up != up) {
        if (up)
            kf_info("redis shard %u (%s) up%s", s->idx, s->addr,
                    s->restarted ? " (the server restarted: it may have lost recent writes)" : "");
        else
            kf_warn("redis shard %u (%s) down", s->idx, s->addr);
        int how = up ? (s->restarted ? KF_REDIS_UP_RESTARTED : KF_REDIS_UP) : KF_REDIS_DOWN;
        s->restarted = 0;
        if (s->r->state_cb) s->r->state_cb(s->r, s->idx, how, s->r->state_priv);
    }
}

static void schedule_reconnect(struct shard *s) {
    struct timeval tv = {s->backoff_ms / 1000, (s->backoff_ms % 1000) * 1000};
    event_add(s->reconnect_ev, &tv);
    s->backoff_ms = s->backoff_ms * 2 > 5000 ? 5000 : s->backoff_ms * 2;
}

static void on_reconnect(evutil_socket_t fd, short what, void *arg) {
    (void)fd, (void)what;
    shard_connect(arg);
}

static struct req *pop_req(struct shard *s, struct req *expect) {
    struct req *q = s->head;
    if (q != expect) {
        /* hiredis answers in order; anything else is a bug worth crashing on in tests */
        kf_error("redis shard %u: reply out of order", s->idx);
        abort();
    }
    s->head = q->next;
    if (!s->head) s->tail = NULL;
    s->npending--;
    s->progress_us = now_us();
    return q;
}

static void on_reply(redisAsyncContext *ac, void *reply, void *privdata) {
    struct req *q = privdata;
    struct shard *s = q->s;
    (void)ac;
    pop_req(s, q);
    kf_redis_stats *st = &s->r->stats;
    const char *err = NULL;
    if (!reply) {
        err = s->drop_reason ? s->drop_reason : "unavailable";
        st->failures++;
    } else {
        uint64_t d = now_us() - q->t0_us;
        st->commands++;
        st->latency_us_sum += d;
        int b = 0;
        while (b < 11 && (double)d > kf_redis_latency_bounds_s[b] * 1e6) b++;
        st->latency_bucket[b]++;
    }
    if (q->cb) q->cb(reply, err, q->priv);
    kf_free(q);
}

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

static void fail_later(kf_redis *r, kf_redis_cb *cb, void *priv, const char *err) {
    r->stats.failures++;
    if (!cb) return;
    struct deferred *d = kf_malloc(sizeof(*d));
    d->cb = cb, d->priv = priv, d->err = err;
    struct timeval zero = {0, 0};
    if (event_base_once(r->base, -1, EV_TIMEOUT, on_deferred, d, &zero) < 0) {
        kf_free(d);
        kf_error("event_base_once failed");
        abort();
    }
}

/* Queues a formatted command on a connected context; internal commands bypass the UP check. */
static void send_formatted(struct shard *s, kf_redis_cb *cb, void *priv, const char *cmd,
                           size_t len, int internal) {
    if (!internal && s->r->before_cb) s->r->before_cb(s->r, s->idx, s->r->before_priv);
    if (!s->ac || (s->state != SHARD_UP && !(internal && s->state == SHARD_LOADING))) {
        fail_later(s->r, cb, priv, "unavailable");
        return;
    }
    struct req *q = kf_malloc(sizeof(*q));
    q->cb = cb, q->priv = priv, q->s = s, q->t0_us = now_us(), q->next = NULL;
    if (redisAsyncFormattedCommand(s->ac, on_reply, q, cmd, len) != REDIS_OK) {
        kf_free(q);
        fail_later(s->r, cb, priv, "unavailable");
        return;
    }
    if (s->tail) {
        s->tail->next = q;
    } else {
        s->head = q;
        s->progress_us = q->t0_us;
    }
    s->tail = q;
    s->npending++;
}

static void shard_drop(struct shard *s, const char *reason) {
    if (!s->ac) return;
    redisAsyncContext *ac = s->ac;
    s->drop_reason = reason;
    redisAsyncFree(ac); /* fails every pending command with a NULL reply */
    s->drop_reason = NULL;
    s->ac = NULL;
    set_state(s, SHARD_DOWN);
    schedule_reconnect(s);
}

static void on_drop_later(evutil_socket_t fd, short what, void *arg) {
    (void)fd, (void)what;
    shard_drop(arg, "unavailable");
}

static void on_script_loaded(const redisReply *reply, const char *err, void *priv) {
    struct shard *s = priv;
    if (err || !reply || reply->type == REDIS_REPLY_ERROR) {
        kf_error("redis shard %u: SCRIPT LOAD failed: %s", s->idx,
                 err ? err : reply ? reply->str : "?");
        struct timeval zero = {0, 0};
        event_base_once(s->r->base, -1, EV_TIMEOUT, on_drop_later, s, &zero);
        return;
    }
    if (--s->scripts_pending == 0 && s->state == SHARD_LOADING) {
        s->backoff_ms = 100;
        set_state(s, SHARD_UP);
    }
}

/* Formats (hiredis printf-style) and queues a command; internal ones may run while scripts load. */
static void send_vfmt(struct shard *s, kf_redis_cb *cb, void *priv, int internal, const char *fmt,
                      va_list ap) {
    char *cmd;
    int n = redisvFormatCommand(&cmd, fmt, ap);
    if (n < 0) abort();
    send_formatted(s, cb, priv, cmd, (size_t)n, internal);
    redisFreeCommand(cmd);
}

static void send_internal(struct shard *s, kf_redis_cb *cb, void *priv, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    send_vfmt(s, cb, priv, 1, fmt, ap);
    va_end(ap);
}

/* INFO server, sent first on every connection: remembers the run_id, which changes when the
 * server restarts (and may then have lost what it had not persisted). */
static void on_server_info(const redisReply *reply, const char *err, void *priv) {
    struct shard *s = priv;
    if (err || !reply || reply->type != REDIS_REPLY_STRING)
        return;
    const char *p = strstr(reply->str, "run_id:");
    if (!p) return;
    p += 7;
    size_t n = strcspn(p, "\r\n");
    if (n >= sizeof(s->run_id)) n = sizeof(s->run_id) - 1;
    if (s->run_id[0] && (strlen(s->run_id) != n || memcmp(s->run_id, p, n) != 0)) s->restarted = 1;
    memcpy(s->run_id, p, n);
    s->run_id[n] = '\0';
}

static void on_connect(const redisAsyncContext *ac, int status) {
    struct shard *s = ac->data;
    if (status != REDIS_OK) {
        kf_debug("redis shard %u (%s): connect failed: %s", s->idx, s->addr, ac->errstr);
        s->ac = NULL; /* hiredis frees the context after this callback */
        s->state = SHARD_DOWN;
        schedule_reconnect(s);
        return;
    }
    s->state = SHARD_LOADING;
    s->scripts_pending = 0;
    send_internal(s, on_server_info, s, "INFO server");
    for (int i = 0; kf_script_name_at(i); i++) {
        size_t len;
        const char *src = kf_script_source(kf_script_name_at(i), &len);
        s->scripts_pending++;
        send_internal(s, on_script_loaded, s, "SCRIPT LOAD %b", src, len);
    }
    if (s->scripts_pending == 0) {
        s->backoff_ms = 100;
        set_state(s, SHARD_UP);
    }
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

void kf_redis_attach(redisAsyncContext *ac, struct event_base *base) {
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

static void on_disconnect(const redisAsyncContext *ac, int status) {
    struct shard *s = ac->data;
    (void)status;
    if (s->drop_reason) return; /* shard_drop() handles the rest */
    s->ac = NULL;
    kf_debug("redis shard %u (%s) disconnected: %s", s->idx, s->addr, ac->errstr);
    set_state(s, SHARD_DOWN);
    schedule_reconnect(s);
}

static void shard_connect(struct shard *s) {
    redisAsyncContext *ac = redisAsyncConnect(s->host, s->port);
    if (!ac || ac->err) {
        kf_debug("redis shard %u (%s): %s", s->idx, s->addr, ac ? ac->errstr : "out of memory");
        if (ac) redisAsyncFree(ac);
        schedule_reconnect(s);
        return;
    }
    ac->data = s;
    s->ac = ac;
    s->state = SHARD_CONNECTING;
    s->connect_started_us = now_us();
    kf_redis_attach(ac, s->r->base);
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
}

/* Every 100 ms: drop connections whose oldest command or connect attempt is overdue. */
static void on_tick(evutil_socket_t fd, short what, void *arg) {
    (void)fd, (void)what;
    kf_redis *r = arg;
    uint64_t now = now_us(), limit = (uint64_t)r->timeout_ms * 1000u;
    for (unsigned i = 0; i < r->n; i++) {
        struct shard *s = &r->shards[i];
        if (!s->ac) continue;
        if (s->state == SHARD_CONNECTING && now - s->connect_started_us > limit) {
            kf_warn("redis shard %u (%s): connect timed out", s->idx, s->addr);
            /* No callbacks are pending on a context that never connected. */
            redisAsyncContext *ac = s->ac;
            s->drop_reason = "timeout";
            s->ac = NULL;
            redisAsyncFree(ac);
            s->drop_reason = NULL;
            s->state = SHARD_DOWN;
            schedule_reconnect(s);
        } else if (s->head && now - s->progress_us > limit) {
            /* No reply at all for timeout_ms while commands wait: dead, not merely busy. A slow
             * server that keeps answering keeps its connection, however long the queue. */
            kf_warn("redis shard %u (%s): no reply for %d ms with %zu commands pending, "
                    "reconnecting", s->idx, s->addr, r->timeout_ms, s->npending);
            shard_drop(s, "timeout");
        }
    }
}

kf_redis *kf_redis_new(struct event_base *base, const char *addrs, int timeout_ms, char *err,
                       size_t errlen) {
    kf_redis *r = kf_calloc(1, sizeof(*r));
    r->base = base;
    r->timeout_ms = timeout_ms;
    char *list = kf_strdup(addrs), *save = NULL;
    for (char *tok = strtok_r(list, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        while (*tok == ' ') tok++;
        char *colon = strrchr(tok, ':');
        char *end = NULL;
        long port = colon ? strtol(colon + 1, &end, 10) : 6379;
        if ((colon && (end == colon + 1 || *end)) || port <= 0 || port > 65535 ||
            (colon ? (size_t)(colon - tok) : strlen(tok)) >= sizeof(r->shards[0].host) ||
            (colon && colon == tok)) {
            snprintf(err, errlen, "bad redis address '%s' (expected host:port)", tok);
            kf_free(list);
            kf_free(r->shards);
            kf_free(r);
            return NULL;
        }
        r->shards = kf_realloc(r->shards, sizeof(*r->shards) * (r->n + 1));
        struct shard *s = &r->shards[r->n];
        memset(s, 0, sizeof(*s));
        s->r = r;
        s->idx = r->n;
        size_t hl = colon ? (size_t)(colon - tok) : strlen(tok);
        memcpy(s->host, tok, hl);
        s->host[hl] = '\0';
        s->port = (int)port;
        snprintf(s->addr, sizeof(s->addr), "%s:%d", s->host, s->port);
        r->n++;
    }
    kf_free(list);
    if (r->n == 0) {
        snprintf(err, errlen, "no redis address given");
        kf_free(r);
        return NULL;
    }
    for (unsigned i = 0; i < r->n; i++) {
        struct shard *s = &r->shards[i];
        s->backoff_ms = 100;
        s->reconnect_ev = evtimer_new(base, on_reconnect, s);
        shard_connect(s);
    }
    r->tick = event_new(base, -1, EV_PERSIST, on_tick, r);
    struct timeval tv = {0, 100000};
    event_add(r->tick, &tv);
    return r;
}

void kf_redis_free(kf_redis *r) {
    if (!r) return;
    for (unsigned i = 0; i < r->n; i++) {
        struct shard *s = &r->shards[i];
        if (s->ac) {
            s->drop_reason = "unavailable";
            redisAsyncFree(s->ac);
            s->ac = NULL;
        }
        event_free(s->reconnect_ev);
    }
    event_free(r->tick);
    kf_free(r->shards);
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

unsigned kf_redis_nshards(const kf_redis *r) { return r->n; }

unsigned kf_redis_shard(const kf_redis *r, const char *key) {
    return kf_key_shard(key, strlen(key), r->n);
}

int kf_redis_is_up(const kf_redis *r, unsigned shard) {
    return shard < r->n && r->shards[shard].state == SHARD_UP;
}

int kf_redis_all_up(const kf_redis *r) {
    for (unsigned i = 0; i < r->n; i++)
        if (r->shards[i].state != SHARD_UP) return 0;
    return 1;
}

const char *kf_redis_addr(const kf_redis *r, unsigned shard) { return r->shards[shard].addr; }

void kf_redis_hostport(const kf_redis *r, unsigned shard, const char **host, int *port) {
    *host = r->shards[shard].host;
    *port = r->shards[shard].port;
}

const kf_redis_stats *kf_redis_get_stats(const kf_redis *r) { return &r->stats; }

size_t kf_redis_pending(const kf_redis *r) {
    size_t n = 0;
    for (unsigned i = 0; i < r->n; i++) n += r->shards[i].npending;
    return n;
}

void kf_redis_argv(kf_redis *r, unsigned shard, kf_redis_cb *cb, void *priv, int argc,
                   const char **argv, const size_t *argvlen) {
    char *cmd;
    int n = redisFormatCommandArgv(&cmd, argc, argv, argvlen);
    if (n < 0) abort();
    send_formatted(&r->shards[shard], cb, priv, cmd, (size_t)n, 0);
    redisFreeCommand(cmd);
}

static void vcmd(kf_redis *r, unsigned shard, kf_redis_cb *cb, void *priv, const char *fmt,
                 va_list ap) {
    send_vfmt(&r->shards[shard], cb, priv, 0, fmt, ap);
}

void kf_redis_cmd(kf_redis *r, unsigned shard, kf_redis_cb *cb, void *priv, const char *fmt,
                  ...) {
    va_list ap;
    va_start(ap, fmt);
    vcmd(r, shard, cb, priv, fmt, ap);
    va_end(ap);
}

void kf_redis_cmd_key(kf_redis *r, const char *key, kf_redis_cb *cb, void *priv, const char *fmt,
                      ...) {
    va_list ap;
    va_start(ap, fmt);
    vcmd(r, kf_redis_shard(r, key), cb, priv, fmt, ap);
    va_end(ap);
}

void kf_redis_script(kf_redis *r, unsigned shard, const char *name, kf_redis_cb *cb, void *priv,
                     int nkeys, int argc, const char **argv, const size_t *argvlen) {
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
    av[0] = "EVALSHA", al[0] = 7;
    av[1] = sha, al[1] = 40;
    av[2] = nk, al[2] = strlen(nk);
    for (int i = 0; i < argc; i++) {
        av[3 + i] = argv[i];
        al[3 + i] = argvlen ? argvlen[i] : strlen(argv[i]);
    }
    kf_redis_argv(r, shard, cb, priv, argc + 3, av, al);
    if (av != sav) {
        kf_free(av);
        kf_free(al);
    }
}
