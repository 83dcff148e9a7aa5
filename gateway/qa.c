/* Quality assurance: the daily sample of closed conversations (qa.list, drawn by the worker,
 * worker/qa.c) and the reviews supervisors record (qa.review).
 *
 * A review is two steps on two slots. qa_review.lua stores it in the conversation's meta and
 * record (numbering reviews: qa_seq). qa_count.lua then counts it in the statistics of the day
 * the conversation closed: the day the statistics put its close in (the one of
 * kefu:{st:D}:closed that holds it), so the gateway needs no time zone; the local day lies
 * within one day of the UTC day of closed_at, and the three candidates are asked at once. Each
 * day keeps the review it counted per conversation, so a retry after a failure between the steps
 * (or a re-review) converges on the latest review, counted once. */
#include "qa.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gateway.h"
#include "request.h"
#include "kefu/alloc.h"
#include "kefu/keys.h"
#include "kefu/log.h"
#include "kefu/redis.h"
#include "kefu/tz.h"

#define NOTES_MAX 2000
#define TAGS_MAX 10
#define TAG_MAX 32
#define LIST_DEFAULT 200
#define LIST_MAX 1000

/* "20261128" -> "2026-11-28" */
static json_t *day_json(const char *d) {
    char s[16];
    snprintf(s, sizeof(s), "%.4s-%.2s-%.2s", d, d + 4, d + 6);
    return json_string(s);
}

static void day_str(int64_t day, char out[16]) {
    int64_t y;
    int m, d;
    kf_civil_from_days(day, &y, &m, &d);
    snprintf(out, 16, "%04lld%02d%02d", (long long)y, m, d);
}

static const char *el(const redisReply *r, size_t i) {
    return r && r->type == REDIS_REPLY_ARRAY && i < r->elements &&
                   r->element[i]->type == REDIS_REPLY_STRING
               ? r->element[i]->str
               : NULL;
}

/* ---- qa.list ---- */

static const char *const item_fields[] = {"agent", "channel", "ticket", "closed_at", "qa_score",
                                          "qa_notes", "qa_tags", "qa_by", "qa_at", "qa_seq"};
#define NITEM 10

struct qa_list {
    req_ctx *x;
    char d[16];
    json_t *info;  /* the info hash as an object; NULL while unread or absent */
    json_t *items; /* [{conv, rank, ...}] */
    int pending;
    long long offset;
};

struct qa_item {
    struct qa_list *ql;
    size_t index;
};

static json_t *tags_json(const char *s) {
    json_t *a = json_array();
    for (const char *p = s; p && *p;) {
        size_t n = strcspn(p, ",");
        if (n) json_array_append_new(a, json_stringn(p, n));
        p += n + (p[n] == ',');
    }
    return a;
}

static void list_finish(struct qa_list *ql) {
    req_ctx *x = ql->x;
    if (x->err) {
        gw_reply_failure(x);
    } else if (!ql->info) {
        gw_reply_error(x->c, x->req, "not_found", "no QA sample of that day (not drawn yet)");
    } else {
        json_t *ans = json_object();
        json_object_set_new(ans, "day", day_json(ql->d));
        static const char *const ints[] = {"closed", "n", "sampled", "sampled", "min_per_agent",
                                           "min_per_agent"};
        for (int i = 0; i < 6; i += 2)
            json_object_set_new(ans, ints[i], json_integer(atoll(json_string_value(
                                                  json_object_get(ql->info, ints[i + 1])))));
        json_object_set_new(ans, "rate",
                            json_real(atof(json_string_value(json_object_get(ql->info, "rate")))));
        json_object_set_new(ans, "offset", json_integer(ql->offset));
        json_object_set_new(ans, "convs", json_incref(ql->items));
        gw_reply_ok(x->c, x->req, ans);
    }
    if (ql->info) json_decref(ql->info);
    json_decref(ql->items);
    gw_ctx_free(x);
    kf_free(ql);
}

static void on_item(const redisReply *r, const char *err, void *priv) {
    struct qa_item *it = priv;
    struct qa_list *ql = it->ql;
    if (err) {
        if (!ql->x->err) ql->x->err = err;
    } else if (r->type == REDIS_REPLY_ARRAY && r->elements == NITEM) {
        json_t *o = json_array_get(ql->items, it->index);
        const char *v[NITEM];
        for (int f = 0; f < NITEM; f++) v[f] = el(r, (size_t)f);
        json_object_set_new(o, "agent", json_string(v[0] ? v[0] : ""));
        json_object_set_new(o, "channel", json_string(v[1] ? v[1] : ""));
        json_object_set_new(o, "ticket", json_string(v[2] ? v[2] : ""));
        json_object_set_new(o, "closed_at", json_integer(v[3] ? atoll(v[3]) : 0));
        json_t *review = json_null();
        if (v[4])
            review = json_pack("{s:I, s:s, s:o, s:s, s:I, s:I}", "score", (json_int_t)atoll(v[4]),
                               "notes", v[5] ? v[5] : "", "tags", tags_json(v[6]), "by",
                               v[7] ? v[7] : "", "at", (json_int_t)(v[8] ? atoll(v[8]) : 0),
                               "seq", (json_int_t)(v[9] ? atoll(v[9]) : 0));
        json_object_set_new(o, "review", review);
    }
    kf_free(it);
    if (--ql->pending == 0) list_finish(ql);
}

static void on_sample(const redisReply *r, const char *err, void *priv) {
    struct qa_list *ql = priv;
    req_ctx *x = ql->x;
    if (err || r->type != REDIS_REPLY_ARRAY || (r->elements & 1)) {
        if (!x->err) x->err = err ? err : "unavailable";
        list_finish(ql);
        return;
    }
    if (!ql->info) { /* not drawn (the info hash came first, same slot and connection) */
        list_finish(ql);
        return;
    }
    ql->pending = 1;
    for (size_t i = 0; i + 1 < r->elements; i += 2) {
        const char *conv = el(r, i), *rank = el(r, i + 1);
        if (!conv || !rank || !gw_id_chars_ok(conv) || strlen(conv) > CONV_ID_MAX) continue;
        size_t index = json_array_size(ql->items);
        json_array_append_new(ql->items, json_pack("{s:s, s:I}", "conv", conv, "rank",
                                                   (json_int_t)atoll(rank)));
        struct qa_item *it = kf_malloc(sizeof(*it));
        it->ql = ql;
        it->index = index;
        char meta[KF_KEY_MAX];
        kf_key_conv_meta(meta, conv);
        const char *argv[2 + NITEM] = {"HMGET", meta};
        for (int f = 0; f < NITEM; f++) argv[2 + f] = item_fields[f];
        ql->pending++;
        kf_redis_argv(gw->redis, kf_redis_slot(gw->redis, meta), on_item, it, 2 + NITEM, argv,
                      NULL);
    }
    if (--ql->pending == 0) list_finish(ql);
}

static void on_info(const redisReply *r, const char *err, void *priv) {
    struct qa_list *ql = priv;
    if (err || r->type != REDIS_REPLY_ARRAY) {
        if (!ql->x->err) ql->x->err = err ? err : "unavailable";
        return;
    }
    if (r->elements == 0) return;
    ql->info = json_object();
    for (size_t i = 0; i + 1 < r->elements; i += 2)
        if (el(r, i) && el(r, i + 1))
            json_object_set_new(ql->info, el(r, i), json_string(el(r, i + 1)));
    static const char *const need[] = {"n", "sampled", "min_per_agent", "rate"};
    for (int i = 0; i < 4; i++)
        if (!json_is_string(json_object_get(ql->info, need[i])))
            json_object_set_new(ql->info, need[i], json_string("0"));
}

/* "YYYY-MM-DD" of field `day` -> "YYYYMMDD" (and the day number); answers bad_request itself. */
static int get_day(gw_conn *c, const json_t *msg, char d[16], int64_t *days) {
    const char *s;
    if (gw_get_str(c, msg, "day", 1, 10, &s) < 0) return -1;
    if (strlen(s) != 10 || kf_parse_date(s, 10, days) < 0) {
        gw_reply_error(c, json_object_get(msg, "req"), "bad_request",
                       "field 'day' must be a date YYYY-MM-DD");
        return -1;
    }
    day_str(*days, d);
    return 0;
}

static void h_qa_list(gw_conn *c, json_t *msg) {
    char d[16];
    int64_t days;
    long long offset, limit;
    if (get_day(c, msg, d, &days) < 0) return;
    if (gw_get_int(c, msg, "offset", 0, 0, 1000000000, &offset) < 0) return;
    if (gw_get_int(c, msg, "limit", LIST_DEFAULT, 1, LIST_MAX, &limit) < 0) return;
    struct qa_list *ql = kf_calloc(1, sizeof(*ql));
    ql->x = gw_ctx_new(c, json_object_get(msg, "req"));
    ql->items = json_array();
    ql->offset = offset;
    snprintf(ql->d, sizeof(ql->d), "%s", d);
    char info[KF_KEY_MAX], sample[KF_KEY_MAX];
    kf_key_qa(info, d, "info");
    kf_key_qa(sample, d, "sample");
    /* one slot, one connection: the info hash is answered before the sample */
    kf_redis_cmd_key(gw->redis, info, on_info, ql, "HGETALL %s", info);
    kf_redis_cmd_key(gw->redis, sample, on_sample, ql, "ZRANGE %s %lld %lld WITHSCORES", sample,
                     offset, offset + limit - 1);
}

/* ---- qa.review ---- */

struct qa_review {
    req_ctx *x;
    long long score;
    char seq[24];
    int pending;
    int unavailable;   /* a statistics step failed: the review is stored, a retry counts it */
    char counted[16];  /* the day it is counted on, "" when none */
};

static void review_finish(struct qa_review *rv) {
    req_ctx *x = rv->x;
    if (rv->unavailable) {
        gw_reply_error(x->c, x->req, "unavailable",
                       "review stored but not counted in the statistics yet: send it again");
    } else {
        json_t *ans = json_pack("{s:s, s:I, s:I}", "conv", x->conv, "score",
                                (json_int_t)rv->score, "seq", (json_int_t)atoll(rv->seq));
        json_object_set_new(ans, "day", rv->counted[0] ? day_json(rv->counted) : json_null());
        gw_reply_ok(x->c, x->req, ans);
    }
    gw_ctx_free(x);
    kf_free(rv);
}

struct qa_count {
    struct qa_review *rv;
    char d[16];
};

static void on_counted(const redisReply *r, const char *err, void *priv) {
    struct qa_count *qc = priv;
    struct qa_review *rv = qc->rv;
    kf_script_ans a;
    char tag = kf_script_parse(r, err, 1, &a);
    if (!tag) {
        if (a.kind == KF_SCRIPT_BROKEN) kf_error("qa_count: %s", a.detail ? a.detail : "bad reply");
        rv->unavailable = 1;
    } else if (tag == 'S' || tag == 'D') {
        snprintf(rv->counted, sizeof(rv->counted), "%s", qc->d);
    }
    kf_free(qc);
    if (--rv->pending == 0) review_finish(rv);
}

static void on_reviewed(const redisReply *r, const char *err, void *priv) {
    struct qa_review *rv = priv;
    req_ctx *x = rv->x;
    kf_script_ans a;
    if (!kf_script_parse(r, err, 3, &a)) { /* {'S', seq, closed_at} */
        if (a.kind == KF_SCRIPT_UNAVAILABLE) {
            gw_reply_error(x->c, x->req, "unavailable", "storage unavailable, retry later");
        } else if (a.kind == KF_SCRIPT_REFUSED) {
            gw_reply_error(x->c, x->req, a.code, a.message ? a.message : a.code);
        } else {
            if (a.detail) kf_error("qa_review: %s", a.detail);
            gw_reply_error(x->c, x->req, "internal", "internal error");
        }
        gw_ctx_free(x);
        kf_free(rv);
        return;
    }
    snprintf(rv->seq, sizeof(rv->seq), "%s", r->element[1]->str);
    long long closed_at = atoll(r->element[2]->str);
    int64_t utc_day = closed_at / 86400000;
    char score[24];
    snprintf(score, sizeof(score), "%lld", rv->score);
    rv->pending = 3;
    for (int k = -1; k <= 1; k++) {
        struct qa_count *qc = kf_calloc(1, sizeof(*qc));
        qc->rv = rv;
        day_str(utc_day + k, qc->d);
        char closed[KF_KEY_MAX], agent[KF_KEY_MAX], n[KF_KEY_MAX], qk[KF_KEY_MAX];
        kf_key_stats(closed, qc->d, "closed");
        kf_key_stats(agent, qc->d, "agent");
        kf_key_stats(n, qc->d, "n");
        kf_key_stats(qk, qc->d, "qa");
        const char *argv[] = {closed, agent, n, qk, x->conv, rv->seq, score};
        kf_redis_script(gw->redis, kf_redis_slot(gw->redis, closed), "qa_count", on_counted, qc,
                        4, 7, argv, NULL);
    }
}

/* tags: a list of at most TAGS_MAX strings of 1..TAG_MAX bytes without ','; joined with ',' into
 * out (answers bad_request itself). */
static int get_tags(gw_conn *c, const json_t *msg, char *out, size_t outlen) {
    json_t *t = json_object_get(msg, "tags"), *v;
    size_t i, len = 0;
    out[0] = '\0';
    if (!t || json_is_null(t)) return 0;
    const char *why = NULL;
    if (!json_is_array(t) || json_array_size(t) > TAGS_MAX) why = "a list of at most 10 tags";
    json_array_foreach(t, i, v) {
        if (why) break;
        size_t n = json_is_string(v) ? json_string_length(v) : 0;
        if (n == 0 || n > TAG_MAX || strchr(json_string_value(v), ',') ||
            memchr(json_string_value(v), '\0', n))
            why = "tags of 1..32 bytes without ','";
        else if (len + n + 2 < outlen)
            len += (size_t)snprintf(out + len, outlen - len, "%s%s", len ? "," : "",
                                    json_string_value(v));
    }
    if (why) {
        char m[96];
        snprintf(m, sizeof(m), "field 'tags' must be %s", why);
        gw_reply_error(c, json_object_get(msg, "req"), "bad_request", m);
        return -1;
    }
    return 0;
}

static void h_qa_review(gw_conn *c, json_t *msg) {
    long long score;
    const char *notes;
    char tags[TAGS_MAX * (TAG_MAX + 1) + 1];
    if (gw_get_int(c, msg, "score", -1, 0, 100, &score) < 0) return;
    if (score < 0) {
        gw_reply_error(c, json_object_get(msg, "req"), "bad_request", "missing field 'score'");
        return;
    }
    if (gw_get_str(c, msg, "notes", 0, NOTES_MAX, &notes) < 0) return;
    if (get_tags(c, msg, tags, sizeof(tags)) < 0) return;
    req_ctx *x;
    if (gw_get_conv(c, msg, &x) < 0) return;
    struct qa_review *rv = kf_calloc(1, sizeof(*rv));
    rv->x = x;
    rv->score = score;
    char meta[KF_KEY_MAX], log[KF_KEY_MAX], now[24], sc[24];
    kf_key_conv_meta(meta, x->conv);
    kf_key_conv_log(log, x->conv);
    snprintf(now, sizeof(now), "%lld", (long long)gw_now_ms());
    snprintf(sc, sizeof(sc), "%lld", score);
    const char *argv[] = {meta, log, c->ident.sub, sc, notes ? notes : "", tags, now};
    kf_redis_script(gw->redis, kf_redis_slot(gw->redis, meta), "qa_review", on_reviewed, rv, 2, 7,
                    argv, NULL);
}

const gw_handler gw_handlers_qa[] = {
    {"qa.list", R_SUP | R_ADMIN, h_qa_list},
    {"qa.review", R_SUP | R_ADMIN, h_qa_review},
    {NULL, 0, NULL},
};
