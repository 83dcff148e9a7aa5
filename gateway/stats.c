/* stats.get: the statistics of a range of local days, read from the counters the worker keeps
 * per day (kefu:{st:YYYYMMDD}:n, a hash of `<metric>|<dim>|<value>` -> count, and the
 * first-response times kefu:{st:YYYYMMDD}:fr:<dim>|<value>, a sorted set conversation -> ms).
 *
 * The worker already put every event on the local day of its time zone, so the gateway does
 * civil-calendar arithmetic only: days, ISO weeks and months are groups of day keys. A request
 * reads its days a few at a time (STATS_INFLIGHT), each day's counters first, then the
 * first-response sets of the rows that day has: one day's keys share a slot, so on a Redis
 * Cluster a day is one server. A day without keys counts zero. Everything is summed into rows
 * (period, breakdown value) and into range-wide tallies (SLA, categories, topics, hours), and
 * answered once the last day is in. */
#include "stats.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gateway.h"
#include "request.h"
#include "kefu/alloc.h"
#include "kefu/hash.h"
#include "kefu/log.h"
#include "kefu/redis.h"
#include "kefu/service.h"
#include "kefu/tz.h"
#include "kefu/utf8.h"

#define STATS_DAYS_MAX 366 /* a range covers at most this many days */
#define STATS_INFLIGHT 4   /* days whose reads are in flight at once, per request */
/* Rows per answer: one per STATS_ROW_BYTES of outq_max_bytes (a row takes 400-600 bytes), so that
 * the answer stays one frame the connection may queue. */
#define STATS_ROW_BYTES 1024
#define STATS_TOP_MAX 50
#define STATS_TOP_DEFAULT 10
#define NO_VALUE INT64_MIN /* a percentile of nothing (a time may be a little negative: clocks) */

enum { BY_DAY, BY_WEEK, BY_MONTH, BY_TOTAL };
static const char *const by_names[] = {"day", "week", "month", "total", NULL};

/* The breakdown's name is also its dimension in the counters' fields. */
enum { BD_ALL, BD_CHANNEL, BD_GROUP, BD_AGENT };
static const char *const breakdown_names[] = {"all", "channel", "group", "agent", NULL};

/* A row's counters, by metric name as the worker writes them (docs/protocol.md). */
enum {
    M_OPENED, M_CLOSED, M_RESOLVED, M_ABANDONED, M_FCR, M_FR_N, M_FR_MS, M_HT_N, M_HT_MS,
    M_OFFERED, M_RATED, M_STARS_SUM, M_STARS_1, M_STARS_2, M_STARS_3, M_STARS_4, M_STARS_5,
    M_QA_N, M_QA_SCORE, M__COUNT
};
static const char *const metric_names[M__COUNT] = {
    "opened", "closed", "resolved", "abandoned", "fcr", "fr_n", "fr_ms", "ht_n", "ht_ms",
    "offered", "rated", "stars_sum", "stars_1", "stars_2", "stars_3", "stars_4", "stars_5",
    "qa_n", "qa_score"};

/* One answer row: a period and a value of the breakdown ("" for all). */
typedef struct row {
    UT_hash_handle hh;
    char *key; /* "<period index>|<value>": the table's key */
    const char *value; /* inside key */
    int period;
    long long m[M__COUNT];
    int64_t *fr; /* first-response times (ms) of the row's days, until its period is read */
    size_t nfr, capfr;
    int64_t p50, p90; /* nearest-rank percentiles once the period is read; NO_VALUE: none */
} row;

/* A range-wide count by name: SLA per priority (a = conversations, b = met), categories and
 * topics (a = conversations). */
typedef struct tally {
    UT_hash_handle hh;
    char *name;
    long long a, b;
} tally;

typedef struct period {
    int64_t first, last; /* days inside the range */
    char label[16];
    long long opened_all; /* opened|all| over the period: the channels' share */
    int days_left;        /* days not read yet */
} period;

typedef struct stats_req {
    req_ctx *x;
    int by, breakdown, top;
    size_t rows_max;
    int64_t first; /* days since 1970-01-01 */
    int ndays;
    int next;     /* next day to read (index from first) */
    int inflight; /* days being read */
    const char *fail; /* error code once a read failed: no more days are started */
    int *day_period;  /* period index of each day */
    period *periods;
    int nperiods;
    row *rows;
    size_t nrows;
    tally *sla, *categories, *topics;
    long long hours[24];
} stats_req;

/* The reads of one day: its counters, then the first-response sets they call for. */
typedef struct day_read {
    stats_req *s;
    int day;
    int pending; /* commands not answered yet */
} day_read;

typedef struct fr_read {
    day_read *d;
    row *r;
} fr_read;

static void pump(stats_req *s);

/* ---- dates ---- */

static void date_str(int64_t days, char out[11]) {
    int64_t y;
    int m, d;
    kf_civil_from_days(days, &y, &m, &d);
    snprintf(out, 11, "%04d-%02d-%02d", (int)y, m, d);
}

/* The day of the key: YYYYMMDD. */
static void day_tag(int64_t days, char out[9]) {
    int64_t y;
    int m, d;
    kf_civil_from_days(days, &y, &m, &d);
    snprintf(out, 9, "%04d%02d%02d", (int)y, m, d);
}

/* Monday of the ISO week of a day. */
static int64_t week_monday(int64_t days) { return days - (kf_weekday(days) + 6) % 7; }

/* Which period a day belongs to: equal for the days of one period, increasing with the day. */
static int64_t period_of(int by, int64_t days) {
    int64_t y;
    int m, d;
    switch (by) {
    case BY_DAY: return days;
    case BY_WEEK: return week_monday(days);
    case BY_MONTH: kf_civil_from_days(days, &y, &m, &d); return y * 12 + m;
    default: return 0;
    }
}

static void period_label(int by, int64_t days, char out[16]) {
    int64_t y;
    int m, d;
    switch (by) {
    case BY_DAY: date_str(days, out); break;
    case BY_WEEK: {
        /* ISO 8601: the week belongs to the year of its Thursday and is numbered from the
         * week holding that year's first Thursday. */
        int64_t thu = week_monday(days) + 3;
        kf_civil_from_days(thu, &y, &m, &d);
        int64_t week = (thu - kf_days_from_civil(y, 1, 1)) / 7 + 1;
        snprintf(out, 16, "%04d-W%02d", (int)y, (int)week);
        break;
    }
    case BY_MONTH:
        kf_civil_from_days(days, &y, &m, &d);
        snprintf(out, 16, "%04d-%02d", (int)y, m);
        break;
    default: snprintf(out, 16, "total"); break;
    }
}

/* "YYYY-MM-DD" with digits where digits belong (kf_parse_date's sscanf alone would take a sign
 * or a space). */
static int parse_day(const char *s, int64_t *days) {
    size_t len = strlen(s);
    if (len != 10) return -1;
    for (size_t i = 0; i < len; i++)
        if (i != 4 && i != 7 && (s[i] < '0' || s[i] > '9')) return -1;
    return kf_parse_date(s, len, days);
}

/* ---- rows and tallies ---- */

static void fail(stats_req *s, const char *code) {
    if (!s->fail) s->fail = code;
}

/* The row of (period, value), created on first use; NULL once the answer would have more than
 * rows_max rows (the request then fails too_large). */
static row *row_get(stats_req *s, int p, const char *value, size_t vlen) {
    char key[24 + KF_KEY_MAX];
    int n = snprintf(key, sizeof(key), "%d|%.*s", p, (int)vlen, value);
    if (n < 0 || (size_t)n >= sizeof(key)) return NULL;
    row *r;
    HASH_FIND(hh, s->rows, key, (size_t)n, r);
    if (r) return r;
    if (s->nrows >= s->rows_max) {
        fail(s, "too_large");
        return NULL;
    }
    r = kf_calloc(1, sizeof(*r));
    r->key = kf_strdup(key);
    r->value = strchr(r->key, '|') + 1;
    r->period = p;
    r->p50 = r->p90 = NO_VALUE;
    HASH_ADD_KEYPTR(hh, s->rows, r->key, (size_t)n, r);
    s->nrows++;
    return r;
}

static tally *tally_get(tally **t, const char *name, size_t len) {
    tally *e;
    HASH_FIND(hh, *t, name, len, e);
    if (e) return e;
    e = kf_calloc(1, sizeof(*e));
    e->name = kf_malloc(len + 1);
    memcpy(e->name, name, len);
    e->name[len] = '\0';
    HASH_ADD_KEYPTR(hh, *t, e->name, len, e);
    return e;
}

static void tally_free(tally **t) {
    tally *e, *tmp;
    HASH_ITER(hh, *t, e, tmp) {
        HASH_DEL(*t, e);
        kf_free(e->name);
        kf_free(e);
    }
}

static void stats_free(stats_req *s) {
    row *r, *tmp;
    HASH_ITER(hh, s->rows, r, tmp) {
        HASH_DEL(s->rows, r);
        kf_free(r->key);
        kf_free(r->fr);
        kf_free(r);
    }
    tally_free(&s->sla);
    tally_free(&s->categories);
    tally_free(&s->topics);
    kf_free(s->day_period);
    kf_free(s->periods);
    gw_ctx_free(s->x);
    kf_free(s);
}

/* ---- reading a day ---- */

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Nearest rank: the ceil(p x n)-th smallest of sorted v, p given in tenths; NO_VALUE for none. */
static int64_t nearest_rank(const int64_t *v, size_t n, int tenths) {
    return n ? v[(n * (size_t)tenths + 9) / 10 - 1] : NO_VALUE;
}

/* Every day of period p is in: its rows' percentiles are final, and their first-response
 * times are let go, so a request holds the times of one period (and the days in flight) at a
 * time, not of the whole range (except by total). */
static void period_done(stats_req *s, int p) {
    for (row *r = s->rows; r; r = r->hh.next) {
        if (r->period != p) continue;
        if (r->nfr > 1) qsort(r->fr, r->nfr, sizeof(*r->fr), cmp_i64);
        r->p50 = nearest_rank(r->fr, r->nfr, 5);
        r->p90 = nearest_rank(r->fr, r->nfr, 9);
        kf_free(r->fr);
        r->fr = NULL;
        r->nfr = r->capfr = 0;
    }
}

static void day_done(day_read *d) {
    if (--d->pending > 0) return;
    stats_req *s = d->s;
    int p = s->day_period[d->day];
    if (--s->periods[p].days_left == 0 && !s->fail) period_done(s, p);
    kf_free(d);
    s->inflight--;
    pump(s);
}

/* A reply that failed: the request answers unavailable (Redis unreachable or too slow) or
 * internal (a Redis error reply: a key of another type, a bug). Returns 1 when r is unusable. */
static int read_failed(stats_req *s, const redisReply *r, const char *err, int want) {
    if (err) {
        fail(s, "unavailable");
        return 1;
    }
    if (r->type == REDIS_REPLY_ERROR) {
        kf_error("stats.get: redis error: %s", r->str);
        fail(s, "internal");
        return 1;
    }
    if (r->type != want) {
        kf_error("stats.get: unexpected reply type %d", r->type);
        fail(s, "internal");
        return 1;
    }
    return 0;
}

static void on_fr(const redisReply *r, const char *err, void *priv) {
    fr_read *f = priv;
    day_read *d = f->d;
    stats_req *s = d->s;
    if (!read_failed(s, r, err, REDIS_REPLY_ARRAY) && !s->fail) {
        row *w = f->r;
        /* member, score, member, score, ... (RESP2, what hiredis speaks here) */
        size_t n = r->elements / 2;
        if (w->nfr + n > w->capfr) {
            w->capfr = (w->nfr + n) * 2;
            w->fr = kf_realloc(w->fr, w->capfr * sizeof(*w->fr));
        }
        for (size_t i = 0; i < n; i++) {
            const redisReply *sc = r->element[2 * i + 1];
            if (sc->type == REDIS_REPLY_STRING)
                w->fr[w->nfr++] = (int64_t)llround(strtod(sc->str, NULL));
        }
    }
    kf_free(f);
    day_done(d);
}

static int metric_index(const char *name, size_t len) {
    for (int i = 0; i < M__COUNT; i++)
        if (strlen(metric_names[i]) == len && !memcmp(metric_names[i], name, len)) return i;
    return -1;
}

static int is(const char *s, size_t len, const char *lit) {
    return strlen(lit) == len && !memcmp(s, lit, len);
}

/* Adds one counter field `<metric>|<dim>|<value>` of day d. Fields this gateway does not know
 * (a newer worker's) are skipped. */
static void add_field(stats_req *s, day_read *d, const char *f, size_t flen, long long v) {
    const char *b1 = memchr(f, '|', flen);
    if (!b1) return;
    const char *dim = b1 + 1;
    const char *b2 = memchr(dim, '|', flen - (size_t)(dim - f));
    if (!b2) return;
    const char *metric = f, *value = b2 + 1;
    size_t mlen = (size_t)(b1 - f), dlen = (size_t)(b2 - dim);
    size_t vlen = flen - (size_t)(value - f);
    int p = s->day_period[d->day];
    /* answered as strings: the worker writes validated values, this keeps it so */
    if (memchr(value, '\0', vlen) || !kf_utf8_valid(value, vlen)) return;

    if (is(dim, dlen, "hour")) {
        if (is(metric, mlen, "opened") && vlen == 2 && value[0] >= '0' && value[0] <= '2' &&
            value[1] >= '0' && value[1] <= '9') {
            int h = (value[0] - '0') * 10 + (value[1] - '0');
            if (h < 24) s->hours[h] += v;
        }
        return;
    }
    if (is(dim, dlen, "priority")) {
        int met = is(metric, mlen, "sla_met");
        if (met || is(metric, mlen, "sla_n")) {
            tally *t = tally_get(&s->sla, value, vlen);
            if (met)
                t->b += v;
            else
                t->a += v;
        }
        return;
    }
    if (is(dim, dlen, "category") || is(dim, dlen, "topic")) {
        if (is(metric, mlen, "count"))
            tally_get(dim[0] == 'c' ? &s->categories : &s->topics, value, vlen)->a += v;
        return;
    }
    int m = metric_index(metric, mlen);
    if (m < 0) return;
    if (is(dim, dlen, "all") && m == M_OPENED) s->periods[p].opened_all += v;
    if (!is(dim, dlen, breakdown_names[s->breakdown])) return;
    row *r = row_get(s, p, value, vlen);
    if (!r) return;
    r->m[m] += v;
    if (m == M_FR_N && v > 0) {
        /* this day has first responses for the row: their times, for the percentiles */
        char tag[9], key[KF_KEY_MAX];
        day_tag(s->first + d->day, tag);
        int kl = snprintf(key, sizeof(key), "kefu:{st:%s}:fr:%.*s", tag, (int)(flen - mlen - 1),
                          dim);
        if (kl < 0 || (size_t)kl >= sizeof(key)) return; /* no such key: ids are shorter */
        fr_read *fr = kf_malloc(sizeof(*fr));
        fr->d = d;
        fr->r = r;
        d->pending++;
        kf_redis_cmd_key(gw->redis, key, on_fr, fr, "ZRANGE %s 0 -1 WITHSCORES", key);
    }
}

static void on_counters(const redisReply *r, const char *err, void *priv) {
    day_read *d = priv;
    stats_req *s = d->s;
    if (!read_failed(s, r, err, REDIS_REPLY_ARRAY) && !s->fail) {
        for (size_t i = 0; i + 1 < r->elements && !s->fail; i += 2) {
            const redisReply *f = r->element[i], *v = r->element[i + 1];
            if (f->type != REDIS_REPLY_STRING) continue;
            long long n = 0;
            if (v->type == REDIS_REPLY_STRING)
                n = strtoll(v->str, NULL, 10);
            else if (v->type == REDIS_REPLY_INTEGER)
                n = v->integer;
            add_field(s, d, f->str, f->len, n);
        }
    }
    day_done(d);
}

static void day_start(stats_req *s, int day) {
    day_read *d = kf_calloc(1, sizeof(*d));
    d->s = s;
    d->day = day;
    d->pending = 1;
    s->inflight++;
    char tag[9], key[KF_KEY_MAX];
    day_tag(s->first + day, tag);
    snprintf(key, sizeof(key), "kefu:{st:%s}:n", tag);
    kf_redis_cmd_key(gw->redis, key, on_counters, d, "HGETALL %s", key);
}

/* ---- the answer ---- */

/* num/den rounded half up to 1/scale; null when den is 0. */
static json_t *ratio(long long num, long long den, double scale) {
    if (den == 0) return json_null();
    return json_real(floor((double)num / (double)den * scale + 0.5) / scale);
}

static long long floor_div(long long a, long long b) {
    long long q = a / b;
    return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

/* A mean in whole milliseconds, rounded half up (exactly, in integers); null when n is 0. */
static json_t *mean_ms(long long sum, long long n) {
    if (n <= 0) return json_null();
    return json_integer(floor_div(2 * sum + n, 2 * n));
}

static json_t *ms_or_null(int64_t v) { return v == NO_VALUE ? json_null() : json_integer(v); }

static json_t *counter_or_null(const stats_req *s, const row *r, int m) {
    /* opened and abandoned are not kept per agent: a conversation has none when it opens,
     * and an abandoned one never had one */
    if (s->breakdown == BD_AGENT && (m == M_OPENED || m == M_ABANDONED)) return json_null();
    return json_integer(r->m[m]);
}

static json_t *row_json(const stats_req *s, row *r) {
    const period *p = &s->periods[r->period];
    const long long *m = r->m;
    char from[11], to[11];
    date_str(p->first, from);
    date_str(p->last, to);
    json_t *dist = json_pack("[I, I, I, I, I]", (json_int_t)m[M_STARS_1], (json_int_t)m[M_STARS_2],
                             (json_int_t)m[M_STARS_3], (json_int_t)m[M_STARS_4],
                             (json_int_t)m[M_STARS_5]);
    json_t *o = json_pack(
        "{s:s, s:s, s:s, s:o, s:o, s:I, s:I, s:o, s:o, s:I, s:o,"
        " s:{s:I, s:o, s:o, s:o}, s:{s:I, s:o},"
        " s:{s:I, s:I, s:o, s:o, s:o}}",
        "period", p->label, "from", from, "to", to, "value",
        s->breakdown == BD_ALL ? json_null() : json_string(r->value), "opened",
        counter_or_null(s, r, M_OPENED), "closed", (json_int_t)m[M_CLOSED], "resolved",
        (json_int_t)m[M_RESOLVED], "resolution_rate", ratio(m[M_RESOLVED], m[M_CLOSED], 1e4),
        "abandoned", counter_or_null(s, r, M_ABANDONED), "fcr", (json_int_t)m[M_FCR], "fcr_rate",
        ratio(m[M_FCR], m[M_RESOLVED], 1e4), "first_response", "n", (json_int_t)m[M_FR_N],
        "mean_ms", mean_ms(m[M_FR_MS], m[M_FR_N]), "p50_ms", ms_or_null(r->p50), "p90_ms",
        ms_or_null(r->p90), "handling", "n", (json_int_t)m[M_HT_N], "mean_ms",
        mean_ms(m[M_HT_MS], m[M_HT_N]), "satisfaction", "rated", (json_int_t)m[M_RATED],
        "offered", (json_int_t)m[M_OFFERED], "response_rate",
        ratio(m[M_RATED], m[M_OFFERED], 1e4), "mean", ratio(m[M_STARS_SUM], m[M_RATED], 100),
        "dist", dist);
    if (s->breakdown == BD_CHANNEL)
        json_object_set_new(o, "share", ratio(m[M_OPENED], p->opened_all, 1e4));
    /* QA reviews are kept for everyone and per agent only */
    if (s->breakdown == BD_ALL || s->breakdown == BD_AGENT)
        json_object_set_new(o, "qa", json_pack("{s:I, s:o}", "n", (json_int_t)m[M_QA_N], "mean",
                                               ratio(m[M_QA_SCORE], m[M_QA_N], 100)));
    else
        json_object_set_new(o, "qa", json_null());
    return o;
}

static int cmp_rows(const void *a, const void *b) {
    const row *x = *(row *const *)a, *y = *(row *const *)b;
    if (x->period != y->period) return x->period < y->period ? -1 : 1;
    return strcmp(x->value, y->value);
}

static int cmp_tally_count(const void *a, const void *b) {
    const tally *x = *(tally *const *)a, *y = *(tally *const *)b;
    if (x->a != y->a) return x->a > y->a ? -1 : 1;
    return strcmp(x->name, y->name);
}

/* Known priorities in queue order (high first), then others by name. */
static int cmp_tally_priority(const void *a, const void *b) {
    const tally *x = *(tally *const *)a, *y = *(tally *const *)b;
    int px = kf_priority_parse(x->name), py = kf_priority_parse(y->name);
    if (px < 0) px = 1000;
    if (py < 0) py = 1000;
    if (px != py) return px < py ? -1 : 1;
    return strcmp(x->name, y->name);
}

/* The table's entries sorted by cmp, at most max; *n gets the count. Caller frees. */
static tally **tally_sorted(tally *t, int (*cmp)(const void *, const void *), size_t *n) {
    size_t cnt = HASH_COUNT(t), i = 0;
    tally **v = kf_malloc((cnt ? cnt : 1) * sizeof(*v));
    for (tally *e = t; e; e = e->hh.next) v[i++] = e;
    qsort(v, cnt, sizeof(*v), cmp);
    *n = cnt;
    return v;
}

static json_t *top_json(tally *t, int top) {
    size_t n;
    tally **v = tally_sorted(t, cmp_tally_count, &n);
    json_t *a = json_array();
    for (size_t i = 0; i < n && i < (size_t)top; i++) {
        if (v[i]->a <= 0) break; /* only what happened */
        json_array_append_new(a, json_pack("{s:s, s:I}", "value", v[i]->name, "count",
                                           (json_int_t)v[i]->a));
    }
    kf_free(v);
    return a;
}

static json_t *sla_json(tally *t) {
    size_t n;
    tally **v = tally_sorted(t, cmp_tally_priority, &n);
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(a, json_pack("{s:s, s:I, s:I, s:o}", "priority", v[i]->name, "n",
                                           (json_int_t)v[i]->a, "met", (json_int_t)v[i]->b,
                                           "attainment", ratio(v[i]->b, v[i]->a, 1e4)));
    kf_free(v);
    return a;
}

static json_t *answer(stats_req *s) {
    row **v = kf_malloc((s->nrows ? s->nrows : 1) * sizeof(*v));
    size_t n = 0;
    for (row *r = s->rows; r; r = r->hh.next) v[n++] = r;
    qsort(v, n, sizeof(*v), cmp_rows);
    json_t *rows = json_array();
    size_t k = 0;
    for (int p = 0; p < s->nperiods; p++) {
        /* every period has its row for `all`, days without statistics included */
        if (s->breakdown == BD_ALL && (k == n || v[k]->period != p)) {
            row *z = row_get(s, p, "", 0); /* fits: at most rows_max periods */
            if (z) json_array_append_new(rows, row_json(s, z));
        }
        for (; k < n && v[k]->period == p; k++) json_array_append_new(rows, row_json(s, v[k]));
    }
    kf_free(v);

    json_t *hours = json_array();
    int busiest = -1;
    for (int h = 0; h < 24; h++) {
        json_array_append_new(hours, json_integer(s->hours[h]));
        if (s->hours[h] > 0 && (busiest < 0 || s->hours[h] > s->hours[busiest])) busiest = h;
    }
    char from[11], to[11];
    date_str(s->first, from);
    date_str(s->first + s->ndays - 1, to);
    return json_pack("{s:s, s:s, s:s, s:s, s:i, s:o, s:o, s:o, s:o, s:{s:o, s:o}}", "from", from,
                     "to", to, "by", by_names[s->by], "breakdown", breakdown_names[s->breakdown],
                     "top", s->top, "rows", rows, "sla", sla_json(s->sla), "categories",
                     top_json(s->categories, s->top), "topics", top_json(s->topics, s->top),
                     "peak_hours", "counts", hours, "busiest",
                     busiest < 0 ? json_null() : json_integer(busiest));
}

static void reply_too_large(gw_conn *c, const json_t *req, size_t rows_max) {
    char m[160];
    snprintf(m, sizeof(m),
             "more than %zu rows: shorten the range, or choose a longer 'by' or a narrower "
             "'breakdown'",
             rows_max);
    gw_reply_error(c, req, "too_large", m);
}

static void finish(stats_req *s) {
    req_ctx *x = s->x;
    if (s->fail && !strcmp(s->fail, "gone"))
        ; /* nobody to answer */
    else if (!s->fail)
        gw_reply_ok(x->c, x->req, answer(s));
    else if (!strcmp(s->fail, "too_large"))
        reply_too_large(x->c, x->req, s->rows_max);
    else if (!strcmp(s->fail, "unavailable"))
        gw_reply_error(x->c, x->req, "unavailable", "storage unavailable, retry later");
    else
        gw_reply_error(x->c, x->req, "internal", "internal error");
    stats_free(s);
}

/* Starts days while fewer than STATS_INFLIGHT are being read; answers after the last one (or
 * after a failure, once the reads in flight are back). A client that went away stops it. */
static void pump(stats_req *s) {
    if (!gw_conn_alive(s->x->c)) fail(s, "gone");
    while (!s->fail && s->next < s->ndays && s->inflight < STATS_INFLIGHT)
        day_start(s, s->next++);
    if (s->inflight == 0) finish(s);
}

/* ---- the request ---- */

static int pick(const char *v, const char *const *names) {
    for (int i = 0; names[i]; i++)
        if (!strcmp(v, names[i])) return i;
    return -1;
}

static void h_stats_get(gw_conn *c, json_t *msg) {
    json_t *req = json_object_get(msg, "req");
    const char *from, *to, *by, *breakdown;
    long long top;
    int64_t a, b;
    if (gw_get_str(c, msg, "from", 1, 64, &from) < 0) return;
    if (gw_get_str(c, msg, "to", 1, 64, &to) < 0) return;
    if (gw_get_str(c, msg, "by", 0, 64, &by) < 0) return;
    if (gw_get_str(c, msg, "breakdown", 0, 64, &breakdown) < 0) return;
    if (gw_get_int(c, msg, "top", STATS_TOP_DEFAULT, 1, STATS_TOP_MAX, &top) < 0) return;
    if (parse_day(from, &a) < 0) {
        gw_reply_error(c, req, "bad_request", "field 'from' must be a date YYYY-MM-DD");
        return;
    }
    if (parse_day(to, &b) < 0) {
        gw_reply_error(c, req, "bad_request", "field 'to' must be a date YYYY-MM-DD");
        return;
    }
    if (b < a) {
        gw_reply_error(c, req, "bad_request", "'to' is before 'from'");
        return;
    }
    if (b - a + 1 > STATS_DAYS_MAX) {
        gw_reply_error(c, req, "bad_request", "the range is longer than 366 days");
        return;
    }
    int iby = by ? pick(by, by_names) : BY_DAY;
    if (iby < 0) {
        gw_reply_error(c, req, "bad_request", "field 'by' must be day, week, month or total");
        return;
    }
    int ibd = breakdown ? pick(breakdown, breakdown_names) : BD_ALL;
    if (ibd < 0) {
        gw_reply_error(c, req, "bad_request",
                       "field 'breakdown' must be all, channel, group or agent");
        return;
    }
    stats_req *s = kf_calloc(1, sizeof(*s));
    s->x = gw_ctx_new(c, req);
    s->by = iby;
    s->breakdown = ibd;
    s->top = (int)top;
    s->rows_max = (size_t)(gw->opt.outq_max_bytes / STATS_ROW_BYTES);
    s->first = a;
    s->ndays = (int)(b - a + 1);
    s->day_period = kf_malloc((size_t)s->ndays * sizeof(int));
    s->periods = kf_calloc((size_t)s->ndays, sizeof(period));
    for (int i = 0; i < s->ndays; i++) {
        int64_t day = a + i;
        if (i == 0 || period_of(iby, day) != period_of(iby, day - 1)) {
            period *p = &s->periods[s->nperiods++];
            p->first = day;
            period_label(iby, day, p->label);
        }
        s->periods[s->nperiods - 1].last = day;
        s->periods[s->nperiods - 1].days_left++;
        s->day_period[i] = s->nperiods - 1;
    }
    if (ibd == BD_ALL && (size_t)s->nperiods > s->rows_max) {
        reply_too_large(c, req, s->rows_max);
        stats_free(s);
        return;
    }
    pump(s);
}

const gw_handler gw_handlers_stats[] = {
    {"stats.get", R_SUP | R_ADMIN, h_stats_get},
    {NULL, 0, NULL},
};
