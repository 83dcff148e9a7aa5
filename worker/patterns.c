/* Patterns across conversations that supervisors must hear of (DOMAIN.md, sensitive issues),
 * fed by lifecycle events:
 * - repeat: one customer's conversations about the same category or the same topic ended
 *   unsatisfied (closed `unresolved`, or rated 2 stars or less) repeat_threshold times within
 *   repeat_window_ms;
 * - trend: trend_threshold different customers opened conversations on the same topic, or
 *   wrote messages containing the same keyword of trend_keywords (the gateways match them and
 *   send an event `keyword` once per conversation and keyword), within trend_window_ms.
 * pattern_count.lua counts each (a conversation or a customer counts once, so an event handled
 * twice after a worker died counts once) and says when the threshold is crossed; then the
 * monitoring supervisors get an `alert` and the conversation's record an `alert` entry. One
 * alert per pattern and window. */
#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "kefu/alloc.h"
#include "kefu/hash.h"
#include "kefu/keys.h"
#include "kefu/log.h"
#include "kefu/service.h"
#include "kefu/token.h"
#include "wk.h"

#define TOPIC_MAX 128

struct pcount {
    wk_job *j;
    char conv[64];
    char kind[8];           /* "repeat" or "trend" */
    char what[16];          /* "category" or "topic" */
    char value[TOPIC_MAX + 1];
    char customer[KF_SUB_MAX + 1];
    long long window_ms;
};

/* A topic as compared: ASCII letters in lower case, runs of white space as one space, no
 * leading or trailing space, at most TOPIC_MAX bytes (a cut drops a character it splits). */
static void topic_norm(const char *in, char *out) {
    size_t n = 0;
    int space = 0;
    const unsigned char *p = (const unsigned char *)in;
    for (; *p && n < TOPIC_MAX; p++) {
        if (isspace(*p)) {
            space = n > 0;
            continue;
        }
        if (space && n + 1 < TOPIC_MAX) out[n++] = ' ';
        space = 0;
        out[n++] = (char)(*p < 0x80 ? tolower(*p) : *p);
    }
    if (*p) { /* cut: drop a last character without all its bytes */
        size_t i = n;
        while (i > 0 && ((unsigned char)out[i - 1] & 0xC0) == 0x80) i--;
        if (i > 0 && (unsigned char)out[i - 1] >= 0xC0) {
            unsigned char lead = (unsigned char)out[i - 1];
            size_t want = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : 2;
            if (n - (i - 1) < want) n = i - 1;
        }
        while (n > 0 && out[n - 1] == ' ') n--;
    }
    out[n] = '\0';
}

static void on_recorded(const redisReply *r, const char *err, void *priv) {
    (void)r;
    if (err) kf_warn("pattern alert of %s not recorded: %s", (char *)priv, err);
    kf_free(priv);
}

static void on_counted(const redisReply *r, const char *err, void *priv) {
    struct pcount *pc = priv;
    int failed = err || r->type != REDIS_REPLY_ARRAY || r->elements < 2 ||
                 r->element[0]->type != REDIS_REPLY_INTEGER ||
                 r->element[1]->type != REDIS_REPLY_INTEGER;
    if (failed) {
        kf_warn("pattern %s of %s not counted: %s", pc->kind, pc->conv,
                err ? err : r->type == REDIS_REPLY_ERROR ? r->str : "bad reply");
    } else if (r->element[1]->integer == 1 && !wk.stopping) {
        long long n = r->element[0]->integer;
        char reason[320];
        if (!strcmp(pc->kind, "repeat"))
            snprintf(reason, sizeof(reason), "%lld conversations of one customer about %s '%s' "
                     "ended unresolved or rated 2 or less within %lld h", n, pc->what, pc->value,
                     pc->window_ms / 3600000);
        else if (!strcmp(pc->what, "keyword"))
            snprintf(reason, sizeof(reason), "%lld customers wrote '%s' within %lld min", n,
                     pc->value, pc->window_ms / 60000);
        else
            snprintf(reason, sizeof(reason), "%lld customers opened conversations on '%s' within "
                     "%lld min", n, pc->value, pc->window_ms / 60000);
        json_t *alert = json_pack("{s:s, s:s, s:s, s:s, s:s, s:I, s:I, s:s}", "type", "alert",
                                  "kind", pc->kind, "conv", pc->conv, pc->what, pc->value,
                                  "reason", reason, "count", (json_int_t)n, "window_ms",
                                  (json_int_t)pc->window_ms, "customer", pc->customer);
        if (!strcmp(pc->kind, "repeat")) {
            json_t *convs = json_array();
            for (size_t i = 2; i < r->elements; i++)
                if (r->element[i]->type == REDIS_REPLY_STRING)
                    json_array_append_new(convs, json_string(r->element[i]->str));
            json_object_set_new(alert, "convs", convs);
        }
        wk.stats.pattern_alerts++;
        /* topics are customers' words: the log names the pattern, not the topic */
        kf_info("alert %s: %lld (%s) around conversation %s", pc->kind, n, pc->what, pc->conv);
        wk_push_monitors(alert, NULL);
        char log[KF_KEY_MAX], now[24];
        kf_key_conv_log(log, pc->conv);
        snprintf(now, sizeof(now), "%lld", (long long)wk_now_ms());
        kf_redis_cmd_key(wk.redis, log, on_recorded, kf_strdup(pc->conv),
                         "XADD %s * ev alert by worker ts %s kind %s reason %s", log, now, pc->kind,
                         reason);
    }
    wk_job_unref(pc->j, failed);
    kf_free(pc);
}

static void count(wk_job *j, const char *conv, const char *kind, const char *what,
                  const char *value, const char *customer, const char *member, const char *key,
                  const char *flag, long long window_ms, long long threshold, const char *mode) {
    struct pcount *pc = kf_calloc(1, sizeof(*pc));
    pc->j = wk_job_ref(j);
    snprintf(pc->conv, sizeof(pc->conv), "%s", conv);
    snprintf(pc->kind, sizeof(pc->kind), "%s", kind);
    snprintf(pc->what, sizeof(pc->what), "%s", what);
    snprintf(pc->value, sizeof(pc->value), "%s", value);
    snprintf(pc->customer, sizeof(pc->customer), "%s", customer);
    pc->window_ms = window_ms;
    char now[24], win[24], thr[24];
    snprintf(now, sizeof(now), "%lld", (long long)wk_now_ms());
    snprintf(win, sizeof(win), "%lld", window_ms);
    snprintf(thr, sizeof(thr), "%lld", threshold);
    const char *argv[] = {key, flag, member, now, win, thr, mode};
    kf_redis_script(wk.redis, kf_redis_slot(wk.redis, key), "pattern_count", on_counted, pc, 2, 7,
                    argv, NULL);
}

/* ---- repeat ---- */

struct meta_read {
    wk_job *j;
    char conv[64];
    int opened; /* 1: trend (opened), 0: repeat (unsatisfied) */
};

/* One more unsatisfying conversation of customer about this category or topic. */
static void count_repeat(struct meta_read *m, const char *customer, const char *what,
                         const char *value) {
    char key[KF_KEY_MAX], flag[KF_KEY_MAX];
    const char *kind = what[0] == 'c' ? "c" : "t";
    unsigned long long h = kf_hash_str(value);
    kf_key_user_unsat(key, customer, kind, h, 0);
    kf_key_user_unsat(flag, customer, kind, h, 1);
    count(m->j, m->conv, "repeat", what, value, customer, m->conv, key, flag,
          wk.opt.repeat_window_ms, wk.opt.repeat_threshold, "NX");
}

static void on_meta(const redisReply *r, const char *err, void *priv) {
    struct meta_read *m = priv;
    int failed = err || r->type != REDIS_REPLY_ARRAY || r->elements != 3;
    if (!failed && !wk.stopping) {
        const char *customer = r->element[0]->type == REDIS_REPLY_STRING ? r->element[0]->str : "";
        const char *category = r->element[1]->type == REDIS_REPLY_STRING ? r->element[1]->str : "";
        const char *topic = r->element[2]->type == REDIS_REPLY_STRING ? r->element[2]->str : "";
        char norm[TOPIC_MAX + 1], key[KF_KEY_MAX], flag[KF_KEY_MAX];
        topic_norm(topic, norm);
        if (m->opened) {
            if (*customer && *norm) {
                unsigned long long h = kf_hash_str(norm);
                kf_key_trend(key, h, 0);
                kf_key_trend(flag, h, 1);
                count(m->j, m->conv, "trend", "topic", norm, customer, customer, key, flag,
                      wk.opt.trend_window_ms, wk.opt.trend_threshold, "GT");
            }
        } else if (*customer && strlen(customer) <= KF_SUB_MAX) {
            if (*category) count_repeat(m, customer, "category", category);
            if (*norm) count_repeat(m, customer, "topic", norm);
        }
    }
    wk_job_unref(m->j, failed);
    kf_free(m);
}

static void read_meta(wk_job *j, const char *conv, int opened) {
    struct meta_read *m = kf_calloc(1, sizeof(*m));
    m->j = wk_job_ref(j);
    m->opened = opened;
    snprintf(m->conv, sizeof(m->conv), "%s", conv);
    char meta[KF_KEY_MAX];
    kf_key_conv_meta(meta, conv);
    kf_redis_cmd_key(wk.redis, meta, on_meta, m, "HMGET %s customer category topic", meta);
}

void wk_patterns_unsatisfied(wk_job *j, const char *conv, const char *why) {
    if (wk.opt.repeat_threshold <= 0 || !*conv) return;
    kf_debug("conversation %s ended unsatisfied (%s)", conv, why);
    read_meta(j, conv, 0);
}

void wk_patterns_opened(wk_job *j, const char *conv) {
    if (wk.opt.trend_threshold <= 0 || !*conv) return;
    read_meta(j, conv, 1);
}

/* Counted only while the keyword is still configured: a gateway may match with a list up to a
 * second older than this worker's (it reads the published one every second). */
void wk_patterns_keyword(wk_job *j, const char *conv, const char *customer, const char *keyword) {
    if (wk.opt.trend_threshold <= 0 || !*conv || !*customer || !*keyword) return;
    if (strlen(customer) > KF_SUB_MAX) return;
    char kws[KF_KEYWORDS_MAX][KF_KEYWORD_MAX + 1], e[160];
    int n = kf_keywords_parse(wk.opt.trend_keywords, kws, KF_KEYWORDS_MAX, e, sizeof(e));
    int known = 0;
    for (int i = 0; i < n && !known; i++) known = !strcmp(kws[i], keyword);
    if (!known) {
        kf_debug("keyword event of %s for a keyword no longer configured", conv);
        return;
    }
    char key[KF_KEY_MAX], flag[KF_KEY_MAX];
    unsigned long long h = kf_hash_str(keyword);
    kf_key_trend_kw(key, h, 0);
    kf_key_trend_kw(flag, h, 1);
    count(j, conv, "trend", "keyword", keyword, customer, customer, key, flag,
          wk.opt.trend_window_ms, wk.opt.trend_threshold, "GT");
}
