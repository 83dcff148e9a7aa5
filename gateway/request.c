/* Request plumbing shared by the request modules (handlers.c, agent.c, bot.c): the request
 * context, answers, field readers, script answers, follow-up writes kept while their Redis
 * server is down, lifecycle events, queueing, and the hooks of the message path. */
#include "request.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>

#include "kefu/alloc.h"
#include "kefu/keys.h"
#include "kefu/log.h"
#include "kefu/redis.h"
#include "kefu/service.h"
#include "kefu/slot.h"

/* ---- the request context ---- */

req_ctx *gw_ctx_new(gw_conn *c, const json_t *req) {
    req_ctx *x = kf_calloc(1, sizeof(*x));
    x->c = c;
    gw_conn_ref(c);
    if (req) x->req = json_incref((json_t *)req);
    return x;
}

void gw_ctx_free(req_ctx *x) {
    gw_conn_unref(x->c);
    if (x->req) json_decref(x->req);
    if (x->acc) json_decref(x->acc);
    kf_free(x->err_code);
    kf_free(x);
}

/* ---- answers ---- */

void gw_reply_error(gw_conn *c, const json_t *req, const char *code, const char *message) {
    GW_M->errors[gw_metrics_error_index(code)]++;
    if (!gw_conn_open(c)) return;
    json_t *e = json_pack("{s:s, s:s, s:s}", "type", "error", "code", code, "message", message);
    if (req && !json_is_null(req)) json_object_set(e, "req", (json_t *)req);
    /* how long to wait before trying again: about one reconnection attempt of the Redis client,
     * or for an overloaded gateway to catch up */
    if (!strcmp(code, "unavailable") || !strcmp(code, "overloaded"))
        json_object_set_new(e, "retry_ms", json_integer(1000));
    gw_conn_send(c, e);
    json_decref(e);
}

/* Sends {"type":"ok","req":..} merged with fields (stolen, may be NULL). */
void gw_reply_ok(gw_conn *c, const json_t *req, json_t *fields) {
    json_t *o = fields ? fields : json_object();
    json_object_set_new(o, "type", json_string("ok"));
    if (req) json_object_set(o, "req", (json_t *)req);
    if (gw_conn_alive(c)) gw_conn_send(c, o);
    json_decref(o);
}

static const char *error_message(const char *code) {
    if (!strcmp(code, "forbidden")) return "you may not do this in this conversation";
    if (!strcmp(code, "not_found")) return "no such conversation";
    if (!strcmp(code, "conflict")) return "the conversation's state does not allow this";
    if (!strcmp(code, "unavailable")) return "storage unavailable; nothing was stored, retry later";
    return code;
}

void gw_reply_failure(req_ctx *x) {
    if (x->err_code)
        gw_reply_error(x->c, x->req, x->err_code, error_message(x->err_code));
    else
        gw_reply_error(x->c, x->req, "unavailable", error_message("unavailable"));
}

/* ---- field validation: each answers bad_request itself and returns -1 ---- */

int gw_get_str(gw_conn *c, const json_t *msg, const char *name, int required, size_t maxlen,
               const char **out) {
    json_t *v = json_object_get(msg, name);
    char m[96];
    if (!v || json_is_null(v)) {
        if (!required) {
            *out = NULL;
            return 0;
        }
        snprintf(m, sizeof(m), "missing field '%s'", name);
        gw_reply_error(c, json_object_get(msg, "req"), "bad_request", m);
        return -1;
    }
    if (!json_is_string(v)) {
        snprintf(m, sizeof(m), "field '%s' must be a string", name);
        gw_reply_error(c, json_object_get(msg, "req"), "bad_request", m);
        return -1;
    }
    size_t len = json_string_length(v);
    if (len > maxlen) {
        snprintf(m, sizeof(m), "field '%s' is longer than %zu bytes", name, maxlen);
        gw_reply_error(c, json_object_get(msg, "req"), "too_large", m);
        return -1;
    }
    if (required && len == 0) {
        snprintf(m, sizeof(m), "field '%s' is empty", name);
        gw_reply_error(c, json_object_get(msg, "req"), "bad_request", m);
        return -1;
    }
    if (memchr(json_string_value(v), '\0', len)) {
        snprintf(m, sizeof(m), "field '%s' contains a NUL", name);
        gw_reply_error(c, json_object_get(msg, "req"), "bad_request", m);
        return -1;
    }
    *out = json_string_value(v);
    return 0;
}

int gw_id_chars_ok(const char *s) {
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && *s != '-' && *s != '_') return 0;
    return 1;
}

int gw_get_conv(gw_conn *c, const json_t *msg, req_ctx **xp) {
    const char *conv;
    if (gw_get_str(c, msg, "conv", 1, CONV_ID_MAX, &conv) < 0) return -1;
    if (!gw_id_chars_ok(conv)) {
        gw_reply_error(c, json_object_get(msg, "req"), "bad_request", "field 'conv' is not a conversation id");
        return -1;
    }
    *xp = gw_ctx_new(c, json_object_get(msg, "req"));
    snprintf((*xp)->conv, sizeof((*xp)->conv), "%s", conv);
    return 0;
}

int gw_get_int(gw_conn *c, const json_t *msg, const char *name, long long def, long long min,
               long long max, long long *out) {
    json_t *v = json_object_get(msg, name);
    if (!v || json_is_null(v)) {
        *out = def;
        return 0;
    }
    char m[96];
    if (!json_is_integer(v) || json_integer_value(v) < min || json_integer_value(v) > max) {
        snprintf(m, sizeof(m), "field '%s' must be an integer in %lld..%lld", name, min, max);
        gw_reply_error(c, json_object_get(msg, "req"), "bad_request", m);
        return -1;
    }
    *out = json_integer_value(v);
    return 0;
}

/* ---- helpers around scripts and pushes ---- */

json_t *gw_from_obj(const gw_conn *c) {
    return json_pack("{s:s, s:s, s:s}", "id", c->ident.sub, "role",
                     kf_role_name((kf_role)c->ident.role), "name", c->ident.name);
}

int gw_script_result(req_ctx *x, const redisReply *r, const char *err, size_t nstr) {
    kf_script_ans a;
    if (kf_script_parse(r, err, nstr, &a)) return 0;
    if (a.kind == KF_SCRIPT_UNAVAILABLE) {
        x->err = err;
        return -1;
    }
    if (a.kind == KF_SCRIPT_BROKEN && a.detail) kf_error("redis script error: %s", a.detail);
    x->err_code = kf_strdup(a.code);
    return -1;
}

/* Collects user ids from reply elements [from..) (non-empty, distinct), except `except`. */
size_t gw_members(const redisReply *r, size_t from, const char *except, const char **out,
                  size_t max) {
    size_t n = 0;
    for (size_t i = from; i < r->elements && n < max; i++) {
        const redisReply *e = r->element[i];
        if (e->type != REDIS_REPLY_STRING || e->len == 0) continue;
        if (except && strcmp(e->str, except) == 0) continue;
        int dup = 0;
        for (size_t k = 0; k < n; k++) dup |= strcmp(out[k], e->str) == 0;
        if (!dup) out[n++] = e->str;
    }
    return n;
}

/* ---- kept writes: follow-up writes of a request already answered ----
 * A lifecycle event, a transferred conversation's queue entry, a user's conversation set: the
 * request they follow was answered ok, so they must not be lost when their Redis server is
 * down for a while (a master failing over). One that fails is kept and tried again every
 * 500 ms until it is stored; later writes for the same slot wait behind it (order per slot),
 * writes for other slots are not held up. At most KEPT_MAX are kept (kefu_redis_kept,
 * kefu_redis_kept_dropped_total). A write that timed out may have been stored already: these
 * are set operations or, for lifecycle events, handled idempotently by the worker. */
#define KEPT_MAX 100000
struct kept {
    struct kept *next;
    unsigned slot;
    int out; /* sent, not answered */
    int argc;
    size_t *lens;
    char **argv;
};
static struct kept *kept_head, *kept_tail; /* kept, oldest first */
static uint32_t kept_waiting[KF_SLOTS];   /* per slot: kept entries */
static struct event *kept_ev;
static int kept_stopping;

static void kept_free(struct kept *k) {
    for (int i = 0; i < k->argc; i++) kf_free(k->argv[i]);
    kf_free(k->argv);
    kf_free(k->lens);
    kf_free(k);
}

static void kept_send(struct kept *k);

static void kept_append(struct kept *k) {
    k->next = NULL;
    if (kept_tail) kept_tail->next = k;
    else kept_head = k;
    kept_tail = k;
    kept_waiting[k->slot]++;
    GW_M->redis_kept++;
    if (!evtimer_pending(kept_ev, NULL)) {
        struct timeval tv = {0, 500000};
        evtimer_add(kept_ev, &tv);
    }
}

/* The oldest kept entry of a slot (NULL when none). */
static struct kept *kept_first(unsigned slot) {
    if (!kept_waiting[slot]) return NULL;
    for (struct kept *k = kept_head; k; k = k->next)
        if (k->slot == slot) return k;
    return NULL;
}

static void kept_remove(struct kept *k) {
    struct kept **pp = &kept_head, *prev = NULL;
    while (*pp && *pp != k) prev = *pp, pp = &(*pp)->next;
    if (!*pp) return;
    *pp = k->next;
    if (kept_tail == k) kept_tail = prev;
    kept_waiting[k->slot]--;
    GW_M->redis_kept--;
}

static void on_kept(const redisReply *r, const char *err, void *priv) {
    struct kept *k = priv;
    int ok = !err && r->type != REDIS_REPLY_ERROR;
    if (!ok && !err) kf_error("kept write %s failed: %s", k->argv[0], r->str);
    int was_kept = k->out == 2;
    k->out = 0;
    if (ok || !err || kept_stopping) { /* stored (or refused for good) */
        unsigned slot = k->slot;
        if (was_kept) kept_remove(k);
        kept_free(k);
        struct kept *n = kept_stopping ? NULL : kept_first(slot);
        if (n && !n->out) kept_send(n); /* the slot answers again: the next one at once */
        return;
    }
    if (was_kept) return; /* stays first of its slot; the timer tries again */
    if (GW_M->redis_kept >= KEPT_MAX) {
        GW_M->redis_kept_dropped++;
        kept_free(k);
        return;
    }
    kept_append(k);
}

static void kept_send(struct kept *k) {
    k->out = k->next || k == kept_tail ? 2 : 1; /* 2: in the kept list */
    kf_redis_argv(gw->redis, k->slot, on_kept, k, k->argc, (const char **)k->argv, k->lens);
}

/* Every 500 ms while writes are kept: the oldest one of each slot is tried again. */
static void on_kept_retry(evutil_socket_t fd, short what, void *arg) {
    (void)fd, (void)what, (void)arg;
    static uint32_t seen[KF_SLOTS], pass; /* slots whose oldest entry this pass has met */
    pass++;
    for (struct kept *k = kept_head; k; k = k->next) {
        if (seen[k->slot] == pass) continue;
        seen[k->slot] = pass;
        if (!k->out) kept_send(k);
    }
    if (kept_head) {
        struct timeval tv = {0, 500000};
        evtimer_add(kept_ev, &tv);
    }
}

void gw_redis_kept(const char *key, int argc, const char **argv) {
    if (!kept_ev) kept_ev = evtimer_new(gw->base, on_kept_retry, NULL);
    struct kept *k = kf_calloc(1, sizeof(*k));
    k->slot = kf_redis_slot(gw->redis, key);
    k->argc = argc;
    k->argv = kf_malloc(sizeof(char *) * (size_t)argc);
    k->lens = kf_malloc(sizeof(size_t) * (size_t)argc);
    for (int i = 0; i < argc; i++) {
        k->lens[i] = strlen(argv[i]);
        k->argv[i] = kf_malloc(k->lens[i] + 1);
        memcpy(k->argv[i], argv[i], k->lens[i] + 1);
    }
    if (kept_waiting[k->slot]) { /* behind the ones of its slot that wait */
        if (GW_M->redis_kept >= KEPT_MAX) {
            GW_M->redis_kept_dropped++;
            kept_free(k);
            return;
        }
        kept_append(k);
        return;
    }
    kept_send(k);
}

/* Shutdown: what is still kept is lost (logged); writes out are freed by their callbacks. */
void gw_redis_kept_stop(void) {
    if (GW_M->redis_kept)
        kf_warn("%lld kept writes (lifecycle events, queue entries) not stored before exit",
                (long long)GW_M->redis_kept);
    kept_stopping = 1;
    for (struct kept *k = kept_head, *next; k; k = next) {
        next = k->next;
        kept_waiting[k->slot]--;
        GW_M->redis_kept--;
        if (k->out) k->out = 1; /* no longer in the list: its callback just frees it */
        else kept_free(k);
    }
    kept_head = kept_tail = NULL;
    if (kept_ev) event_free(kept_ev);
    kept_ev = NULL;
}

void gw_lifecycle(const char *ev, const char *conv, const gw_conn *c, const char *k1,
                  const char *v1, const char *k2, const char *v2) {
    char ts[24];
    snprintf(ts, sizeof(ts), "%lld", (long long)gw_now_ms());
    /* the conversation's partition; an event without one (agent status, customer_left) goes
     * by its subject */
    char key[KF_KEY_MAX];
    kf_key_lifecycle(key, kf_part_of(*conv ? conv : c->ident.sub));
    const char *argv[18] = {"XADD", key, "MAXLEN", "~", "1000000", "*", "ev", ev,
                            "conv", conv, "by", c->ident.sub, "ts", ts};
    int argc = 14;
    if (k1) argv[argc++] = k1, argv[argc++] = v1;
    if (k2) argv[argc++] = k2, argv[argc++] = v2;
    gw_redis_kept(key, argc, argv);
}

void gw_redis_kept_member(const char *key, const char *verb, const char *member) {
    const char *argv[] = {verb, key, member};
    gw_redis_kept(key, 3, argv);
}

/* Runs a script against the key's slot. */
void gw_conv_script(req_ctx *x, const char *script, const char *key, kf_redis_cb *cb, int argc,
                    const char **argv, const size_t *lens) {
    const char *av[1 + GW_SCRIPT_ARGS];
    size_t al[1 + GW_SCRIPT_ARGS];
    if (argc < 0 || argc > GW_SCRIPT_ARGS) abort(); /* a caller's bug, as kf_conv_script */
    av[0] = key;
    al[0] = strlen(key);
    for (int i = 0; i < argc; i++) {
        av[1 + i] = argv[i];
        al[1 + i] = lens ? lens[i] : strlen(argv[i]);
    }
    kf_redis_script(gw->redis, kf_redis_slot(gw->redis, key), script, cb, x, 1, argc + 1, av, al);
}

/* ---- queueing: priority, then customer level (VIP first), then FIFO (kefu/service.h) ---- */

/* Strictly increasing per process in steps of the score's 64 us tick, so conversations of one
 * class queued here stay FIFO. */
long long gw_queue_time_now(void) {
    static long long last_tick;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    long long t = (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
    long long tick = (t - KF_QUEUE_EPOCH_US) / 64;
    if (tick <= last_tick) tick = last_tick + 1;
    last_tick = tick;
    return KF_QUEUE_EPOCH_US + tick * 64;
}

void gw_queue_add(const char *conv, const char *group, int prio, int level, long long t_us,
                  kf_redis_cb *cb, void *priv) {
    char queue[KF_KEY_MAX];
    kf_key_queue(queue, group);
    long long score = kf_queue_score(prio < 0 ? KF_PRIO_MEDIUM : (kf_priority)prio, level, t_us);
    kf_redis_cmd_key(gw->redis, queue, cb, priv, "ZADD %s %lld %s", queue, score, conv);
}

struct enqueue_args {
    char conv[CONV_ID_MAX + 1];
    char group[64];
    kf_redis_cb *cb;
    void *priv;
};

static void on_enqueue_meta(const redisReply *r, const char *err, void *priv) {
    struct enqueue_args *ea = priv;
    if (err || r->type != REDIS_REPLY_ARRAY || r->elements != 3) {
        if (ea->cb) ea->cb(r, err ? err : "unavailable", ea->priv);
        kf_free(ea);
        return;
    }
    const redisReply *p = r->element[0], *l = r->element[1], *q = r->element[2];
    int prio = kf_priority_parse(p->type == REDIS_REPLY_STRING ? p->str : NULL);
    int level = l->type == REDIS_REPLY_STRING ? atoi(l->str) : 0;
    long long t = q->type == REDIS_REPLY_STRING ? atoll(q->str) : 0;
    if (t <= 0) {
        char meta[KF_KEY_MAX];
        t = gw_queue_time_now();
        kf_key_conv_meta(meta, ea->conv);
        kf_redis_cmd_key(gw->redis, meta, NULL, NULL, "HSET %s queued_us %lld", meta, t);
    }
    gw_queue_add(ea->conv, ea->group, prio, level, t, ea->cb, ea->priv);
    /* Tells the worker a group has one more conversation waiting. */
    char ts[24];
    snprintf(ts, sizeof(ts), "%lld", (long long)gw_now_ms());
    char key[KF_KEY_MAX];
    kf_key_lifecycle(key, kf_part_of(ea->conv));
    const char *argv[] = {"XADD", key, "MAXLEN", "~", "1000000", "*", "ev", "queued",
                          "conv", ea->conv, "by", "", "ts", ts, "group", ea->group};
    gw_redis_kept(key, 16, argv);
    kf_free(ea);
}

/* Queues in queue order: reads the conversation's priority, level and original waiting start
 * (queued_us, set now when absent) from its meta first. */
void gw_conv_enqueue(const char *conv, const char *group, kf_redis_cb *cb, void *priv) {
    struct enqueue_args *ea = kf_calloc(1, sizeof(*ea));
    snprintf(ea->conv, sizeof(ea->conv), "%s", conv);
    snprintf(ea->group, sizeof(ea->group), "%s", group);
    ea->cb = cb;
    ea->priv = priv;
    char meta[KF_KEY_MAX];
    kf_key_conv_meta(meta, conv);
    kf_redis_cmd_key(gw->redis, meta, on_enqueue_meta, ea, "HMGET %s priority level queued_us",
                     meta);
}

/* ---- hooks of the message path ----
 * The request modules store; whoever follows what they store (the bots: gateway/bot.c) registers
 * here instead of being called by name, so conversations and messages know nothing of bots. */

#define HOOKS_MAX 4
static const gw_hooks *hooks[HOOKS_MAX];

void gw_hooks_register(const gw_hooks *h) {
    for (int i = 0; i < HOOKS_MAX; i++)
        if (!hooks[i]) {
            hooks[i] = h;
            return;
        }
    abort(); /* more modules than places: raise HOOKS_MAX */
}

void gw_hooks_unregister(const gw_hooks *h) {
    for (int i = 0; i < HOOKS_MAX; i++)
        if (hooks[i] == h) hooks[i] = NULL;
}

const char *gw_hooks_new_state(void) {
    for (int i = 0; i < HOOKS_MAX; i++)
        if (hooks[i] && hooks[i]->new_state) return hooks[i]->new_state;
    return "waiting";
}

void gw_hooks_conv_opened(const char *conv) {
    for (int i = 0; i < HOOKS_MAX; i++)
        if (hooks[i] && hooks[i]->conv_opened) hooks[i]->conv_opened(conv);
}

void gw_hooks_message_stored(const gw_conn *from, const char *conv, const char *text, size_t len) {
    for (int i = 0; i < HOOKS_MAX; i++)
        if (hooks[i] && hooks[i]->message_stored) hooks[i]->message_stored(from, conv, text, len);
}
