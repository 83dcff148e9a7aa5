/* Service statistics (DOMAIN.md, "Supervision and quality"), kept up to date from lifecycle
 * events, never by scanning. Per local day D of stats_timezone, under one hash tag {st:D}:
 * counters `<metric>|<dim>|<value>` in kefu:{st:D}:n, first-response times in sorted sets for
 * percentiles, and the day's closed conversations (QA sampling picks from them). The gateway's
 * stats.get reads them; docs/architecture.md lists every key and metric.
 *
 * Each event reads what it needs from the conversation's meta and hands its whole share to
 * stats_apply.lua in one call, which applies it only if "<kind>|<conv>" is new in the day's
 * seen set: an event handled twice (a worker died before acknowledging it) counts once.
 * First-contact resolution: a conversation closed `resolved` counts as resolved at first
 * contact until the same customer opens another on the same topic within fcr_days; that
 * opening takes it back (once, on the earlier conversation's day). The customer's last
 * resolved conversation per topic is kept in kefu:{u:<customer>}:fcr for that.
 *
 * The same shares are counted in this process for /metrics (wk_stats_render): a Prometheus
 * summing over workers gets every conversation once. */
#include <event2/buffer.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kefu/alloc.h"
#include "kefu/keys.h"
#include "kefu/log.h"
#include "kefu/service.h"
#include "kefu/token.h"
#include "kefu/tz.h"
#include "wk.h"

static kf_tz tz;
static int tz_loaded;

int wk_stats_configure(const wk_options *o, char *err, size_t errlen) {
    kf_tz fresh;
    char e[200];
    if (kf_tz_load(&fresh, o->stats_timezone, e, sizeof(e)) < 0) {
        snprintf(err, errlen, "stats_timezone: %s", e);
        return -1;
    }
    if (tz_loaded) kf_tz_free(&tz);
    tz = fresh;
    tz_loaded = 1;
    return 0;
}

void wk_stats_stop(void) {
    if (tz_loaded) kf_tz_free(&tz);
    tz_loaded = 0;
}

int64_t wk_stats_day(int64_t t_s) {
    int64_t local = t_s + kf_tz_offset(&tz, t_s);
    return local >= 0 ? local / 86400 : -((-local + 86399) / 86400);
}

void wk_stats_day_str(int64_t day, char out[12]) {
    int64_t y;
    int m, d;
    kf_civil_from_days(day, &y, &m, &d);
    snprintf(out, 12, "%04lld%02d%02d", (long long)y, m, d);
}

/* The local midnight that ends day + stats_days, in unix seconds: a day's keys live stats_days
 * full days after it, whatever the zone's distance from UTC. */
long long wk_stats_expire_at(int64_t day) {
    int64_t local = (day + 1 + wk.opt.stats_days) * 86400;
    return (long long)(local - kf_tz_offset(&tz, local - kf_tz_offset(&tz, local)));
}

/* The local day (YYYYMMDD) and hour of a unix time in ms, and when that day's keys expire. */
typedef struct day {
    char ymd[12];
    int hour;
    long long expire_at; /* unix s */
} day;

static void day_of(long long ms, day *d) {
    int64_t s = ms / 1000;
    int64_t days = wk_stats_day(s);
    wk_stats_day_str(days, d->ymd);
    d->hour = (int)((s + kf_tz_offset(&tz, s) - days * 86400) / 3600);
    d->expire_at = wk_stats_expire_at(days);
}

/* ---- one call of stats_apply.lua, built up ---- */

#define OPS_MAX 64
#define KEYS_MAX 8

typedef struct apply {
    int nkeys, nargs;
    char keys[KEYS_MAX][KF_KEY_MAX];
    const char *argv[KEYS_MAX + 2 + 4 * OPS_MAX];
    char *owned[2 + 3 * OPS_MAX]; /* the strings built for argv, freed after the call */
    int nowned;
    day d;
} apply;

static const char *own(apply *a, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    char buf[512];
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    return a->owned[a->nowned++] = kf_strdup(buf);
}

/* Key index (1-based, as KEYS in the script) of kefu:{st:D}:<suffix>, added when new. */
static int key(apply *a, const char *suffix) {
    char k[KF_KEY_MAX];
    kf_key_stats(k, a->d.ymd, suffix);
    for (int i = 0; i < a->nkeys; i++)
        if (!strcmp(a->keys[i], k)) return i + 1;
    if (a->nkeys == KEYS_MAX) abort(); /* a caller's bug: the sets below fit */
    memcpy(a->keys[a->nkeys], k, sizeof(k));
    return ++a->nkeys;
}

static void apply_init(apply *a, long long ms, const char *kind, const char *conv) {
    memset(a, 0, sizeof(*a));
    day_of(ms, &a->d);
    key(a, "seen");
    key(a, "n");
    a->argv[KEYS_MAX + a->nargs++] = own(a, "%s|%s", kind, conv);
    a->argv[KEYS_MAX + a->nargs++] = own(a, "%lld", a->d.expire_at);
}

/* One operation of stats_apply.lua: 'i' HINCRBY, 'z' ZADD (member x, score v), 'h' HSET. */
static void op_str(apply *a, char code, int k, const char *x, const char *v) {
    if (a->nargs + 4 > 2 + 4 * OPS_MAX) abort(); /* a caller's bug: the shares below fit */
    static const char *const codes[] = {"i", "z", "h"};
    a->argv[KEYS_MAX + a->nargs++] = codes[code == 'i' ? 0 : code == 'z' ? 1 : 2];
    a->argv[KEYS_MAX + a->nargs++] = own(a, "%d", k);
    a->argv[KEYS_MAX + a->nargs++] = own(a, "%s", x);
    a->argv[KEYS_MAX + a->nargs++] = own(a, "%s", v);
}

static void op(apply *a, char code, int k, const char *x, long long v) {
    char n[24];
    snprintf(n, sizeof(n), "%lld", v);
    op_str(a, code, k, x, n);
}

/* HINCRBY n "<metric>|<dim>|<value>" v, for a value that is set. */
static void count(apply *a, const char *metric, const char *dim, const char *value, long long v) {
    if (!value || (!*value && strcmp(dim, "all"))) return;
    char f[320];
    snprintf(f, sizeof(f), "%s|%s|%s", metric, dim, value);
    op(a, 'i', 2, f, v);
}

/* The same metric for the whole day, the channel, the group and (when set) the agent. */
static void count4(apply *a, const char *metric, const char *channel, const char *group,
                   const char *agent, long long v) {
    count(a, metric, "all", "", v);
    count(a, metric, "channel", channel, v);
    count(a, metric, "group", group, v);
    count(a, metric, "agent", agent, v);
}

struct applying {
    wk_job *j;
    void (*done)(struct applying *ap, int applied);
    char conv[72];
    /* what the process counters need once it is applied (kind-specific) */
    char kind;  /* 'o' opened, 'c' closed, 'r' rated, 'f' fcr taken back */
    char channel[64], group[64], priority[16], resolution[32];
    long long fr_ms, ht_ms, stars;
    int met;
    /* closed `resolved`: the customer's fcr record to write once applied */
    char customer[KF_SUB_MAX + 1], topic[512], fcr_value[768];
};

static void on_applied(const redisReply *r, const char *err, void *priv) {
    struct applying *ap = priv;
    int failed = err != NULL || r->type != REDIS_REPLY_INTEGER;
    if (failed)
        kf_warn("statistics of %s not stored: %s", ap->conv,
                err ? err : r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
    else if (ap->done)
        ap->done(ap, r->integer == 1);
    wk_job_unref(ap->j, failed);
    kf_free(ap);
}

static void apply_send(apply *a, struct applying *ap) {
    const char **argv = a->argv + KEYS_MAX - a->nkeys;
    for (int i = 0; i < a->nkeys; i++) argv[i] = a->keys[i];
    kf_redis_script(wk.redis, kf_redis_slot(wk.redis, a->keys[0]), "stats_apply", on_applied, ap,
                    a->nkeys, a->nkeys + a->nargs, argv, NULL);
    for (int i = 0; i < a->nowned; i++) kf_free(a->owned[i]);
}

/* ---- process counters for /metrics ---- */

#define SERIES_MAX 1024
static const double fr_bounds[] = {5, 15, 30, 60, 120, 300, 600, 1800, 3600};
static const double ht_bounds[] = {60, 300, 600, 1200, 1800, 3600, 7200, 14400};
#define FR_B (sizeof(fr_bounds) / sizeof(fr_bounds[0]))
#define HT_B (sizeof(ht_bounds) / sizeof(ht_bounds[0]))

typedef struct series {
    char metric;          /* 'c' conversations, 'r' ratings, 's' sla, 'f' first response, 'h' handling */
    char a[64], b[64];    /* labels: event/stars/priority/channel, channel/met */
    char c[64];           /* group (conversations) */
    uint64_t n;
    uint64_t bucket[10];  /* histograms: cumulative at render */
    double sum;
} series;

static series table[SERIES_MAX];
static int nseries;
static uint64_t series_dropped;

static series *find(char metric, const char *a, const char *b, const char *c) {
    for (int i = 0; i < nseries; i++)
        if (table[i].metric == metric && !strcmp(table[i].a, a) && !strcmp(table[i].b, b) &&
            !strcmp(table[i].c, c))
            return &table[i];
    if (nseries == SERIES_MAX) {
        series_dropped++;
        return NULL;
    }
    series *s = &table[nseries++];
    s->metric = metric;
    snprintf(s->a, sizeof(s->a), "%s", a);
    snprintf(s->b, sizeof(s->b), "%s", b);
    snprintf(s->c, sizeof(s->c), "%s", c);
    return s;
}

static void inc(char metric, const char *a, const char *b, const char *c) {
    series *s = find(metric, a, b, c);
    if (s) s->n++;
}

static void observe(char metric, const char *channel, double v, const double *bounds, size_t nb) {
    series *s = find(metric, channel, "", "");
    if (!s) return;
    s->n++;
    s->sum += v;
    size_t k = 0;
    while (k < nb && v > bounds[k]) k++;
    s->bucket[k]++;
}

static void counted(struct applying *ap, int applied) {
    if (!applied) return;
    switch (ap->kind) {
    case 'o':
        inc('c', "opened", ap->channel, ap->group);
        break;
    case 'c':
        inc('c', "closed", ap->channel, ap->group);
        if (!strcmp(ap->resolution, "resolved")) inc('c', "resolved", ap->channel, ap->group);
        if (!strcmp(ap->resolution, "abandoned")) inc('c', "abandoned", ap->channel, ap->group);
        if (ap->fr_ms >= 0) observe('f', ap->channel, (double)ap->fr_ms / 1000.0, fr_bounds, FR_B);
        if (ap->ht_ms >= 0) observe('h', ap->channel, (double)ap->ht_ms / 1000.0, ht_bounds, HT_B);
        if (*ap->priority) inc('s', ap->priority, ap->met ? "yes" : "no", "");
        break;
    case 'r': {
        char s[8];
        snprintf(s, sizeof(s), "%lld", ap->stars);
        inc('r', s, "", "");
        break;
    }
    default:
        break;
    }
}

/* Label values are operators' and customers' words: escape what the text format needs. */
static void label(struct evbuffer *o, const char *v) {
    for (; *v; v++) {
        if (*v == '\\' || *v == '"') evbuffer_add_printf(o, "\\%c", *v);
        else if (*v == '\n') evbuffer_add(o, "\\n", 2);
        else evbuffer_add(o, v, 1);
    }
}

static void histogram(struct evbuffer *o, const char *name, char metric, const double *bounds,
                      size_t nb) {
    for (int i = 0; i < nseries; i++) {
        const series *s = &table[i];
        if (s->metric != metric) continue;
        uint64_t cum = 0;
        for (size_t k = 0; k <= nb; k++) {
            cum += s->bucket[k];
            evbuffer_add_printf(o, "%s_bucket{channel=\"", name);
            label(o, s->a);
            if (k < nb) evbuffer_add_printf(o, "\",le=\"%g\"} %llu\n", bounds[k], (unsigned long long)cum);
            else evbuffer_add_printf(o, "\",le=\"+Inf\"} %llu\n", (unsigned long long)cum);
        }
        evbuffer_add_printf(o, "%s_sum{channel=\"", name);
        label(o, s->a);
        evbuffer_add_printf(o, "\"} %.3f\n%s_count{channel=\"", s->sum, name);
        label(o, s->a);
        evbuffer_add_printf(o, "\"} %llu\n", (unsigned long long)s->n);
    }
}

void wk_stats_render(struct evbuffer *o) {
    evbuffer_add_printf(o, "# HELP kefu_worker_conversations_total Conversations counted in the statistics by this worker, by event (opened, closed, resolved, abandoned), channel and group.\n# TYPE kefu_worker_conversations_total counter\n");
    for (int i = 0; i < nseries; i++) {
        const series *s = &table[i];
        if (s->metric != 'c') continue;
        evbuffer_add_printf(o, "kefu_worker_conversations_total{event=\"%s\",channel=\"", s->a);
        label(o, s->b);
        evbuffer_add_printf(o, "\",group=\"");
        label(o, s->c);
        evbuffer_add_printf(o, "\"} %llu\n", (unsigned long long)s->n);
    }
    evbuffer_add_printf(o, "# HELP kefu_worker_ratings_total Satisfaction ratings counted by this worker, by stars.\n# TYPE kefu_worker_ratings_total counter\n");
    for (int i = 0; i < nseries; i++)
        if (table[i].metric == 'r')
            evbuffer_add_printf(o, "kefu_worker_ratings_total{stars=\"%s\"} %llu\n", table[i].a,
                                (unsigned long long)table[i].n);
    evbuffer_add_printf(o, "# HELP kefu_worker_sla_conversations_total Closed conversations with a priority, by priority and whether they met every SLA deadline (met=yes) or not.\n# TYPE kefu_worker_sla_conversations_total counter\n");
    for (int i = 0; i < nseries; i++)
        if (table[i].metric == 's') {
            evbuffer_add_printf(o, "kefu_worker_sla_conversations_total{priority=\"");
            label(o, table[i].a);
            evbuffer_add_printf(o, "\",met=\"%s\"} %llu\n", table[i].b, (unsigned long long)table[i].n);
        }
    evbuffer_add_printf(o, "# HELP kefu_worker_first_response_seconds First-response time of closed conversations, by channel.\n# TYPE kefu_worker_first_response_seconds histogram\n");
    histogram(o, "kefu_worker_first_response_seconds", 'f', fr_bounds, FR_B);
    evbuffer_add_printf(o, "# HELP kefu_worker_handling_seconds Handling time (assignment to close) of closed conversations, by channel.\n# TYPE kefu_worker_handling_seconds histogram\n");
    histogram(o, "kefu_worker_handling_seconds", 'h', ht_bounds, HT_B);
    evbuffer_add_printf(o, "# HELP kefu_worker_stats_series_dropped_total Counts not exported because this worker already exports %d label sets.\n# TYPE kefu_worker_stats_series_dropped_total counter\nkefu_worker_stats_series_dropped_total %llu\n",
                        SERIES_MAX, (unsigned long long)series_dropped);
}

/* ---- reading the meta, then applying ---- */

enum { M_STATE, M_CHANNEL, M_GROUP, M_AGENT, M_CUSTOMER, M_TOPIC, M_CATEGORY, M_PRIORITY,
       M_CREATED, M_QUEUED_US, M_ASSIGNED_AT, M_FIRST_RESPONSE, M_CLOSED_AT, M_RESOLUTION,
       M_BREACHES, M_N };
#define META_FIELDS "state channel group agent customer topic category priority created " \
                    "queued_us assigned_at first_response closed_at resolution breaches"

struct meta_read {
    wk_job *j;
    char kind;
    char conv[72];
    long long ts;     /* the event's time */
    long long stars;  /* rated */
};

static const char *mf(const redisReply *r, int i) {
    const redisReply *e = r->element[i];
    return e->type == REDIS_REPLY_STRING ? e->str : "";
}

static long long mi(const redisReply *r, int i) { return atoll(mf(r, i)); }

static struct applying *applying_new(struct meta_read *m, char kind, const redisReply *r) {
    struct applying *ap = kf_calloc(1, sizeof(*ap));
    ap->j = wk_job_ref(m->j);
    ap->done = counted;
    ap->kind = kind;
    ap->fr_ms = ap->ht_ms = -1;
    snprintf(ap->conv, sizeof(ap->conv), "%s", m->conv);
    snprintf(ap->channel, sizeof(ap->channel), "%s", mf(r, M_CHANNEL));
    snprintf(ap->group, sizeof(ap->group), "%s", mf(r, M_GROUP));
    snprintf(ap->priority, sizeof(ap->priority), "%s", mf(r, M_PRIORITY));
    snprintf(ap->resolution, sizeof(ap->resolution), "%s", mf(r, M_RESOLUTION));
    snprintf(ap->customer, sizeof(ap->customer), "%s", mf(r, M_CUSTOMER));
    snprintf(ap->topic, sizeof(ap->topic), "%s", mf(r, M_TOPIC));
    return ap;
}

/* The customer's fcr record: "<conv>|<closed_at>|<day>|<channel>|<group>|<agent>". */
static void fcr_key(char *k, const char *customer) {
    snprintf(k, KF_KEY_MAX, "kefu:{u:%s}:fcr", customer);
}

static void fcr_recorded(struct applying *ap, int applied) {
    counted(ap, applied);
    /* written whether or not this call applied: a retry after a failed write must write it */
    if (!*ap->fcr_value || !*ap->customer) return;
    char k[KF_KEY_MAX], ttl[24];
    fcr_key(k, ap->customer);
    snprintf(ttl, sizeof(ttl), "%lld", wk.opt.fcr_days * 86400000LL);
    const char *argv[] = {"HSET", k, ap->topic, ap->fcr_value};
    kf_redis_argv(wk.redis, kf_redis_slot(wk.redis, k), wk_job_cb, wk_job_ref(ap->j), 4, argv, NULL);
    const char *pargv[] = {"PEXPIRE", k, ttl};
    kf_redis_argv(wk.redis, kf_redis_slot(wk.redis, k), wk_job_cb, wk_job_ref(ap->j), 3, pargv, NULL);
}

static void closed(struct meta_read *m, const redisReply *r) {
    long long at = mi(r, M_CLOSED_AT) > 0 ? mi(r, M_CLOSED_AT) : m->ts;
    const char *ch = mf(r, M_CHANNEL), *g = mf(r, M_GROUP), *ag = mf(r, M_AGENT);
    const char *res = mf(r, M_RESOLUTION);
    struct applying *ap = applying_new(m, 'c', r);
    apply a;
    apply_init(&a, at, "closed", m->conv);
    count4(&a, "closed", ch, g, ag, 1);
    char hh[4];
    snprintf(hh, sizeof(hh), "%02d", a.d.hour);
    count(&a, "closed", "hour", hh, 1);
    if (!strcmp(res, "resolved")) {
        count4(&a, "resolved", ch, g, ag, 1);
        count4(&a, "fcr", ch, g, ag, 1);
        snprintf(ap->fcr_value, sizeof(ap->fcr_value), "%s|%lld|%s|%s|%s|%s", m->conv, at,
                 a.d.ymd, ch, g, ag);
        ap->done = fcr_recorded;
    }
    if (!strcmp(res, "abandoned")) {
        count(&a, "abandoned", "all", "", 1);
        count(&a, "abandoned", "channel", ch, 1);
        count(&a, "abandoned", "group", g, 1);
    }
    /* first response: the first non-customer message's time (its id) after the customer
     * started waiting for a person (queued_us; else the opening) */
    const char *fr = mf(r, M_FIRST_RESPONSE);
    if (*fr) {
        long long start = mi(r, M_QUEUED_US) > 0 ? mi(r, M_QUEUED_US) / 1000 : mi(r, M_CREATED);
        long long t = atoll(fr) - start;
        if (t < 0) t = 0;
        ap->fr_ms = t;
        count4(&a, "fr_n", ch, g, ag, 1);
        count4(&a, "fr_ms", ch, g, ag, t);
        char z[320];
        snprintf(z, sizeof(z), "fr:all|");
        op(&a, 'z', key(&a, z), m->conv, t);
        snprintf(z, sizeof(z), "fr:channel|%s", ch);
        if (*ch) op(&a, 'z', key(&a, z), m->conv, t);
        snprintf(z, sizeof(z), "fr:group|%s", g);
        if (*g) op(&a, 'z', key(&a, z), m->conv, t);
        snprintf(z, sizeof(z), "fr:agent|%s", ag);
        if (*ag) op(&a, 'z', key(&a, z), m->conv, t);
    }
    if (*ag && mi(r, M_ASSIGNED_AT) > 0) {
        long long t = at - mi(r, M_ASSIGNED_AT);
        if (t < 0) t = 0;
        ap->ht_ms = t;
        count4(&a, "ht_n", ch, g, ag, 1);
        count4(&a, "ht_ms", ch, g, ag, t);
        if (wk.opt.survey) count4(&a, "offered", ch, g, ag, 1);
    }
    const char *prio = mf(r, M_PRIORITY);
    if (*prio) {
        const char *b = mf(r, M_BREACHES);
        ap->met = !*b || !strcmp(b, "0");
        count(&a, "sla_n", "all", "", 1);
        count(&a, "sla_n", "priority", prio, 1);
        count(&a, "sla_met", "all", "", ap->met);
        count(&a, "sla_met", "priority", prio, ap->met);
    }
    count(&a, "count", "category", mf(r, M_CATEGORY), 1);
    count(&a, "count", "topic", mf(r, M_TOPIC), 1);
    op(&a, 'z', key(&a, "closed"), m->conv, at);
    op_str(&a, 'h', key(&a, "agent"), m->conv, ag);
    apply_send(&a, ap);
}

static void opened(struct meta_read *m, const redisReply *r) {
    long long created = mi(r, M_CREATED) > 0 ? mi(r, M_CREATED) : m->ts;
    const char *ch = mf(r, M_CHANNEL), *g = mf(r, M_GROUP);
    struct applying *ap = applying_new(m, 'o', r);
    apply a;
    apply_init(&a, created, "opened", m->conv);
    count(&a, "opened", "all", "", 1);
    count(&a, "opened", "channel", ch, 1);
    count(&a, "opened", "group", g, 1);
    char hh[4];
    snprintf(hh, sizeof(hh), "%02d", a.d.hour);
    count(&a, "opened", "hour", hh, 1);
    apply_send(&a, ap);
}

static void rated(struct meta_read *m, const redisReply *r) {
    if (m->stars < 1 || m->stars > 5) return;
    long long at = mi(r, M_CLOSED_AT) > 0 ? mi(r, M_CLOSED_AT) : m->ts;
    const char *ch = mf(r, M_CHANNEL), *g = mf(r, M_GROUP), *ag = mf(r, M_AGENT);
    struct applying *ap = applying_new(m, 'r', r);
    ap->stars = m->stars;
    apply a;
    apply_init(&a, at, "rated", m->conv);
    char sk[16];
    snprintf(sk, sizeof(sk), "stars_%lld", m->stars);
    count4(&a, "rated", ch, g, ag, 1);
    count4(&a, "stars_sum", ch, g, ag, m->stars);
    count4(&a, sk, ch, g, ag, 1);
    apply_send(&a, ap);
}

/* A new conversation of the customer on the topic of their last resolved one, within fcr_days
 * of its close: that one was not resolved at first contact after all. */
struct fcr_check {
    wk_job *j;
    char conv[72];
    long long created;
};

static void on_fcr_record(const redisReply *r, const char *err, void *priv) {
    struct fcr_check *fc = priv;
    int failed = err != NULL || (r->type != REDIS_REPLY_STRING && r->type != REDIS_REPLY_NIL);
    if (!failed && r->type == REDIS_REPLY_STRING) {
        /* <conv>|<closed_at>|<day>|<channel>|<group>|<agent> */
        char v[768], *f[6] = {0};
        snprintf(v, sizeof(v), "%s", r->str);
        int n = 0;
        for (char *p = v, *s = v; n < 6; p++) {
            if (*p == '|' || *p == '\0') {
                int end = *p == '\0';
                *p = '\0';
                f[n++] = s;
                s = p + 1;
                if (end) break;
            }
        }
        long long closed_at = n == 6 ? atoll(f[1]) : 0;
        if (n == 6 && strcmp(f[0], fc->conv) && closed_at > 0 && fc->created >= closed_at &&
            fc->created - closed_at <= wk.opt.fcr_days * 86400000LL && strlen(f[2]) == 8) {
            struct applying *ap = kf_calloc(1, sizeof(*ap));
            ap->j = wk_job_ref(fc->j);
            ap->kind = 'f';
            snprintf(ap->conv, sizeof(ap->conv), "%s", f[0]);
            apply a;
            apply_init(&a, closed_at, "fcr-taken-back", f[0]);
            snprintf(a.d.ymd, sizeof(a.d.ymd), "%s", f[2]); /* the day it was counted on */
            kf_key_stats(a.keys[0], f[2], "seen");
            kf_key_stats(a.keys[1], f[2], "n");
            count4(&a, "fcr", f[3], f[4], f[5], -1);
            apply_send(&a, ap);
        }
    }
    wk_job_unref(fc->j, failed);
    kf_free(fc);
}

static void fcr_check(struct meta_read *m, const redisReply *r) {
    const char *customer = mf(r, M_CUSTOMER);
    if (!*customer || wk.opt.fcr_days <= 0) return;
    struct fcr_check *fc = kf_calloc(1, sizeof(*fc));
    fc->j = wk_job_ref(m->j);
    snprintf(fc->conv, sizeof(fc->conv), "%s", m->conv);
    fc->created = mi(r, M_CREATED) > 0 ? mi(r, M_CREATED) : m->ts;
    char k[KF_KEY_MAX];
    fcr_key(k, customer);
    const char *argv[] = {"HGET", k, mf(r, M_TOPIC)};
    kf_redis_argv(wk.redis, kf_redis_slot(wk.redis, k), on_fcr_record, fc, 3, argv, NULL);
}

static void on_meta(const redisReply *r, const char *err, void *priv) {
    struct meta_read *m = priv;
    int failed = err != NULL || r->type != REDIS_REPLY_ARRAY || r->elements != M_N;
    /* a conversation whose meta is gone (trimmed) is not counted */
    if (!failed && !wk.stopping && (*mf(r, M_STATE) || *mf(r, M_CUSTOMER))) {
        if (m->kind == 'o') {
            opened(m, r);
            fcr_check(m, r);
        } else if (m->kind == 'c') {
            closed(m, r);
        } else {
            rated(m, r);
        }
    }
    if (failed) kf_warn("statistics of %s: meta not read: %s", m->conv, err ? err : "bad reply");
    wk_job_unref(m->j, failed);
    kf_free(m);
}

static void read_meta(wk_job *j, char kind, const char *conv, long long ts, long long stars) {
    if (!*conv || !tz_loaded) return;
    struct meta_read *m = kf_calloc(1, sizeof(*m));
    m->j = wk_job_ref(j);
    m->kind = kind;
    snprintf(m->conv, sizeof(m->conv), "%s", conv);
    m->ts = ts;
    m->stars = stars;
    char meta[KF_KEY_MAX];
    kf_key_conv_meta(meta, conv);
    kf_redis_cmd_key(wk.redis, meta, on_meta, m, "HMGET %s " META_FIELDS, meta);
}

void wk_stats_opened(wk_job *j, const char *conv, long long ts) { read_meta(j, 'o', conv, ts, 0); }
void wk_stats_closed(wk_job *j, const char *conv, long long ts) { read_meta(j, 'c', conv, ts, 0); }
void wk_stats_rated(wk_job *j, const char *conv, long long ts, long long stars) {
    read_meta(j, 'r', conv, ts, stars);
}
