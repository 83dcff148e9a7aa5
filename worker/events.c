/* The lifecycle stream kefu:{ev}:lifecycle, read in the consumer group `workers`. An event is
 * acknowledged once every command it caused has succeeded; one that failed, or whose worker
 * died, stays pending and is taken over by XAUTOCLAIM after claim_idle_ms. Handling an event
 * twice is harmless: every write it causes is idempotent (set adds, timers keyed by their
 * deadline, scripts that re-check state). */
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kefu/alloc.h"
#include "kefu/keys.h"
#include "kefu/log.h"
#include "kefu/service.h"
#include "kefu/token.h"
#include "wk.h"

#define GROUP "workers"

struct wk_job {
    char id[48];
    int refs;
    int failed;
};

static struct {
    unsigned slot;
    int reading;            /* an XREADGROUP is outstanding (on wk.reader) */
    int own_pending_done;   /* our own pending entries (a restart) were read back */
    char own_cursor[48];    /* paging through them */
    int claiming;
    char claim_cursor[48];
    int group_ok;           /* the last XREADGROUP was answered: the group exists, we read it */
    struct event *tick, *claim_ev;
} ev;

static void read_events(void);

/* ---- jobs ---- */

static wk_job *job_new(const char *id) {
    wk_job *j = kf_calloc(1, sizeof(*j));
    snprintf(j->id, sizeof(j->id), "%s", id);
    j->refs = 1;
    return j;
}

wk_job *wk_job_ref(wk_job *j) {
    if (j) j->refs++;
    return j;
}

void wk_job_unref(wk_job *j, int failed) {
    if (!j) return;
    j->failed |= failed;
    if (--j->refs > 0) return;
    if (j->failed) {
        wk.stats.events_failed++;
        kf_warn("event %s not completed; left pending for a retry", j->id);
    } else if (!wk.stopping) {
        kf_redis_cmd(wk.redis, ev.slot, NULL, NULL, "XACK %s " GROUP " %s", KF_KEY_LIFECYCLE,
                     j->id);
    }
    kf_free(j);
}

void wk_job_cb(const redisReply *r, const char *err, void *priv) {
    wk_job_unref(priv, err != NULL || r->type == REDIS_REPLY_ERROR);
}

/* ---- event handlers ---- */

static const char *field(const redisReply *kv, const char *name) {
    for (size_t i = 0; i + 1 < kv->elements; i += 2)
        if (kv->element[i]->type == REDIS_REPLY_STRING && !strcmp(kv->element[i]->str, name) &&
            kv->element[i + 1]->type == REDIS_REPLY_STRING)
            return kv->element[i + 1]->str;
    return "";
}

static void add_group(wk_job *j, const char *group) {
    if (!kf_group_valid(group)) return;
    char dom[KF_GROUP_MAX + 1], key[KF_KEY_MAX];
    kf_key_staff_in(key, wk_domain_of(group, dom), "groups"); /* the group's staff domain */
    kf_redis_cmd(wk.redis, kf_redis_slot(wk.redis, key), wk_job_cb, wk_job_ref(j), "SADD %s %s",
                 key, group);
    wk_assign_kick(group);
}

/* Reads what an accept or a transfer left in the meta, then counts the load and starts the
 * assignment's timers. */
struct assigned_check {
    wk_job *j;
    char conv[72];
    char agent[KF_SUB_MAX + 1];
    int count_load;
};

static void on_load_added(const redisReply *r, const char *err, void *priv) {
    wk_job *j = priv;
    json_t *js;
    char code = wk_script_json(r, err, &js);
    if (code && js) {
        json_t *self = json_object_get(js, "self");
        if (json_integer_value(json_object_get(js, "changed")) > 0 && !wk.stopping)
            wk_push_monitors(kf_push_agent_monitor(self), json_object_get(js, "monitors"));
        json_decref(js);
    }
    wk_job_unref(j, code == 0);
}

static void on_assigned_meta(const redisReply *r, const char *err, void *priv) {
    struct assigned_check *a = priv;
    int failed = err != NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 5;
    if (!failed && !wk.stopping) {
        const redisReply *st = r->element[0], *ag = r->element[1];
        if (st->type == REDIS_REPLY_STRING && !strcmp(st->str, "assigned") &&
            ag->type == REDIS_REPLY_STRING && !strcmp(ag->str, a->agent)) {
            long long seq = r->element[2]->type == REDIS_REPLY_STRING ? atoll(r->element[2]->str) : 0;
            long long at = r->element[3]->type == REDIS_REPLY_STRING ? atoll(r->element[3]->str) : 0;
            const char *channel = r->element[4]->type == REDIS_REPLY_STRING ? r->element[4]->str : "";
            if (a->count_load)
                wk_agent_load("add", a->agent, a->conv, NULL, on_load_added, wk_job_ref(a->j));
            wk_sla_assigned(a->j, a->conv, channel, seq, at);
            wk_assign_forget(a->conv);
        }
    }
    wk_job_unref(a->j, failed);
    kf_free(a);
}

static void check_assigned(wk_job *j, const char *conv, const char *agent, int count_load) {
    if (!*conv || !*agent) return;
    struct assigned_check *a = kf_calloc(1, sizeof(*a));
    a->j = wk_job_ref(j);
    snprintf(a->conv, sizeof(a->conv), "%s", conv);
    snprintf(a->agent, sizeof(a->agent), "%s", agent);
    a->count_load = count_load;
    char meta[KF_KEY_MAX];
    kf_key_conv_meta(meta, conv);
    kf_redis_cmd_key(wk.redis, meta, on_assigned_meta, a,
                     "HMGET %s state agent assign_seq assigned_at channel", meta);
}

/* A closed conversation frees its agent's capacity: release it (the gateway did already;
 * doing it again is harmless) and look at the agent's groups. */
static void on_closed_released(const redisReply *r, const char *err, void *priv) {
    wk_job *j = priv;
    json_t *js;
    char code = wk_script_json(r, err, &js);
    if (code && js && !wk.stopping) {
        json_t *self = json_object_get(js, "self");
        json_t *groups = json_object_get(self, "groups");
        size_t i;
        json_t *g;
        json_array_foreach(groups, i, g) wk_assign_kick(json_string_value(g));
        if (json_integer_value(json_object_get(js, "changed")) > 0)
            wk_push_monitors(kf_push_agent_monitor(self), json_object_get(js, "monitors"));
    }
    if (js) json_decref(js);
    wk_job_unref(j, code == 0);
}

struct queued_check {
    wk_job *j;
    char conv[72];
    long long ts; /* when it was queued */
};

static void on_queued_meta(const redisReply *r, const char *err, void *priv) {
    struct queued_check *q = priv;
    int failed = err != NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 2;
    if (!failed && !wk.stopping && r->element[0]->type == REDIS_REPLY_STRING &&
        !strcmp(r->element[0]->str, "waiting")) {
        const char *channel = r->element[1]->type == REDIS_REPLY_STRING ? r->element[1]->str : "";
        wk_sla_opened(q->j, q->conv, channel, NULL, q->ts);
    }
    wk_job_unref(q->j, failed);
    kf_free(q);
}

static void handle(wk_job *j, const redisReply *kv) {
    const char *e = field(kv, "ev"), *conv = field(kv, "conv");
    long long ts = atoll(field(kv, "ts"));
    kf_debug("event %s %s %s", j->id, e, conv);
    if (!strcmp(e, "opened")) {
        const char *group = field(kv, "group");
        add_group(j, *group ? group : wk.opt.default_group);
        wk_sla_opened(j, conv, field(kv, "channel"), field(kv, "priority"), ts);
        wk_patterns_opened(j, conv);
        wk_stats_opened(j, conv, ts);
    } else if (!strcmp(e, "queued")) {
        /* queued again later (a bot handed it over): the first-response clock may start now */
        add_group(j, field(kv, "group"));
        struct queued_check *q = kf_calloc(1, sizeof(*q));
        q->j = wk_job_ref(j);
        snprintf(q->conv, sizeof(q->conv), "%s", conv);
        q->ts = ts;
        char meta[KF_KEY_MAX];
        kf_key_conv_meta(meta, conv);
        kf_redis_cmd_key(wk.redis, meta, on_queued_meta, q, "HMGET %s state channel", meta);
    } else if (!strcmp(e, "accepted")) {
        check_assigned(j, conv, field(kv, "agent"), 1);
    } else if (!strcmp(e, "transferred")) {
        if (*field(kv, "agent"))
            check_assigned(j, conv, field(kv, "agent"), 0);
        else
            add_group(j, field(kv, "group"));
    } else if (!strcmp(e, "closed")) {
        wk_assign_forget(conv);
        wk_stats_closed(j, conv, ts);
        if (!strcmp(field(kv, "resolution"), "unresolved")) wk_patterns_unsatisfied(j, conv, "unresolved");
        if (*field(kv, "agent"))
            wk_agent_load("remove", field(kv, "agent"), conv, NULL, on_closed_released,
                          wk_job_ref(j));
    } else if (!strcmp(e, "rated")) {
        long long stars = atoll(field(kv, "stars"));
        if (stars >= 1 && stars <= 2) wk_patterns_unsatisfied(j, conv, "rated 2 or less");
        wk_stats_rated(j, conv, ts, stars);
    } else if (!strcmp(e, "customer_left")) {
        wk_callback_left(j, field(kv, "by"), ts);
    } else if (!strcmp(e, "agent")) {
        if (!strcmp(field(kv, "status"), "available")) wk_assign_kick_list(field(kv, "groups"));
    }
}

static void process_entries(const redisReply *entries, int claimed) {
    for (size_t i = 0; i < entries->elements; i++) {
        const redisReply *e = entries->element[i];
        if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 ||
            e->element[0]->type != REDIS_REPLY_STRING || e->element[1]->type != REDIS_REPLY_ARRAY)
            continue;
        wk.stats.events++;
        if (claimed) wk.stats.events_claimed++;
        wk_job *j = job_new(e->element[0]->str);
        handle(j, e->element[1]);
        wk_job_unref(j, 0);
    }
}

/* ---- reading ---- */

static void create_group(void) {
    kf_redis_cmd(wk.redis, ev.slot, NULL, NULL, "XGROUP CREATE %s " GROUP " 0 MKSTREAM",
                 KF_KEY_LIFECYCLE);
}

static void on_events(const redisReply *r, const char *err, void *priv) {
    int own = priv != NULL;
    ev.reading = 0;
    /* a read answered during the drain is left pending: this consumer after its restart, or
     * another worker after claim_idle_ms, handles it (nothing new starts while draining) */
    if (wk.stopping || wk.draining) return;
    if (err || r->type == REDIS_REPLY_ERROR) {
        ev.group_ok = 0;
        if (!err && strstr(r->str, "NOGROUP")) create_group();
        return; /* the tick retries */
    }
    ev.group_ok = 1;
    if (r->type == REDIS_REPLY_ARRAY && r->elements == 1 && r->element[0]->elements == 2) {
        const redisReply *entries = r->element[0]->element[1];
        process_entries(entries, own);
        if (own && entries->elements == 0) ev.own_pending_done = 1;
        if (own && entries->elements) {
            const redisReply *last = entries->element[entries->elements - 1];
            if (last->type == REDIS_REPLY_ARRAY && last->elements >= 1 &&
                last->element[0]->type == REDIS_REPLY_STRING)
                snprintf(ev.own_cursor, sizeof(ev.own_cursor), "%s", last->element[0]->str);
        }
    } else if (own) {
        ev.own_pending_done = 1;
    }
    read_events();
}

static void read_events(void) {
    if (ev.reading || wk.stopping || wk.draining || !kf_redis_is_up(wk.reader, ev.slot)) return;
    ev.reading = 1;
    if (!ev.own_pending_done) {
        /* After a restart under the same name: what this consumer had read but not finished. */
        kf_redis_cmd(wk.reader, ev.slot, on_events, &ev,
                     "XREADGROUP GROUP " GROUP " %s COUNT %lld STREAMS %s %s", wk.consumer,
                     wk.opt.batch, KF_KEY_LIFECYCLE, ev.own_cursor);
        return;
    }
    kf_redis_cmd(wk.reader, ev.slot, on_events, NULL,
                 "XREADGROUP GROUP " GROUP " %s COUNT %lld BLOCK 1000 STREAMS %s >", wk.consumer,
                 wk.opt.batch, KF_KEY_LIFECYCLE);
}

/* XAUTOCLAIM answers [next cursor, [entries], [deleted ids]]. */
static void on_claimed(const redisReply *r, const char *err, void *priv) {
    (void)priv;
    ev.claiming = 0;
    if (wk.stopping || wk.draining || err || r->type != REDIS_REPLY_ARRAY || r->elements < 2) {
        if (!err && r && r->type == REDIS_REPLY_ERROR && strstr(r->str, "NOGROUP")) create_group();
        return;
    }
    if (r->element[0]->type == REDIS_REPLY_STRING)
        snprintf(ev.claim_cursor, sizeof(ev.claim_cursor), "%s", r->element[0]->str);
    const redisReply *entries = r->element[1];
    if (entries->type == REDIS_REPLY_ARRAY && entries->elements) {
        kf_info("took over %zu events left pending by a stopped worker", entries->elements);
        process_entries(entries, 1);
    }
}

static void on_claim_tick(evutil_socket_t fd, short what, void *arg) {
    (void)fd, (void)what, (void)arg;
    if (ev.claiming || wk.draining || !kf_redis_is_up(wk.redis, ev.slot)) return;
    ev.claiming = 1;
    kf_redis_cmd(wk.redis, ev.slot, on_claimed, NULL,
                 "XAUTOCLAIM %s " GROUP " %s %lld %s COUNT %lld", KF_KEY_LIFECYCLE, wk.consumer,
                 wk.opt.claim_idle_ms, ev.claim_cursor, wk.opt.batch);
}

static void on_tick(evutil_socket_t fd, short what, void *arg) {
    (void)fd, (void)what, (void)arg;
    read_events();
}

int wk_events_reading(void) { return ev.group_ok && kf_redis_is_up(wk.reader, ev.slot); }

void wk_events_redis_up(void) {
    if (!kf_redis_is_up(wk.redis, ev.slot)) return;
    create_group();
    read_events();
}

void wk_events_start(void) {
    ev.slot = kf_redis_slot(wk.redis, KF_KEY_LIFECYCLE);
    snprintf(ev.claim_cursor, sizeof(ev.claim_cursor), "0-0");
    snprintf(ev.own_cursor, sizeof(ev.own_cursor), "0");
    ev.tick = wk_timer_every(100, on_tick, NULL);
    ev.claim_ev = wk_timer_every(wk.opt.claim_interval_ms, on_claim_tick, NULL);
}

void wk_events_stop(void) {
    event_free(ev.tick);
    event_free(ev.claim_ev);
}
