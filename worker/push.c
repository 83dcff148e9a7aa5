/* The worker's Redis helpers: script calls on the staff domains' ({staff}, {staff:<domain>})
 * and conversation slots, pushes to users and monitoring supervisors through the node inboxes,
 * and the configuration it publishes for the gateways and the staff scripts. */
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kefu/alloc.h"
#include "kefu/keys.h"
#include "kefu/log.h"
#include "kefu/route.h"
#include "kefu/service.h"
#include "kefu/token.h"
#include "wk.h"

const char *wk_domain_of(const char *group, char *out) {
    return kf_staff_domain_of(wk.opt.staff_domains, group ? group : wk.opt.default_group, out,
                              KF_GROUP_MAX + 1);
}

void wk_staff_script_for(const char *group, const char *name, kf_redis_cb *cb, void *priv,
                         int argc, const char **argv) {
    char dom[KF_GROUP_MAX + 1];
    kf_staff_script_in(wk.redis, wk_domain_of(group, dom), name, cb, priv, argc, argv);
}

/* agent_load.lua waiting for the conversation's group, which names the domain */
struct load_op {
    char op[8];
    char agent[KF_SUB_MAX + 1];
    char conv[72];
    kf_redis_cb *cb;
    void *priv;
};

static void load_op_run(struct load_op *l, const char *group) {
    char now[24];
    snprintf(now, sizeof(now), "%lld", (long long)wk_now_ms());
    const char *argv[] = {l->op, l->agent, l->conv, now};
    wk_staff_script_for(group, "agent_load", l->cb, l->priv, 4, argv);
}

static void on_load_group(const redisReply *r, const char *err, void *priv) {
    struct load_op *l = priv;
    if (err || r->type == REDIS_REPLY_ERROR) {
        if (l->cb) l->cb(NULL, err ? err : r->str, l->priv);
    } else {
        /* a conversation without a group is in the default one (conv_transfer.lua does so) */
        load_op_run(l, r->type == REDIS_REPLY_STRING && kf_group_valid(r->str) ? r->str
                                                                               : "default");
    }
    kf_free(l);
}

void wk_agent_load(const char *op, const char *agent, const char *conv, const char *group,
                   kf_redis_cb *cb, void *priv) {
    struct load_op *l = kf_calloc(1, sizeof(*l));
    snprintf(l->op, sizeof(l->op), "%s", op);
    snprintf(l->agent, sizeof(l->agent), "%s", agent);
    snprintf(l->conv, sizeof(l->conv), "%s", conv);
    l->cb = cb;
    l->priv = priv;
    if (group || !*wk.opt.staff_domains) {
        load_op_run(l, group ? group : wk.opt.default_group);
        kf_free(l);
        return;
    }
    char meta[KF_KEY_MAX];
    kf_key_conv_meta(meta, conv);
    kf_redis_cmd_key(wk.redis, meta, on_load_group, l, "HGET %s group", meta);
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
    /* Every staff domain keeps the whole list (monitor.subscribe writes to each): read it from
     * the first one whose master is up, so one lost master does not silence the pushes. */
    char doms[KF_STAFF_DOMAINS_MAX][KF_GROUP_MAX + 1], key[KF_KEY_MAX];
    size_t nd = kf_staff_domain_list(wk.opt.staff_domains, doms, KF_STAFF_DOMAINS_MAX);
    kf_key_staff_in(key, NULL, "monitors");
    for (size_t i = 0; i < nd; i++) {
        kf_key_staff_in(key, doms[i], "monitors");
        if (kf_redis_is_up(wk.redis, kf_redis_slot(wk.redis, key))) break;
        kf_key_staff_in(key, NULL, "monitors");
    }
    kf_redis_cmd(wk.redis, kf_redis_slot(wk.redis, key), on_monitors, NULL,
                 "ZRANGEBYSCORE %s %lld +inf", key, (long long)wk_now_ms());
}

void wk_push_monitors(json_t *payload, const json_t *list) {
    /* an alert (not a monitor update) is kept for supervisors who are not subscribed now */
    const char *type = json_string_value(json_object_get(payload, "type"));
    if (!list && type && !strcmp(type, "alert")) wk_alert_record(payload);
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

/* ---- the published configuration ----
 * One copy per staff domain: a domain's scripts read it as KEYS[1] in their own slot, and the
 * gateways read staff_domains from any copy whose master is up. */

static int published;    /* every copy's last publication succeeded: /readyz */
static int publish_fail; /* copies of the publication in flight that failed */
static int publish_left; /* copies of the publication in flight */

static void on_published(const redisReply *r, const char *err, void *priv) {
    (void)priv;
    int ok = !err && r->type != REDIS_REPLY_ERROR;
    if (!ok) {
        publish_fail++;
        kf_warn("publishing the configuration failed: %s", err ? err : r->str);
    }
    if (--publish_left > 0) return;
    published = publish_fail == 0;
    if (published) kf_debug("configuration published to every staff domain");
}

int wk_config_published(void) { return published; }

int wk_config_slot_up(void) {
    char doms[KF_STAFF_DOMAINS_MAX][KF_GROUP_MAX + 1], key[KF_KEY_MAX];
    size_t nd = kf_staff_domain_list(wk.opt.staff_domains, doms, KF_STAFF_DOMAINS_MAX);
    for (size_t i = 0; i < nd; i++) {
        kf_key_staff_in(key, doms[i], "config");
        if (kf_redis_is_up(wk.redis, kf_redis_slot(wk.redis, key))) return 1;
    }
    return 0;
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
    char doms[KF_STAFF_DOMAINS_MAX][KF_GROUP_MAX + 1], key[KF_KEY_MAX];
    size_t nd = kf_staff_domain_list(o->staff_domains, doms, KF_STAFF_DOMAINS_MAX);
    if (publish_left == 0) publish_fail = 0;
    for (size_t i = 0; i < nd; i++) {
        kf_key_staff_in(key, doms[i], "config");
        const char *argv[] = {"HSET", key,
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
                              "canned_replies", o->canned_replies,
                              "trend_keywords", o->trend_keywords,
                              "staff_domains", o->staff_domains,
                              "staff_domain", doms[i],
                              "published_by", wk.consumer,
                              "published_at", now};
        publish_left++;
        kf_redis_argv(wk.redis, kf_redis_slot(wk.redis, key), on_published, NULL,
                      (int)(sizeof(argv) / sizeof(argv[0])), argv, NULL);
    }
    /* The default group exists from the start, so transfers to it and snapshots see it. */
    char dom[KF_GROUP_MAX + 1];
    kf_key_staff_in(key, wk_domain_of(o->default_group, dom), "groups");
    kf_redis_cmd(wk.redis, kf_redis_slot(wk.redis, key), NULL, NULL, "SADD %s %s", key,
                 o->default_group);
}

void wk_push_start(void) {}

void wk_push_stop(void) {
    mpush_free(mon.reading);
    mpush_free(mon.waiting);
    mon.reading = mon.waiting = NULL;
    mon.waiting_tail = &mon.waiting;
}
