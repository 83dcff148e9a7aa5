/* QA sampling: each local day (stats_timezone) the worker makes sure the previous day's sample
 * of closed conversations exists, at start-up and shortly after midnight (qa_delay_s).
 *
 * The draw is reproducible: every conversation closed on day D (kefu:{st:D}:closed, its agent
 * from kefu:{st:D}:agent) is ranked by the 64-bit FNV-1a of "<qa_seed>|<D>|<conv>" (ascending,
 * the conversation id breaking ties); the ceil(qa_rate x n) best ranked are taken, then each
 * agent with fewer than qa_min_per_agent gets its best-ranked others. So any worker with the
 * same seed draws the same sample, and qa_sample.lua stores it only when none is stored yet:
 * several workers draw, the first one writes, nothing changes afterwards. */
#include <event2/event.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kefu/alloc.h"
#include "kefu/hash.h"
#include "kefu/keys.h"
#include "kefu/log.h"
#include "wk.h"

#define QA_TICK_MS 1000
#define QA_RETRY_MS 10000 /* after a failed draw: Redis trouble is logged once per this */

static struct {
    int64_t done_day; /* the last day (days since 1970-01-01) known to have its sample */
    int busy;         /* a draw is under way */
    int64_t retry_at; /* no draw before this (ms) after a failure */
    struct event *tick;
} qa;

/* One conversation of the day. */
struct cand {
    const char *conv;  /* into the draw's copies */
    const char *agent; /* "" when none */
    uint64_t h;
    size_t rank;
    int picked;
};

struct draw {
    int64_t day;
    char d[16]; /* YYYYMMDD */
    int pending, failed;
    char **convs;  /* closed that day */
    size_t nconvs;
    char **agents; /* conv, agent, conv, agent... (HGETALL of the agent hash) */
    size_t nagents;
};

int wk_qa_check(const wk_options *o, char *err, size_t errlen) {
    char *end = NULL;
    double rate = strtod(o->qa_rate, &end);
    if (!*o->qa_rate || *end || !(rate >= 0 && rate <= 1)) {
        snprintf(err, errlen, "qa_rate must be a number in 0..1");
        return -1;
    }
    return 0;
}

static void draw_free(struct draw *dr) {
    for (size_t i = 0; i < dr->nconvs; i++) kf_free(dr->convs[i]);
    for (size_t i = 0; i < dr->nagents; i++) kf_free(dr->agents[i]);
    kf_free(dr->convs);
    kf_free(dr->agents);
    kf_free(dr);
}

static int by_hash(const void *a, const void *b) {
    const struct cand *x = a, *y = b;
    if (x->h != y->h) return x->h < y->h ? -1 : 1;
    return strcmp(x->conv, y->conv);
}

static int by_agent_rank(const void *a, const void *b) {
    const struct cand *x = *(const struct cand *const *)a, *y = *(const struct cand *const *)b;
    int c = strcmp(x->agent, y->agent);
    if (c) return c;
    return x->rank < y->rank ? -1 : x->rank > y->rank;
}

static int by_conv(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static const char *agent_of(char **pairs, size_t npairs, const char *conv) {
    size_t lo = 0, hi = npairs / 2;
    while (lo < hi) { /* pairs sorted by conversation (even indices) */
        size_t mid = (lo + hi) / 2;
        int c = strcmp(pairs[2 * mid], conv);
        if (c == 0) return pairs[2 * mid + 1];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return "";
}

static void on_stored(const redisReply *r, const char *err, void *priv) {
    struct draw *dr = priv;
    kf_script_ans a;
    char tag = kf_script_parse(r, err, 2, &a);
    qa.busy = 0;
    if (!tag) {
        qa.retry_at = wk_now_ms() + QA_RETRY_MS;
        if (a.kind == KF_SCRIPT_BROKEN) kf_error("qa_sample: %s", a.detail ? a.detail : "bad reply");
        else if (!wk.stopping) kf_warn("QA sample of %s not stored: %s", dr->d, a.code);
    } else {
        qa.done_day = dr->day;
        long long size = atoll(r->element[1]->str);
        if (tag == 'S') {
            wk.stats.qa_samples++;
            wk.stats.qa_sampled += (uint64_t)size;
            kf_info("QA sample of %s drawn: %lld of %zu closed conversations", dr->d, size,
                    dr->nconvs);
        } else {
            kf_debug("QA sample of %s was drawn already (%lld conversations)", dr->d, size);
        }
    }
    draw_free(dr);
}

/* Ranks the day's conversations, picks the sample and stores it (the caller's draw is freed by
 * on_stored). */
static void draw_sample(struct draw *dr) {
    size_t n = dr->nconvs;
    qsort(dr->agents, dr->nagents / 2, 2 * sizeof(char *), by_conv);
    struct cand *c = kf_calloc(n ? n : 1, sizeof(*c));
    const char *seed = wk.opt.qa_seed;
    for (size_t i = 0; i < n; i++) {
        c[i].conv = dr->convs[i];
        c[i].agent = agent_of(dr->agents, dr->nagents, dr->convs[i]);
        uint64_t h = kf_hash_more(KF_FNV_OFFSET, seed, strlen(seed));
        h = kf_hash_more(h, "|", 1);
        h = kf_hash_more(h, dr->d, strlen(dr->d));
        h = kf_hash_more(h, "|", 1);
        c[i].h = kf_hash_more(h, c[i].conv, strlen(c[i].conv));
    }
    qsort(c, n, sizeof(*c), by_hash);
    /* ceil(rate x n), forgiving the error of a decimal rate in binary (0.07 x 100 is 7, not 8) */
    double want = ceil(strtod(wk.opt.qa_rate, NULL) * (double)n - 1e-9);
    size_t k = want <= 0 ? 0 : want >= (double)n ? n : (size_t)want;
    for (size_t i = 0; i < n; i++) {
        c[i].rank = i;
        c[i].picked = i < k;
    }
    /* the minimum per agent: walk each agent's conversations in rank order */
    struct cand **byagent = kf_calloc(n ? n : 1, sizeof(*byagent));
    for (size_t i = 0; i < n; i++) byagent[i] = &c[i];
    qsort(byagent, n, sizeof(*byagent), by_agent_rank);
    long long min = wk.opt.qa_min_per_agent;
    for (size_t i = 0; i < n;) {
        size_t j = i, have = 0;
        while (j < n && !strcmp(byagent[j]->agent, byagent[i]->agent)) have += byagent[j++]->picked;
        if (*byagent[i]->agent)
            for (size_t x = i; x < j && (long long)have < min; x++)
                if (!byagent[x]->picked) byagent[x]->picked = 1, have++;
        i = j;
    }
    kf_free(byagent);
    size_t size = 0;
    for (size_t i = 0; i < n; i++) size += c[i].picked;
    /* expiry, n, k, rate, min, by, at, then rank/conv pairs */
    size_t argc = 2 + 7 + 2 * size;
    const char **argv = kf_calloc(argc, sizeof(char *));
    char (*ranks)[24] = kf_calloc(size ? size : 1, sizeof(*ranks));
    char info[KF_KEY_MAX], sample[KF_KEY_MAX], expire[24], sn[24], sk[24], smin[24], at[24];
    kf_key_qa(info, dr->d, "info");
    kf_key_qa(sample, dr->d, "sample");
    /* kept as long as the day's statistics */
    snprintf(expire, sizeof(expire), "%lld", wk_stats_expire_at(dr->day));
    snprintf(sn, sizeof(sn), "%zu", n);
    snprintf(sk, sizeof(sk), "%zu", k);
    snprintf(smin, sizeof(smin), "%lld", min);
    snprintf(at, sizeof(at), "%lld", (long long)wk_now_ms());
    size_t a = 0;
    argv[a++] = info;
    argv[a++] = sample;
    argv[a++] = expire;
    argv[a++] = sn;
    argv[a++] = sk;
    argv[a++] = wk.opt.qa_rate;
    argv[a++] = smin;
    argv[a++] = wk.consumer;
    argv[a++] = at;
    for (size_t i = 0, s = 0; i < n; i++) {
        if (!c[i].picked) continue;
        snprintf(ranks[s], sizeof(ranks[s]), "%zu", c[i].rank);
        argv[a++] = ranks[s++];
        argv[a++] = c[i].conv;
    }
    kf_redis_script(wk.redis, kf_redis_slot(wk.redis, info), "qa_sample", on_stored, dr, 2,
                    (int)argc, argv, NULL);
    kf_free(ranks);
    kf_free(argv);
    kf_free(c);
}

/* Copies the strings of an array reply (NULL entries as ""); -1 when it is not one. */
static int copy_strings(const redisReply *r, char ***out, size_t *n) {
    if (r->type != REDIS_REPLY_ARRAY) return -1;
    *out = kf_calloc(r->elements ? r->elements : 1, sizeof(char *));
    for (size_t i = 0; i < r->elements; i++)
        (*out)[i] = kf_strdup(r->element[i]->type == REDIS_REPLY_STRING ? r->element[i]->str : "");
    *n = r->elements;
    return 0;
}

static void on_read(const redisReply *r, const char *err, void *priv, int agents) {
    struct draw *dr = priv;
    if (err || (agents ? copy_strings(r, &dr->agents, &dr->nagents)
                       : copy_strings(r, &dr->convs, &dr->nconvs)) < 0)
        dr->failed = 1;
    if (--dr->pending) return;
    if (dr->failed || wk.stopping || (dr->nagents & 1)) {
        if (!wk.stopping) kf_warn("QA sample of %s: the day's conversations could not be read", dr->d);
        qa.retry_at = wk_now_ms() + QA_RETRY_MS;
        qa.busy = 0;
        draw_free(dr);
        return;
    }
    draw_sample(dr);
}

static void on_closed(const redisReply *r, const char *err, void *priv) { on_read(r, err, priv, 0); }
static void on_agents(const redisReply *r, const char *err, void *priv) { on_read(r, err, priv, 1); }

static void on_tick(evutil_socket_t fd, short what, void *arg) {
    (void)fd, (void)what, (void)arg;
    if (qa.busy || wk.draining || wk.stopping || wk_now_ms() < qa.retry_at) return;
    /* the day before the one (now - qa_delay_s) falls in, in stats_timezone (stats.c loads
     * it, at start and on SIGHUP) */
    int64_t day = wk_stats_day(wk_now_ms() / 1000 - wk.opt.qa_delay_s) - 1;
    if (day == qa.done_day) return;
    char info[KF_KEY_MAX];
    struct draw *dr = kf_calloc(1, sizeof(*dr));
    dr->day = day;
    wk_stats_day_str(day, dr->d);
    kf_key_qa(info, dr->d, "info");
    char closed[KF_KEY_MAX], agent[KF_KEY_MAX];
    kf_key_stats(closed, dr->d, "closed");
    kf_key_stats(agent, dr->d, "agent");
    if (!kf_redis_is_up(wk.redis, kf_redis_slot(wk.redis, info)) ||
        !kf_redis_is_up(wk.redis, kf_redis_slot(wk.redis, closed))) {
        kf_free(dr);
        return;
    }
    /* Drawn whether or not a sample exists already: qa_sample.lua keeps the first one; reading
     * first would save the draw once a day per worker, not worth a second round trip. */
    qa.busy = 1;
    dr->pending = 2;
    kf_redis_cmd_key(wk.redis, closed, on_closed, dr, "ZRANGE %s 0 -1", closed);
    kf_redis_cmd_key(wk.redis, agent, on_agents, dr, "HGETALL %s", agent);
}

void wk_qa_start(void) {
    qa.done_day = INT64_MIN;
    qa.tick = wk_timer_every(QA_TICK_MS, on_tick, NULL);
}

void wk_qa_stop(void) {
    event_free(qa.tick);
}
