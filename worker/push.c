/* The worker's Redis helpers: script calls on the {staff} and conversation slots, pushes to
 * users and monitoring supervisors through the node inboxes, and the configuration it publishes
 * for the gateways and the {staff} scripts. */
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kefu/alloc.h"
#include "kefu/keys.h"
#include "kefu/log.h"
#include "kefu/route.h"
#include "kefu/service.h"
#include "wk.h"

void wk_staff_script(const char *name, kf_redis_cb *cb, void *priv, int argc, const char **argv) {
    kf_staff_script(wk.redis, name, cb, priv, argc, argv);
}

void wk_conv_script(const char *conv, const char *name, kf_redis_cb *cb, void *priv, int argc,
                    const char **argv) {
    kf_conv_script(wk.redis, conv, name, cb, priv, argc, argv);
}

char wk_script_json(const redisReply *r, const char *err, json_t **json) {
    *json = NULL;
    kf_script_ans a;
    char tag = kf_script_parse(r, err, 1, &a);
    if (a.kind == KF_SCRIPT_BROKEN && a.detail) kf_error("redis script error: %s", a.detail);
    if (!tag) return 0;
    if (r->elements >= 2 && r->element[1]->type == REDIS_REPLY_STRING && r->element[1]->len) {
        *json = json_loadb(r->element[1]->str, r->element[1]->len, 0, NULL);
        if (!*json) kf_error("script answer is not JSON");
    }
    return tag;
}

void wk_push(json_t *payload, const char *const *users, size_t n) {
    char *text = json_dumps(payload, JSON_COMPACT);
    json_decref(payload);
    if (!text) return;
    kf_route_push(wk.redis, text, strlen(text), users, n, wk.opt.inbox_maxlen, wk_now_ms());
    free(text);
}

/* ---- monitoring supervisors, when no script handed the list ----
 * A supervisor whose monitor.subscribe was answered before the change that causes a push must
 * get that push, so the list is read after the push was decided, never taken from a cache (a
 * cache read before the subscription skipped the newest subscriber). Pushes decided while a
 * read is outstanding wait for the next one: one ZRANGEBYSCORE per round trip however many
 * pushes, and the pushes leave in the order they were decided. */

struct mpush {
    json_t *payload;
    struct mpush *next;
};

static struct {
    struct mpush *reading;  /* answered by the outstanding read */
    struct mpush *waiting;  /* decided since it was sent: the next read */
    struct mpush **waiting_tail;
} mon = {NULL, NULL, &mon.waiting};

static void mpush_free(struct mpush *m) {
    while (m) {
        struct mpush *next = m->next;
        json_decref(m->payload);
        kf_free(m);
        m = next;
    }
}

static void monitors_read(void);

static void on_monitors(const redisReply *r, const char *err, void *priv) {
    (void)priv;
    struct mpush *batch = mon.reading;
    mon.reading = NULL;
    if (wk.stopping) {
        mpush_free(batch);
        return;
    }
    if (err || r->type != REDIS_REPLY_ARRAY) {
        for (struct mpush *m = batch; m; m = m->next) wk.stats.monitor_dropped++;
        kf_warn("monitoring supervisors not read (%s): pushes to them dropped",
                err ? err : r->type == REDIS_REPLY_ERROR ? r->str : "bad reply");
        mpush_free(batch);
    } else {
        const char *users[256];
        size_t n = 0;
        for (size_t i = 0; i < r->elements && n < 256; i++)
            if (r->element[i]->type == REDIS_REPLY_STRING) users[n++] = r->element[i]->str;
        while (batch) {
            struct mpush *m = batch;
            batch = m->next;
            if (n) {
                wk.stats.monitor_pushes++;
                wk_push(m->payload, users, n);
            } else {
                json_decref(m->payload);
            }
            kf_free(m);
        }
    }
    monitors_read();
}

/* Sends the read for the pushes waiting, unless one is outstanding (its answer sends the next). */
static void monitors_read(void) {
    if (mon.reading || !mon.waiting || wk.stopping) return;
    mon.reading = mon.waiting;
    mon.waiting = NULL;
    mon.waiting_tail = &mon.waiting;
    kf_redis_cmd(wk.redis, kf_redis_slot(wk.redis, KF_KEY_STAFF_MONITORS), on_monitors, NULL,
                 "ZRANGEBYSCORE %s %lld +inf", KF_KEY_STAFF_MONITORS, (long long)wk_now_ms());
}

void wk_push_monitors(json_t *payload, const json_t *list) {
    if (list) {
        const char *users[256];
        size_t n = kf_json_strings(list, users, 256);
        if (n == 0) {
            json_decref(payload);
            return;
        }
        wk.stats.monitor_pushes++;
        wk_push(payload, users, n);
        return;
    }
    struct mpush *m = kf_calloc(1, sizeof(*m));
    m->payload = payload;
    *mon.waiting_tail = m;
    mon.waiting_tail = &m->next;
    monitors_read();
}

/* ---- the published configuration ---- */

static int published; /* the last publication succeeded: /readyz */

static void on_published(const redisReply *r, const char *err, void *priv) {
    (void)priv;
    published = !err && r->type != REDIS_REPLY_ERROR;
    if (!published)
        kf_warn("publishing the configuration failed: %s", err ? err : r->str);
    else
        kf_debug("configuration published to %s", KF_KEY_STAFF_CONFIG);
}

int wk_config_published(void) { return published; }

void wk_config_publish(void) {
    const wk_options *o = &wk.opt;
    char maxc[24], meal[24], rest[24], hand[24], other[24], win[24], ttl[24], now[24];
    snprintf(maxc, sizeof(maxc), "%lld", o->default_max_chats);
    snprintf(meal, sizeof(meal), "%lld", o->break_meal_pct);
    snprintf(rest, sizeof(rest), "%lld", o->break_restroom_pct);
    snprintf(hand, sizeof(hand), "%lld", o->break_handover_pct);
    snprintf(other, sizeof(other), "%lld", o->break_other_max);
    snprintf(win, sizeof(win), "%lld", o->rate_window_ms);
    snprintf(ttl, sizeof(ttl), "%lld", o->monitor_ttl_ms);
    snprintf(now, sizeof(now), "%lld", (long long)wk_now_ms());
    const char *argv[] = {"HSET", KF_KEY_STAFF_CONFIG,
                          "routes", o->routes,
                          "default_group", o->default_group,
                          "default_priority", o->default_priority,
                          "default_max_chats", maxc,
                          "break_policy", o->break_policy,
                          "break_meal_pct", meal,
                          "break_restroom_pct", rest,
                          "break_handover_pct", hand,
                          "break_other_max", other,
                          "rate_window_ms", win,
                          "survey", o->survey ? "1" : "0",
                          "monitor_ttl_ms", ttl,
                          "published_by", wk.consumer,
                          "published_at", now};
    kf_redis_argv(wk.redis, kf_redis_slot(wk.redis, KF_KEY_STAFF_CONFIG), on_published, NULL,
                  (int)(sizeof(argv) / sizeof(argv[0])), argv, NULL);
    /* The default group exists from the start, so transfers to it and snapshots see it. */
    kf_redis_cmd(wk.redis, kf_redis_slot(wk.redis, KF_KEY_STAFF_GROUPS), NULL, NULL, "SADD %s %s",
                 KF_KEY_STAFF_GROUPS, o->default_group);
}

void wk_push_start(void) {}

void wk_push_stop(void) {
    mpush_free(mon.reading);
    mpush_free(mon.waiting);
    mon.reading = mon.waiting = NULL;
    mon.waiting_tail = &mon.waiting;
}
