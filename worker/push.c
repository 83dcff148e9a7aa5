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
    if (err) return 0;
    if (r->type == REDIS_REPLY_ERROR) {
        kf_error("redis script error: %s", r->str);
        return 0;
    }
    if (r->type != REDIS_REPLY_ARRAY || r->elements < 1 ||
        r->element[0]->type != REDIS_REPLY_STRING || r->element[0]->str[0] == 'E')
        return 0;
    if (r->elements >= 2 && r->element[1]->type == REDIS_REPLY_STRING && r->element[1]->len) {
        *json = json_loadb(r->element[1]->str, r->element[1]->len, 0, NULL);
        if (!*json) kf_error("script answer is not JSON");
    }
    return r->element[0]->str[0];
}

void wk_push(json_t *payload, const char *const *users, size_t n) {
    char *text = json_dumps(payload, JSON_COMPACT);
    json_decref(payload);
    if (!text) return;
    kf_route_push(wk.redis, text, strlen(text), users, n, wk.opt.inbox_maxlen, wk_now_ms());
    free(text);
}

/* ---- monitoring supervisors: the list a second old at most, when no script handed one ---- */

static char **monitors;
static size_t nmonitors;
static int64_t monitors_ms;
static int monitors_reading;

static void on_monitors(const redisReply *r, const char *err, void *priv) {
    (void)priv;
    monitors_reading = 0;
    if (err || r->type != REDIS_REPLY_ARRAY) return;
    for (size_t i = 0; i < nmonitors; i++) kf_free(monitors[i]);
    kf_free(monitors);
    monitors = kf_calloc(r->elements + 1, sizeof(char *));
    nmonitors = 0;
    for (size_t i = 0; i < r->elements; i++)
        if (r->element[i]->type == REDIS_REPLY_STRING)
            monitors[nmonitors++] = kf_strdup(r->element[i]->str);
    monitors_ms = wk_now_ms();
}

static void monitors_refresh(void) {
    if (monitors_reading || wk_now_ms() - monitors_ms < 1000) return;
    monitors_reading = 1;
    kf_redis_cmd(wk.redis, kf_redis_slot(wk.redis, KF_KEY_STAFF_MONITORS), on_monitors, NULL,
                 "ZRANGEBYSCORE %s %lld +inf", KF_KEY_STAFF_MONITORS, (long long)wk_now_ms());
}

void wk_push_monitors(json_t *payload, const json_t *list) {
    const char *users[256];
    size_t n;
    if (list) {
        n = kf_json_strings(list, users, 256);
    } else {
        monitors_refresh();
        n = nmonitors < 256 ? nmonitors : 256;
        for (size_t i = 0; i < n; i++) users[i] = monitors[i];
    }
    if (n == 0) {
        json_decref(payload);
        return;
    }
    wk_push(payload, users, n);
}

/* ---- the published configuration ---- */

static void on_published(const redisReply *r, const char *err, void *priv) {
    (void)priv;
    if (err || r->type == REDIS_REPLY_ERROR)
        kf_warn("publishing the configuration failed: %s", err ? err : r->str);
    else
        kf_debug("configuration published to %s", KF_KEY_STAFF_CONFIG);
}

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
    for (size_t i = 0; i < nmonitors; i++) kf_free(monitors[i]);
    kf_free(monitors);
    monitors = NULL;
    nmonitors = 0;
}
