/* alert.list {since, limit}: the kept alerts after `since`, oldest first. `since` is an alert's
 * `id` (those after it: paging on) or a time in ms (those from it); by default the last 24 h,
 * and never more than KF_ALERT_DAYS_MAX days back. The worker keeps one stream per UTC day
 * (kefu:{al:<YYYYMMDD>}:alerts): the days are read one after the other, each for at most what
 * the page still needs plus one, the one that says `more`. */
#include "alerts.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gateway.h"
#include "kefu/alloc.h"
#include "kefu/keys.h"
#include "kefu/log.h"
#include "kefu/redis.h"

#define LIST_DEFAULT 100
#define LIST_MAX 500
#define DAY_MS 86400000LL
#define ID_MAX 41 /* "<ms>-<seq>": two 64-bit numbers and the dash */

struct alist {
    req_ctx *x;
    char start[ID_MAX + 2]; /* XRANGE start: "(<id>" (after it) or "<ms>-0" (from it) */
    long long day, last_day; /* days since 1970-01-01 (UTC) */
    long long limit;
    json_t *alerts;
};

static void alist_free(struct alist *l) {
    gw_ctx_free(l->x);
    json_decref(l->alerts);
    kf_free(l);
}

static void read_day(struct alist *l);

static void on_day(const redisReply *r, const char *err, void *priv) {
    struct alist *l = priv;
    if (err || r->type != REDIS_REPLY_ARRAY) {
        if (!err) kf_warn("alert.list: %s", r->type == REDIS_REPLY_ERROR ? r->str : "bad reply");
        gw_reply_error(l->x->c, l->x->req, "unavailable", "storage unavailable, retry later");
        alist_free(l);
        return;
    }
    for (size_t i = 0; i < r->elements; i++) {
        const redisReply *e = r->element[i];
        if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 ||
            e->element[0]->type != REDIS_REPLY_STRING || e->element[1]->type != REDIS_REPLY_ARRAY)
            continue;
        const redisReply *kv = e->element[1];
        json_t *a = NULL;
        for (size_t k = 0; k + 1 < kv->elements; k += 2)
            if (kv->element[k]->type == REDIS_REPLY_STRING && !strcmp(kv->element[k]->str, "a") &&
                kv->element[k + 1]->type == REDIS_REPLY_STRING)
                a = json_loadb(kv->element[k + 1]->str, kv->element[k + 1]->len, 0, NULL);
        if (!json_is_object(a)) {
            json_decref(a);
            continue;
        }
        const char *id = e->element[0]->str;
        json_object_set_new(a, "id", json_string(id));
        json_object_set_new(a, "ts", json_integer(atoll(id)));
        json_array_append_new(l->alerts, a);
    }
    size_t n = json_array_size(l->alerts);
    if (n <= (size_t)l->limit && l->day < l->last_day) {
        l->day++;
        read_day(l);
        return;
    }
    int more = n > (size_t)l->limit;
    if (more) json_array_remove(l->alerts, (size_t)l->limit);
    gw_reply_ok(l->x->c, l->x->req,
                json_pack("{s:O, s:b}", "alerts", l->alerts, "more", more));
    alist_free(l);
}

static void read_day(struct alist *l) {
    if (!gw_conn_open(l->x->c)) { /* nobody to answer */
        alist_free(l);
        return;
    }
    time_t t = (time_t)(l->day * 86400);
    struct tm tm;
    gmtime_r(&t, &tm);
    char day[16], key[KF_KEY_MAX], count[24];
    strftime(day, sizeof(day), "%Y%m%d", &tm);
    kf_key_alerts(key, day);
    snprintf(count, sizeof(count), "%lld", l->limit + 1 - (long long)json_array_size(l->alerts));
    const char *argv[] = {"XRANGE", key, l->start, "+", "COUNT", count};
    kf_redis_argv(gw->redis, kf_redis_slot(gw->redis, key), on_day, l, 6, argv, NULL);
}

/* "<digits>-<digits>", each part at most 20 digits */
static int id_ok(const char *s, long long *ms) {
    const char *dash = strchr(s, '-');
    if (!dash || dash == s || dash - s > 20 || !dash[1] || strlen(dash + 1) > 20) return 0;
    for (const char *p = s; *p; p++)
        if (p != dash && (*p < '0' || *p > '9')) return 0;
    *ms = atoll(s);
    return 1;
}

static void h_alert_list(gw_conn *c, json_t *msg) {
    const json_t *req = json_object_get(msg, "req");
    long long limit;
    if (gw_get_int(c, msg, "limit", LIST_DEFAULT, 1, LIST_MAX, &limit) < 0) return;
    long long now = (long long)gw_now_ms(), since = now - DAY_MS;
    struct alist *l = kf_calloc(1, sizeof(*l));
    const json_t *s = json_object_get(msg, "since");
    if (json_is_string(s)) {
        if (json_string_length(s) > ID_MAX || !id_ok(json_string_value(s), &since)) {
            kf_free(l);
            gw_reply_error(c, req, "bad_request", "field 'since' is not an alert id");
            return;
        }
        snprintf(l->start, sizeof(l->start), "(%s", json_string_value(s));
    } else if (json_is_integer(s) && json_integer_value(s) >= 0) {
        since = json_integer_value(s);
        snprintf(l->start, sizeof(l->start), "%lld-0", since);
    } else if (!s || json_is_null(s)) {
        snprintf(l->start, sizeof(l->start), "%lld-0", since);
    } else {
        kf_free(l);
        gw_reply_error(c, req, "bad_request",
                       "field 'since' must be an alert id or a time in ms (an integer >= 0)");
        return;
    }
    l->x = gw_ctx_new(c, req);
    l->limit = limit;
    l->alerts = json_array();
    l->last_day = now / DAY_MS;
    l->day = since / DAY_MS;
    if (l->day < l->last_day - KF_ALERT_DAYS_MAX) l->day = l->last_day - KF_ALERT_DAYS_MAX;
    if (l->day > l->last_day) l->day = l->last_day; /* a time to come: nothing yet */
    read_day(l);
}

const gw_handler gw_handlers_alerts[] = {
    {"alert.list", R_SUP | R_ADMIN, h_alert_list},
    {NULL, 0, NULL},
};
