/* The recent alerts, for supervisors who were not connected when one was raised (alert.list,
 * gateway/alerts.c): every `alert` pushed to the monitoring supervisors (SLA, customer_left,
 * repeat, trend) and every sensitive flag a bot raised (the gateway pushes that alert itself;
 * its lifecycle event `flagged` brings it here) is appended to the stream of its UTC day,
 * kefu:{al:<YYYYMMDD>}:alerts, capped at alert_day_max entries and expiring alert_keep_days
 * after the day. One key per day: a day's alerts are one range read, and the days spread over
 * the slots of a cluster. An event handled twice (a worker died before acknowledging it) may
 * record its alert twice. */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "kefu/alloc.h"
#include "kefu/keys.h"
#include "kefu/log.h"
#include "wk.h"

static void on_recorded(const redisReply *r, const char *err, void *priv) {
    (void)priv;
    if (err || r->type == REDIS_REPLY_ERROR)
        kf_warn("alert not kept for alert.list: %s", err ? err : r->str);
}

void wk_alert_record(const json_t *alert) {
    if (!json_is_object(alert)) return;
    json_t *a = json_deep_copy(alert);
    json_object_del(a, "type");
    char *text = json_dumps(a, JSON_COMPACT);
    json_decref(a);
    if (!text) return;
    long long now = (long long)wk_now_ms();
    time_t t = (time_t)(now / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    char day[16], key[KF_KEY_MAX], maxlen[24], until[24];
    strftime(day, sizeof(day), "%Y%m%d", &tm);
    kf_key_alerts(key, day);
    snprintf(maxlen, sizeof(maxlen), "%lld", wk.opt.alert_day_max);
    /* the day's end, then alert_keep_days more */
    snprintf(until, sizeof(until), "%lld",
             (now / 86400000 + 1 + wk.opt.alert_keep_days) * 86400LL);
    const char *xadd[] = {"XADD", key, "MAXLEN", "~", maxlen, "*", "a", text};
    kf_redis_argv(wk.redis, kf_redis_slot(wk.redis, key), on_recorded, NULL, 8, xadd, NULL);
    const char *exp[] = {"EXPIREAT", key, until};
    kf_redis_argv(wk.redis, kf_redis_slot(wk.redis, key), NULL, NULL, 3, exp, NULL);
    free(text);
}

/* ---- a bot's sensitive flag: the alert as the gateway pushed it, from the conversation ---- */

struct flagged {
    wk_job *j;
    char conv[72];
    char *reason;
};

static void on_flagged_meta(const redisReply *r, const char *err, void *priv) {
    struct flagged *f = priv;
    int failed = err || r->type != REDIS_REPLY_ARRAY || r->elements != 4;
    if (!failed && !wk.stopping) {
        const char *v[4];
        for (int i = 0; i < 4; i++)
            v[i] = r->element[i]->type == REDIS_REPLY_STRING ? r->element[i]->str : "";
        json_t *a = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "kind", "sensitive", "conv",
                              f->conv, "reason", f->reason, "ticket", v[0], "group",
                              *v[1] ? v[1] : wk.opt.default_group, "priority",
                              *v[2] ? v[2] : "medium", "customer", v[3]);
        if (a) wk_alert_record(a);
        json_decref(a);
    }
    wk_job_unref(f->j, failed);
    kf_free(f->reason);
    kf_free(f);
}

void wk_alert_flagged(wk_job *j, const char *conv, const char *reason) {
    if (!*conv) return;
    struct flagged *f = kf_calloc(1, sizeof(*f));
    f->j = wk_job_ref(j);
    snprintf(f->conv, sizeof(f->conv), "%s", conv);
    f->reason = kf_strdup(reason);
    char meta[KF_KEY_MAX];
    kf_key_conv_meta(meta, conv);
    kf_redis_cmd_key(wk.redis, meta, on_flagged_meta, f, "HMGET %s ticket group priority customer",
                     meta);
}
