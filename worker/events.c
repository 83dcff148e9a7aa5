/* The lifecycle stream, in KF_PARTS partitions kefu:{ev:<k>-..}:lifecycle (include/kefu/keys.h),
 * each read in the consumer group `workers`. An event is acknowledged once every command it
 * caused has succeeded; one that failed, or whose worker died, stays pending and is taken over
 * by XAUTOCLAIM after claim_idle_ms. Handling an event twice is harmless: every write it causes
 * is idempotent (set adds, timers keyed by their deadline, scripts that re-check state).
 *
 * Reading: a command's keys must share a slot in a cluster, so the partitions cannot be read by
 * one XREADGROUP there. On a stand-alone server one blocking XREADGROUP covers them all (what
 * one stream cost); on a cluster each partition has a blocking XREADGROUP of its own, on a
 * client of its own (a blocking read holds its connection), so an event is read as soon as it
 * is written whatever its partition, and a master that is down holds up only its partitions.
 * Idle, that is one command per partition per second (the BLOCK), plus one XAUTOCLAIM per
 * partition every claim_interval_ms.
 *
 * The single stream kefu:{ev}:lifecycle of earlier versions is drained too: polled every
 * second while it exists (old gateways may still write to it during a rolling upgrade), every
 * 10 s while it does not. */
#include <event2/event.h>
#include <stdint.h>
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
#define NSTREAMS (KF_PARTS + 1) /* the partitions, then the old single stream */
#define OLD KF_PARTS
#define OLD_POLL_MS 1000
#define OLD_ABSENT_POLL_MS 10000

struct wk_job {
    char id[48];
    int refs;
    int failed;
    unsigned stream; /* index in ev.s: where it is acknowledged */
};

struct stream {
    char key[KF_KEY_MAX];
    unsigned slot;
    kf_redis *reader;       /* cluster: the client of its blocking reads (wk.reader for 0) */
    int reading;            /* a read of new entries is outstanding */
    int own_reading;        /* a read of our own pending entries is outstanding */
    int own_pending_done;   /* our own pending entries (a restart) were read back */
    char own_cursor[48];    /* paging through them */
    int claiming;
    char claim_cursor[48];
    int group_ok;           /* the last read was answered: the group exists, we read it */
    int creating;           /* an XGROUP CREATE is outstanding */
    int in_combined;        /* stand-alone: part of the combined read that is out */
    int absent;             /* the old stream: does not exist (nothing to drain) */
    int64_t next_poll;      /* the old stream: when to read it next */
};

static struct {
    struct stream s[NSTREAMS];
    int combined;           /* stand-alone: the one blocking read of every partition is out */
    struct event *tick, *claim_ev;
} ev;

static void read_events(void);

/* ---- jobs ---- */

static wk_job *job_new(const char *id, unsigned stream) {
    wk_job *j = kf_calloc(1, sizeof(*j));
    snprintf(j->id, sizeof(j->id), "%s", id);
    j->stream = stream;
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
        kf_redis_cmd(wk.redis, ev.s[j->stream].slot, NULL, NULL, "XACK %s " GROUP " %s",
                     ev.s[j->stream].key, j->id);
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
        wk_archive_closed(j, conv, ts);
        if (!strcmp(field(kv, "resolution"), "unresolved")) wk_patterns_unsatisfied(j, conv, "unresolved");
        if (*field(kv, "agent"))
            wk_agent_load("remove", field(kv, "agent"), conv, NULL, on_closed_released,
                          wk_job_ref(j));
    } else if (!strcmp(e, "rated")) {
        long long stars = atoll(field(kv, "stars"));
        if (stars >= 1 && stars <= 2) wk_patterns_unsatisfied(j, conv, "rated 2 or less");
        wk_stats_rated(j, conv, ts, stars);
        wk_archive_rated(j, conv, ts);
    } else if (!strcmp(e, "flagged")) {
        wk_alert_flagged(j, conv, field(kv, "reason"));
    } else if (!strcmp(e, "keyword")) {
        wk_patterns_keyword(j, conv, field(kv, "by"), field(kv, "keyword"));
    } else if (!strcmp(e, "customer_left")) {
        wk_callback_left(j, field(kv, "by"), ts);
    } else if (!strcmp(e, "agent")) {
        if (!strcmp(field(kv, "status"), "available")) wk_assign_kick_list(field(kv, "groups"));
    }
}

static void process_entries(const redisReply *entries, int claimed, unsigned stream) {
    for (size_t i = 0; i < entries->elements; i++) {
        const redisReply *e = entries->element[i];
        if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 ||
            e->element[0]->type != REDIS_REPLY_STRING || e->element[1]->type != REDIS_REPLY_ARRAY)
            continue;
        wk.stats.events++;
        if (claimed) wk.stats.events_claimed++;
        if (stream == OLD) wk.stats.events_old++;
        wk_job *j = job_new(e->element[0]->str, stream);
        handle(j, e->element[1]);
        wk_job_unref(j, 0);
    }
}

/* ---- reading ---- */

static void on_group_created(const redisReply *r, const char *err, void *priv) {
    struct stream *st = priv;
    st->creating = 0;
    if (err || st != &ev.s[OLD]) return;
    /* the old stream's group is created only on a stream that exists (no MKSTREAM) */
    if (r->type != REDIS_REPLY_ERROR || strstr(r->str, "BUSYGROUP")) {
        st->absent = 0;
    } else {
        st->absent = 1;
        st->next_poll = wk_now_ms() + OLD_ABSENT_POLL_MS;
    }
}

static void create_group(struct stream *st) {
    if (st->creating || !kf_redis_is_up(wk.redis, st->slot)) return;
    st->creating = 1;
    /* "0": a stream that exists before its group (the old one) is read from its start */
    if (st == &ev.s[OLD])
        kf_redis_cmd(wk.redis, st->slot, on_group_created, st, "XGROUP CREATE %s " GROUP " 0",
                     st->key);
    else
        kf_redis_cmd(wk.redis, st->slot, on_group_created, st,
                     "XGROUP CREATE %s " GROUP " 0 MKSTREAM", st->key);
}

static struct stream *stream_of(const redisReply *name) {
    if (name->type != REDIS_REPLY_STRING) return NULL;
    for (unsigned i = 0; i < NSTREAMS; i++)
        if (!strcmp(ev.s[i].key, name->str)) return &ev.s[i];
    return NULL;
}

/* What a read of new entries (blocking or not) or of our own pending ones answered: NULL on a
 * timeout, else [[stream, [entries]], ...]. */
static void got_entries(const redisReply *r, int own) {
    if (r->type != REDIS_REPLY_ARRAY) return;
    for (size_t i = 0; i < r->elements; i++) {
        const redisReply *se = r->element[i];
        if (se->type != REDIS_REPLY_ARRAY || se->elements != 2 ||
            se->element[1]->type != REDIS_REPLY_ARRAY)
            continue;
        struct stream *st = stream_of(se->element[0]);
        if (!st) continue;
        const redisReply *entries = se->element[1];
        unsigned idx = (unsigned)(st - ev.s);
        process_entries(entries, own, idx);
        if (own && entries->elements == 0) st->own_pending_done = 1;
        if (own && entries->elements) {
            const redisReply *last = entries->element[entries->elements - 1];
            if (last->type == REDIS_REPLY_ARRAY && last->elements >= 1 &&
                last->element[0]->type == REDIS_REPLY_STRING)
                snprintf(st->own_cursor, sizeof(st->own_cursor), "%s", last->element[0]->str);
        }
        if (idx == OLD && !own)
            st->next_poll = wk_now_ms() +
                            ((long long)entries->elements >= wk.opt.batch ? 0 : OLD_POLL_MS);
    }
}

/* The answer of a read: of stream st alone, or (st NULL) the combined read of every partition.
 * -1 when it failed: the tick reads again (not at once: a broken stream would spin). */
static int answered(struct stream *st, const redisReply *r, const char *err, int own) {
    unsigned first = st ? (unsigned)(st - ev.s) : 0, end = st ? first + 1 : KF_PARTS;
    int failed = err || r->type == REDIS_REPLY_ERROR;
    for (unsigned i = first; i < end; i++) {
        struct stream *s = &ev.s[i];
        if (!st && !s->in_combined) continue;
        s->group_ok = !failed;
        if (failed && !err && strstr(r->str, "NOGROUP")) create_group(s);
        if (i == OLD && failed) s->next_poll = wk_now_ms() + OLD_POLL_MS;
        if (i == OLD && !failed) s->absent = 0;
    }
    if (failed) return -1; /* the tick retries */
    /* a read of our own pending entries answers [[stream, []]] once they are done */
    got_entries(r, own);
    return 0;
}

/* A read answered during the drain is left pending: this consumer after its restart, or
 * another worker after claim_idle_ms, handles it (nothing new starts while draining). */
static void on_own(const redisReply *r, const char *err, void *priv) {
    struct stream *st = priv;
    st->own_reading = 0;
    if (wk.stopping || wk.draining) return;
    if (answered(st, r, err, 1) == 0) read_events();
}

static void on_new(const redisReply *r, const char *err, void *priv) {
    struct stream *st = priv;
    st->reading = 0;
    if (wk.stopping || wk.draining) return;
    if (answered(st, r, err, 0) == 0) read_events();
}

static void on_combined(const redisReply *r, const char *err, void *priv) {
    (void)priv;
    ev.combined = 0;
    if (wk.stopping || wk.draining) return;
    if (answered(NULL, r, err, 0) == 0) read_events();
}

static int old_due(void) {
    return wk_now_ms() >= ev.s[OLD].next_poll;
}

/* After a restart under the same name: what this consumer had read but not finished, before
 * anything new (the commands client: these reads do not block). */
static void read_own(struct stream *st) {
    if (st->own_reading || st->own_pending_done || !kf_redis_is_up(wk.redis, st->slot)) return;
    if (st == &ev.s[OLD] && st->absent && !old_due()) return;
    st->own_reading = 1;
    kf_redis_cmd(wk.redis, st->slot, on_own, st,
                 "XREADGROUP GROUP " GROUP " %s COUNT %lld STREAMS %s %s", wk.consumer,
                 wk.opt.batch, st->key, st->own_cursor);
}

static kf_redis *reader_of(unsigned p) {
    struct stream *st = &ev.s[p];
    if (!st->reader) {
        char err[256];
        /* the reader blocks up to 1 s in XREADGROUP: a reply may take that much longer. It
         * cannot fail: wk.reader was made from the same address list. */
        st->reader = kf_redis_new(wk.base, wk.opt.redis, (int)wk.opt.redis_timeout_ms + 1000, err,
                                  sizeof(err));
        if (!st->reader) kf_error("events: partition %u reader: %s", p, err);
    }
    return st->reader;
}

static void read_events(void) {
    if (wk.stopping || wk.draining) return;
    int mode = kf_redis_is_cluster(wk.reader), own_out = 0;
    for (unsigned p = 0; p < KF_PARTS; p++) own_out |= ev.s[p].own_reading;
    if (mode == 0 && !own_out) {
        /* one server: one blocking read of every partition whose pending entries of ours are
         * done, sent once none of those reads is out (a partition that cannot be read, e.g. a
         * key of the wrong type, holds up only itself; it joins the next read once it can) */
        if (!ev.combined && kf_redis_is_up(wk.reader, ev.s[0].slot)) {
            const char *argv[10 + 2 * KF_PARTS];
            char count[24];
            snprintf(count, sizeof(count), "%lld", wk.opt.batch);
            int argc = 0, n = 0;
            argv[argc++] = "XREADGROUP";
            argv[argc++] = "GROUP";
            argv[argc++] = GROUP;
            argv[argc++] = wk.consumer;
            argv[argc++] = "COUNT";
            argv[argc++] = count;
            argv[argc++] = "BLOCK";
            argv[argc++] = "1000";
            argv[argc++] = "STREAMS";
            for (unsigned p = 0; p < KF_PARTS; p++) {
                ev.s[p].in_combined = ev.s[p].own_pending_done;
                if (ev.s[p].in_combined) argv[argc++] = ev.s[p].key, n++;
            }
            for (int i = 0; i < n; i++) argv[argc++] = ">";
            if (n) {
                ev.combined = 1;
                kf_redis_argv(wk.reader, ev.s[0].slot, on_combined, NULL, argc, argv, NULL);
            }
        }
    } else if (mode == 1) {
        for (unsigned p = 0; p < KF_PARTS; p++) {
            struct stream *st = &ev.s[p];
            if (st->reading || !st->own_pending_done) continue;
            kf_redis *rd = reader_of(p);
            if (!rd || !kf_redis_is_up(rd, st->slot)) continue;
            st->reading = 1;
            kf_redis_cmd(rd, st->slot, on_new, st,
                         "XREADGROUP GROUP " GROUP " %s COUNT %lld BLOCK 1000 STREAMS %s >",
                         wk.consumer, wk.opt.batch, st->key);
        }
    }
    for (unsigned i = 0; i < NSTREAMS; i++) read_own(&ev.s[i]);
    /* the old stream: polled, never blocked on (only old gateways write it) */
    struct stream *o = &ev.s[OLD];
    if (!o->reading && o->own_pending_done && old_due() && kf_redis_is_up(wk.redis, o->slot)) {
        o->reading = 1;
        o->next_poll = wk_now_ms() + OLD_POLL_MS; /* the answer may set it sooner */
        kf_redis_cmd(wk.redis, o->slot, on_new, o,
                     "XREADGROUP GROUP " GROUP " %s COUNT %lld STREAMS %s >", wk.consumer,
                     wk.opt.batch, o->key);
    }
}

/* XAUTOCLAIM answers [next cursor, [entries], [deleted ids]]. */
static void on_claimed(const redisReply *r, const char *err, void *priv) {
    struct stream *st = priv;
    st->claiming = 0;
    if (wk.stopping || wk.draining || err || r->type != REDIS_REPLY_ARRAY || r->elements < 2) {
        if (!err && r && r->type == REDIS_REPLY_ERROR && strstr(r->str, "NOGROUP"))
            create_group(st);
        return;
    }
    if (r->element[0]->type == REDIS_REPLY_STRING)
        snprintf(st->claim_cursor, sizeof(st->claim_cursor), "%s", r->element[0]->str);
    const redisReply *entries = r->element[1];
    if (entries->type == REDIS_REPLY_ARRAY && entries->elements) {
        kf_info("took over %zu events of %s left pending by a stopped worker", entries->elements,
                st->key);
        process_entries(entries, 1, (unsigned)(st - ev.s));
    }
}

static void on_claim_tick(evutil_socket_t fd, short what, void *arg) {
    (void)fd, (void)what, (void)arg;
    if (wk.draining) return;
    for (unsigned i = 0; i < NSTREAMS; i++) {
        struct stream *st = &ev.s[i];
        if (st->claiming || !kf_redis_is_up(wk.redis, st->slot)) continue;
        if (i == OLD && st->absent) continue;
        st->claiming = 1;
        kf_redis_cmd(wk.redis, st->slot, on_claimed, st,
                     "XAUTOCLAIM %s " GROUP " %s %lld %s COUNT %lld", st->key, wk.consumer,
                     wk.opt.claim_idle_ms, st->claim_cursor, wk.opt.batch);
    }
}

static void on_tick(evutil_socket_t fd, short what, void *arg) {
    (void)fd, (void)what, (void)arg;
    read_events();
}

static int partition_reading(unsigned p) {
    const struct stream *st = &ev.s[p];
    kf_redis *rd = kf_redis_is_cluster(wk.reader) == 1 ? st->reader : wk.reader;
    return st->group_ok && rd && kf_redis_is_up(rd, st->slot);
}

unsigned wk_events_partitions_reading(void) {
    unsigned n = 0;
    for (unsigned p = 0; p < KF_PARTS; p++) n += partition_reading(p);
    return n;
}

int wk_events_reading(void) { return wk_events_partitions_reading() == KF_PARTS; }

int wk_events_old_draining(void) { return !ev.s[OLD].absent; }

void wk_events_redis_up(void) {
    for (unsigned i = 0; i < NSTREAMS; i++) create_group(&ev.s[i]);
    read_events();
}

void wk_events_start(void) {
    for (unsigned i = 0; i < NSTREAMS; i++) {
        struct stream *st = &ev.s[i];
        if (i < KF_PARTS) kf_key_lifecycle(st->key, i);
        else snprintf(st->key, sizeof(st->key), "%s", KF_KEY_LIFECYCLE_OLD);
        st->slot = kf_redis_slot(wk.redis, st->key);
        snprintf(st->claim_cursor, sizeof(st->claim_cursor), "0-0");
        snprintf(st->own_cursor, sizeof(st->own_cursor), "0");
    }
    ev.s[0].reader = wk.reader;
    ev.tick = wk_timer_every(100, on_tick, NULL);
    ev.claim_ev = wk_timer_every(wk.opt.claim_interval_ms, on_claim_tick, NULL);
}

void wk_events_stop(void) {
    event_free(ev.tick);
    event_free(ev.claim_ev);
    /* pending reads fail inside kf_redis_free; their callbacks see wk.stopping */
    for (unsigned p = 1; p < KF_PARTS; p++) {
        kf_redis_free(ev.s[p].reader);
        ev.s[p].reader = NULL;
    }
}
