/* kefu-export: writes the archive's closed conversations of a date range (PostgreSQL, see
 * sql/kefu-archive.sql) as JSON lines or CSV, with personal data masked by default. */
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <libpq-fe.h>

#include "kefu/alloc.h"
#include "kefu/mask.h"
#include "kefu/tz.h"

/* Exit statuses (docs/operations.md, "kefu-export"). */
enum {
    EXIT_USAGE = 2,    /* bad option, date, time zone, range reversed, no database given */
    EXIT_CONNECT = 3,  /* the database cannot be reached or refuses the login */
    EXIT_SCHEMA = 4,   /* the archive tables are missing, or of a newer schema version */
    EXIT_QUERY = 5,    /* the database failed during the export */
    EXIT_OUTPUT = 6,   /* the output cannot be written */
};

#define SCHEMA_VERSION 1
#define FETCH_ROWS "500" /* rows per FETCH: memory stays at a few batches, whatever the range */
#define MAX_FILTER 64

enum what { WHAT_CONVERSATIONS, WHAT_MESSAGES, WHAT_EVENTS };

typedef struct {
    const char *v[MAX_FILTER];
    int n;
} filter;

typedef struct {
    PGconn *pg;
    FILE *out;
    kf_tz tz;
    int csv, mask;
    enum what what;
    char *mbuf; /* scratch for kf_mask_pii */
    size_t mcap;
} exporter;

static const char usage_text[] =
    "Usage: kefu-export [options]\n"
    "Writes the archived (closed) conversations of a date range to stdout or a file.\n"
    "\n"
    "  --db URL            libpq connection string or URL of the archive database\n"
    "                      (default: $KEFU_ARCHIVE_DB)\n"
    "  --from YYYY-MM-DD   first day (inclusive) of closing; default: the oldest\n"
    "  --to YYYY-MM-DD     last day (inclusive) of closing; default: the newest\n"
    "  --timezone TZ       the days of --from/--to and the times written: an IANA name\n"
    "                      (Asia/Shanghai) or an offset (+08:00); default UTC\n"
    "  --channel CH        only these channels; repeat or give a comma list\n"
    "  --group G           only these skill groups; repeat or give a comma list\n"
    "  --agent ID          only conversations handled by these agents; likewise\n"
    "  --format F          jsonl (default) or csv\n"
    "  --what W            conversations (default), messages or events: jsonl writes one\n"
    "                      conversation per line with its messages and events nested, or\n"
    "                      one message / event per line; csv one row each\n"
    "  --no-mask           write texts, names and user ids as archived (default: personal\n"
    "                      data masked again: phones, e-mails, ID and card numbers)\n"
    "  -o, --output FILE   write FILE (complete or not at all) instead of stdout\n"
    "  -h, --help          show this help\n"
    "\n"
    "Exit status: 0 done, 2 bad usage, 3 database unreachable, 4 archive tables missing,\n"
    "5 database error during the export, 6 output not writable.\n";

static const char *partial_output; /* the -o file being written, removed on failure */

static void die(int status, const char *fmt, ...) {
    va_list ap;
    if (partial_output) unlink(partial_output);
    fputs("kefu-export: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    if (status == EXIT_USAGE) fputs("Try 'kefu-export --help'.\n", stderr);
    exit(status);
}

/* Adds the comma-separated values of arg (modified in place) to f. */
static void filter_add(filter *f, const char *opt, char *arg) {
    for (char *save = NULL, *tok = strtok_r(arg, ",", &save); tok;
         tok = strtok_r(NULL, ",", &save)) {
        if (f->n == MAX_FILTER) die(EXIT_USAGE, "%s: at most %d values", opt, MAX_FILTER);
        f->v[f->n++] = tok;
    }
    if (f->n == 0) die(EXIT_USAGE, "%s needs a value", opt);
}

/* The filter as a PostgreSQL array literal ({"a","b"}), or NULL for "no filter". The caller
 * frees the result. */
static char *filter_array(const filter *f) {
    if (f->n == 0) return NULL;
    size_t cap = 3;
    for (int i = 0; i < f->n; i++) cap += 2 * strlen(f->v[i]) + 3;
    char *s = kf_malloc(cap), *p = s;
    *p++ = '{';
    for (int i = 0; i < f->n; i++) {
        if (i) *p++ = ',';
        *p++ = '"';
        for (const char *c = f->v[i]; *c; c++) {
            if (*c == '"' || *c == '\\') *p++ = '\\';
            *p++ = *c;
        }
        *p++ = '"';
    }
    *p++ = '}';
    *p = '\0';
    return s;
}

static int64_t parse_day(const char *opt, const char *s) {
    int64_t d;
    if (kf_parse_date(s, strlen(s), &d) < 0)
        die(EXIT_USAGE, "%s must be a date YYYY-MM-DD (1970 or later), got '%s'", opt, s);
    return d;
}

/* ---- output ---- */

static void out_write(exporter *x, const char *s, size_t n) {
    if (n && fwrite(s, 1, n, x->out) != n) die(EXIT_OUTPUT, "write: %s", strerror(errno));
}

static void out_str(exporter *x, const char *s) {
    out_write(x, s, strlen(s));
}

/* s with personal data masked when masking is on; points into x's scratch buffer (valid until
 * the next call) or at s itself. */
static const char *masked(exporter *x, const char *s) {
    if (!x->mask || !s) return s;
    /* Masking can lengthen a text (1234567 -> ****4567, a@b.cn -> a***@b.cn), by less than
     * its length; a result that fills the buffer may have been cut: larger, and again. */
    size_t need = 2 * strlen(s) + 16;
    for (;;) {
        if (need > x->mcap) {
            x->mcap = need;
            x->mbuf = kf_realloc(x->mbuf, x->mcap);
        }
        if (kf_mask_pii(x->mbuf, x->mcap, s) < x->mcap - 1) return x->mbuf;
        need = 2 * x->mcap;
    }
}

/* One CSV field (RFC 4180): quoted when it holds a comma, quote, CR or LF; quotes doubled. */
static void csv_field(exporter *x, const char *s, int first) {
    if (!first) out_write(x, ",", 1);
    if (!s) return;
    if (!strpbrk(s, ",\"\r\n")) {
        out_str(x, s);
        return;
    }
    out_write(x, "\"", 1);
    for (const char *q; (q = strchr(s, '"')); s = q + 1) {
        out_write(x, s, (size_t)(q - s) + 1);
        out_write(x, "\"", 1);
    }
    out_str(x, s);
    out_write(x, "\"", 1);
}

static void csv_end(exporter *x) {
    out_write(x, "\r\n", 2);
}

/* A time as ISO 8601 in the export's time zone, to the millisecond: 2026-03-01T07:30:00.000+08:00.
 * us is the database's value in microseconds since the epoch (text). */
static void iso_time(const kf_tz *tz, const char *us_text, char *buf, size_t len) {
    int64_t us = strtoll(us_text, NULL, 10);
    int64_t s = us >= 0 ? us / 1000000 : -((-us + 999999) / 1000000);
    int ms = (int)((us - s * 1000000) / 1000);
    int32_t off = kf_tz_offset(tz, s);
    int64_t local = s + off;
    int64_t days = local >= 0 ? local / 86400 : -((-local + 86399) / 86400);
    int64_t sec = local - days * 86400, y;
    int m, d;
    kf_civil_from_days(days, &y, &m, &d);
    int32_t aoff = off < 0 ? -off : off;
    snprintf(buf, len, "%04lld-%02d-%02dT%02d:%02d:%02d.%03d%c%02d:%02d", (long long)y, m, d,
             (int)(sec / 3600), (int)(sec / 60 % 60), (int)(sec % 60), ms, off < 0 ? '-' : '+',
             (int)(aoff / 3600), (int)(aoff / 60 % 60));
}

/* ---- columns ---- */

/* How a column is written: a plain text, a text that may carry personal data (masked), a time
 * (selected as microseconds since the epoch), an integer, or a JSON object (masked inside). */
enum kind { K_TEXT, K_PII, K_TIME, K_INT, K_JSON };

typedef struct {
    const char *name; /* in the output */
    const char *sql;  /* the select expression */
    enum kind kind;
} column;

#define US(e) "(extract(epoch FROM " e ") * 1000000)::int8"

static const column conv_cols[] = {
    {"conv", "c.conv", K_TEXT},
    {"ticket", "c.ticket", K_TEXT},
    {"channel", "c.channel", K_TEXT},
    {"group", "c.grp", K_TEXT},
    {"topic", "c.topic", K_PII},
    {"category", "c.category", K_PII},
    {"priority", "c.priority", K_TEXT},
    {"level", "c.level", K_TEXT},
    {"customer", "c.customer", K_PII},
    {"customer_name", "c.customer_name", K_PII},
    {"agent", "c.agent", K_PII},
    {"agent_name", "c.agent_name", K_PII},
    {"resolution", "c.resolution", K_PII},
    {"closed_by", "c.closed_by", K_PII},
    {"created_at", US("c.created_at"), K_TIME},
    {"assigned_at", US("c.assigned_at"), K_TIME},
    {"first_response_at", US("c.first_response_at"), K_TIME},
    {"closed_at", US("c.closed_at"), K_TIME},
    {"rating", "c.rating", K_INT},
    {"rating_comment", "c.rating_comment", K_PII},
    {"rated_at", US("c.rated_at"), K_TIME},
    {"qa_score", "c.qa_score", K_INT},
    {"qa_notes", "c.qa_notes", K_PII},
    {"qa_tags", "c.qa_tags", K_PII},
    {"qa_by", "c.qa_by", K_PII},
    {"qa_at", US("c.qa_at"), K_TIME},
    {"meta", "c.meta", K_JSON},
};
/* csv --what conversations only: counts instead of the nested lists */
static const column conv_count_cols[] = {
    {"messages", "(SELECT count(*) FROM kefu_messages m WHERE m.conv = c.conv)", K_INT},
    {"events", "(SELECT count(*) FROM kefu_events e WHERE e.conv = c.conv)", K_INT},
};
/* the conversation columns repeated on each message or event row */
static const column owner_cols[] = {
    {"conv", "c.conv", K_TEXT},
    {"ticket", "c.ticket", K_TEXT},
    {"channel", "c.channel", K_TEXT},
    {"group", "c.grp", K_TEXT},
    {"agent", "c.agent", K_PII},
};
static const column msg_cols[] = {
    {"id", "m.id", K_TEXT},
    {"at", US("m.at"), K_TIME},
    {"from", "m.sender", K_PII},
    {"role", "m.role", K_TEXT},
    {"name", "m.name", K_PII},
    {"text", "m.body", K_PII},
    {"cid", "m.cid", K_TEXT},
};
static const column ev_cols[] = {
    {"id", "e.id", K_TEXT},
    {"at", US("e.at"), K_TIME},
    {"ev", "e.ev", K_TEXT},
    {"by", "e.actor", K_PII},
    {"fields", "e.fields", K_JSON},
};

#define NCOLS(a) ((int)(sizeof(a) / sizeof((a)[0])))

typedef struct {
    const column *cols;
    int n;
} colset;

/* Keys of the meta hash and record entries whose values are times, ids or counters: long
 * digit runs that masking would take for phone or card numbers. Every other string value,
 * and every key (read:<user>), is masked. */
static int json_key_exempt(const char *k) {
    static const char *const names[] = {"ticket", "created", "last", "first_response", "ts",
                                        "id", "cid", "conv", "assign_seq", "qa_seq", "due",
                                        "seq", NULL};
    static const char *const prefixes[] = {"read:", "cids:", "sla:", NULL};
    static const char *const suffixes[] = {"_at", "_us", "_ms", "_id", "_seq", NULL};
    size_t n = strlen(k);
    for (int i = 0; names[i]; i++)
        if (!strcmp(k, names[i])) return 1;
    for (int i = 0; prefixes[i]; i++)
        if (!strncmp(k, prefixes[i], strlen(prefixes[i]))) return 1;
    for (int i = 0; suffixes[i]; i++) {
        size_t l = strlen(suffixes[i]);
        if (n > l && !strcmp(k + n - l, suffixes[i])) return 1;
    }
    return 0;
}

/* A copy of the archived JSON value with personal data masked (when masking is on). */
static json_t *json_masked(exporter *x, json_t *v, int exempt) {
    if (json_is_string(v)) {
        if (exempt) return json_incref(v);
        return json_string(masked(x, json_string_value(v)));
    }
    if (json_is_array(v)) {
        json_t *a = json_array();
        size_t i;
        json_t *e;
        json_array_foreach(v, i, e) json_array_append_new(a, json_masked(x, e, exempt));
        return a;
    }
    if (json_is_object(v)) {
        json_t *o = json_object();
        const char *k;
        json_t *e;
        json_object_foreach(v, k, e) {
            json_t *mv = json_masked(x, e, exempt || json_key_exempt(k));
            char *mk = kf_strdup(masked(x, k));
            json_object_set_new(o, mk, mv);
            kf_free(mk);
        }
        return o;
    }
    return json_incref(v);
}

static json_t *json_column(exporter *x, const char *text) {
    json_error_t err;
    json_t *v = json_loads(text, JSON_DECODE_ANY, &err);
    if (!v) die(EXIT_QUERY, "the archive holds bad JSON: %s", err.text);
    if (!x->mask) return v;
    json_t *m = json_masked(x, v, 0);
    json_decref(v);
    return m;
}

/* The value of column i of row r as JSON. */
static json_t *json_value(exporter *x, const column *c, PGresult *res, int r, int i) {
    if (PQgetisnull(res, r, i)) return json_null();
    const char *s = PQgetvalue(res, r, i);
    char buf[64];
    switch (c->kind) {
    case K_TEXT: return json_string(s);
    case K_PII: return json_string(masked(x, s));
    case K_TIME: iso_time(&x->tz, s, buf, sizeof(buf)); return json_string(buf);
    case K_INT: return json_integer(strtoll(s, NULL, 10));
    case K_JSON: return json_column(x, s);
    }
    return json_null();
}

/* Sets the columns cs of row r, which start at result column first, into obj. */
static void json_row(exporter *x, json_t *obj, colset cs, PGresult *res, int r, int first) {
    for (int i = 0; i < cs.n; i++)
        json_object_set_new(obj, cs.cols[i].name, json_value(x, &cs.cols[i], res, r, first + i));
}

static void csv_row(exporter *x, colset cs, PGresult *res, int r, int first, int *lead) {
    for (int i = 0; i < cs.n; i++, *lead = 0) {
        const column *c = &cs.cols[i];
        int f = first + i;
        if (PQgetisnull(res, r, f)) {
            csv_field(x, NULL, *lead);
            continue;
        }
        const char *s = PQgetvalue(res, r, f);
        char buf[64];
        if (c->kind == K_PII) {
            csv_field(x, masked(x, s), *lead);
        } else if (c->kind == K_TIME) {
            iso_time(&x->tz, s, buf, sizeof(buf));
            csv_field(x, buf, *lead);
        } else if (c->kind == K_JSON) {
            json_t *v = json_column(x, s);
            char *text = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
            csv_field(x, text, *lead);
            free(text);
            json_decref(v);
        } else {
            csv_field(x, s, *lead);
        }
    }
}

static void csv_header(exporter *x, colset cs, int *lead) {
    for (int i = 0; i < cs.n; i++, *lead = 0) csv_field(x, cs.cols[i].name, *lead);
}

static void json_line(exporter *x, json_t *obj) {
    char *text = json_dumps(obj, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (!text) die(EXIT_QUERY, "cannot encode a record as JSON");
    out_str(x, text);
    out_write(x, "\n", 1);
    free(text);
}

/* ---- queries ---- */

/* A server-side cursor read in batches of FETCH_ROWS. */
typedef struct {
    exporter *x;
    const char *name;
    PGresult *res;
    int row, nrows, done;
} cursor;

static void sql_select(char *buf, size_t len, const colset *sets, int nsets) {
    size_t n = 0;
    for (int s = 0; s < nsets; s++)
        for (int i = 0; i < sets[s].n; i++)
            n += (size_t)snprintf(buf + n, len - n, "%s%s", n ? ", " : "", sets[s].cols[i].sql);
}

/* Opens cursor name over "SELECT <cols> FROM <from> WHERE <range and filters> ORDER BY
 * <order>" with the five parameters (from, to, channels, groups, agents). */
static void cursor_open(cursor *cur, exporter *x, const char *name, const colset *sets, int nsets,
                        const char *from, const char *order, const char *const params[5]) {
    char cols[8192], q[12288];
    sql_select(cols, sizeof(cols), sets, nsets);
    snprintf(q, sizeof(q),
             "DECLARE %s NO SCROLL CURSOR FOR SELECT %s FROM %s "
             "WHERE ($1::int8 IS NULL OR c.closed_at >= to_timestamp($1::int8)) "
             "AND ($2::int8 IS NULL OR c.closed_at < to_timestamp($2::int8)) "
             "AND ($3::text[] IS NULL OR c.channel = ANY ($3::text[])) "
             "AND ($4::text[] IS NULL OR c.grp = ANY ($4::text[])) "
             "AND ($5::text[] IS NULL OR c.agent = ANY ($5::text[])) "
             "ORDER BY c.closed_at, c.conv%s%s",
             name, cols, from, order ? ", " : "", order ? order : "");
    PGresult *res = PQexecParams(x->pg, q, 5, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_COMMAND_OK)
        die(EXIT_QUERY, "%s", PQresultErrorMessage(res));
    PQclear(res);
    memset(cur, 0, sizeof(*cur));
    cur->x = x;
    cur->name = name;
}

/* The current row of cur (fetching the next batch when needed), or -1 at the end. */
static int cursor_row(cursor *cur) {
    if (cur->done) return -1;
    if (cur->res && cur->row < cur->nrows) return cur->row;
    PQclear(cur->res);
    char q[128];
    snprintf(q, sizeof(q), "FETCH FORWARD " FETCH_ROWS " FROM %s", cur->name);
    cur->res = PQexec(cur->x->pg, q);
    if (PQresultStatus(cur->res) != PGRES_TUPLES_OK)
        die(EXIT_QUERY, "%s", PQresultErrorMessage(cur->res));
    cur->row = 0;
    cur->nrows = PQntuples(cur->res);
    if (cur->nrows == 0) {
        PQclear(cur->res);
        cur->res = NULL;
        cur->done = 1;
        return -1;
    }
    return 0;
}

static void cursor_close(cursor *cur) {
    PQclear(cur->res);
    cur->res = NULL;
}

/* Messages in the order of their stream ids (<ms>-<seq>, compared as numbers). */
#define MSG_ORDER                                                                          \
    "CASE WHEN m.id ~ '^[0-9]{1,18}-[0-9]{1,18}$' THEN split_part(m.id, '-', 1)::int8 END, " \
    "CASE WHEN m.id ~ '^[0-9]{1,18}-[0-9]{1,18}$' THEN split_part(m.id, '-', 2)::int8 END, m.id"
#define EV_ORDER                                                                           \
    "CASE WHEN e.id ~ '^[0-9]{1,18}-[0-9]{1,18}$' THEN split_part(e.id, '-', 1)::int8 END, " \
    "CASE WHEN e.id ~ '^[0-9]{1,18}-[0-9]{1,18}$' THEN split_part(e.id, '-', 2)::int8 END, e.id"

/* Appends the rows of cur that belong to conversation conv (column 0) to arr. The cursors run
 * in the conversations' order, so a conversation's rows are the next ones. */
static void nest(exporter *x, cursor *cur, const char *conv, colset cs, json_t *arr) {
    int r;
    while ((r = cursor_row(cur)) >= 0 && !strcmp(PQgetvalue(cur->res, r, 0), conv)) {
        json_t *o = json_object();
        json_row(x, o, cs, cur->res, r, 1);
        json_array_append_new(arr, o);
        cur->row++;
    }
}

static void export_nested(exporter *x, const char *const params[5]) {
    colset cs = {conv_cols, NCOLS(conv_cols)};
    colset mcs[2] = {{owner_cols, 1}, {msg_cols, NCOLS(msg_cols)}};
    colset ecs[2] = {{owner_cols, 1}, {ev_cols, NCOLS(ev_cols)}};
    cursor conv, msgs, evs;
    cursor_open(&conv, x, "convs", &cs, 1, "kefu_conversations c", NULL, params);
    cursor_open(&msgs, x, "msgs", mcs, 2,
                "kefu_messages m JOIN kefu_conversations c ON c.conv = m.conv", MSG_ORDER, params);
    cursor_open(&evs, x, "evs", ecs, 2,
                "kefu_events e JOIN kefu_conversations c ON c.conv = e.conv", EV_ORDER, params);
    int r;
    while ((r = cursor_row(&conv)) >= 0) {
        json_t *o = json_object();
        json_row(x, o, cs, conv.res, r, 0);
        const char *id = PQgetvalue(conv.res, r, 0);
        json_t *ma = json_array(), *ea = json_array();
        nest(x, &msgs, id, mcs[1], ma);
        nest(x, &evs, id, ecs[1], ea);
        json_object_set_new(o, "messages", ma);
        json_object_set_new(o, "events", ea);
        json_line(x, o);
        json_decref(o);
        conv.row++;
    }
    cursor_close(&conv);
    cursor_close(&msgs);
    cursor_close(&evs);
}

/* One row per conversation, message or event. */
static void export_flat(exporter *x, const char *const params[5]) {
    colset sets[3];
    int nsets;
    const char *from, *order;
    if (x->what == WHAT_CONVERSATIONS) {
        sets[0] = (colset){conv_cols, NCOLS(conv_cols)};
        sets[1] = (colset){conv_count_cols, NCOLS(conv_count_cols)};
        nsets = 2;
        from = "kefu_conversations c";
        order = NULL;
    } else {
        sets[0] = (colset){owner_cols, NCOLS(owner_cols)};
        if (x->what == WHAT_MESSAGES) {
            sets[1] = (colset){msg_cols, NCOLS(msg_cols)};
            from = "kefu_messages m JOIN kefu_conversations c ON c.conv = m.conv";
            order = MSG_ORDER;
        } else {
            sets[1] = (colset){ev_cols, NCOLS(ev_cols)};
            from = "kefu_events e JOIN kefu_conversations c ON c.conv = e.conv";
            order = EV_ORDER;
        }
        nsets = 2;
    }
    if (x->csv) {
        int lead = 1;
        for (int s = 0; s < nsets; s++) csv_header(x, sets[s], &lead);
        csv_end(x);
    }
    cursor cur;
    cursor_open(&cur, x, "rows", sets, nsets, from, order, params);
    int r;
    while ((r = cursor_row(&cur)) >= 0) {
        if (x->csv) {
            int lead = 1, first = 0;
            for (int s = 0; s < nsets; s++) {
                csv_row(x, sets[s], cur.res, r, first, &lead);
                first += sets[s].n;
            }
            csv_end(x);
        } else {
            json_t *o = json_object();
            int first = 0;
            for (int s = 0; s < nsets; s++) {
                json_row(x, o, sets[s], cur.res, r, first);
                first += sets[s].n;
            }
            json_line(x, o);
            json_decref(o);
        }
        cur.row++;
    }
    cursor_close(&cur);
}

static void exec_ok(PGconn *pg, const char *q) {
    PGresult *res = PQexec(pg, q);
    if (PQresultStatus(res) != PGRES_COMMAND_OK) die(EXIT_QUERY, "%s", PQresultErrorMessage(res));
    PQclear(res);
}

/* Exits with EXIT_SCHEMA unless the archive's tables are there in a version this program
 * reads. */
static void check_schema(PGconn *pg) {
    PGresult *res = PQexec(pg, "SELECT to_regclass('kefu_schema') IS NOT NULL, "
                               "to_regclass('kefu_conversations') IS NOT NULL, "
                               "to_regclass('kefu_messages') IS NOT NULL, "
                               "to_regclass('kefu_events') IS NOT NULL");
    if (PQresultStatus(res) != PGRES_TUPLES_OK) die(EXIT_QUERY, "%s", PQresultErrorMessage(res));
    static const char *const tables[] = {"kefu_schema", "kefu_conversations", "kefu_messages",
                                         "kefu_events"};
    for (int i = 0; i < 4; i++)
        if (strcmp(PQgetvalue(res, 0, i), "t"))
            die(EXIT_SCHEMA,
                "database '%s' has no table %s: not a kefu archive (create it with "
                "psql -f sql/kefu-archive.sql, or let a worker with archive_db do it)",
                PQdb(pg), tables[i]);
    PQclear(res);
    res = PQexec(pg, "SELECT max(version) FROM kefu_schema");
    if (PQresultStatus(res) != PGRES_TUPLES_OK) die(EXIT_QUERY, "%s", PQresultErrorMessage(res));
    long v = PQgetisnull(res, 0, 0) ? 0 : strtol(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);
    if (v > SCHEMA_VERSION)
        die(EXIT_SCHEMA, "the archive's schema version %ld is newer than this kefu-export "
                         "reads (%d): use a newer kefu-export", v, SCHEMA_VERSION);
}

int main(int argc, char **argv) {
    static const struct option opts[] = {
        {"db", required_argument, NULL, 'd'},
        {"from", required_argument, NULL, 'f'},
        {"to", required_argument, NULL, 't'},
        {"timezone", required_argument, NULL, 'z'},
        {"channel", required_argument, NULL, 'c'},
        {"group", required_argument, NULL, 'g'},
        {"agent", required_argument, NULL, 'a'},
        {"format", required_argument, NULL, 'F'},
        {"what", required_argument, NULL, 'w'},
        {"no-mask", no_argument, NULL, 'M'},
        {"output", required_argument, NULL, 'o'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    exporter x;
    filter channels = {0}, groups = {0}, agents = {0};
    const char *db = getenv("KEFU_ARCHIVE_DB"), *tzspec = "UTC", *output = NULL;
    const char *from_s = NULL, *to_s = NULL;
    int opt;

    memset(&x, 0, sizeof(x));
    x.mask = 1;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, ":ho:", opts, NULL)) != -1) {
        switch (opt) {
        case 'd': db = optarg; break;
        case 'f': from_s = optarg; break;
        case 't': to_s = optarg; break;
        case 'z': tzspec = optarg; break;
        case 'c': filter_add(&channels, "--channel", optarg); break;
        case 'g': filter_add(&groups, "--group", optarg); break;
        case 'a': filter_add(&agents, "--agent", optarg); break;
        case 'F':
            if (!strcmp(optarg, "csv")) x.csv = 1;
            else if (!strcmp(optarg, "jsonl")) x.csv = 0;
            else die(EXIT_USAGE, "--format must be jsonl or csv, got '%s'", optarg);
            break;
        case 'w':
            if (!strcmp(optarg, "conversations")) x.what = WHAT_CONVERSATIONS;
            else if (!strcmp(optarg, "messages")) x.what = WHAT_MESSAGES;
            else if (!strcmp(optarg, "events")) x.what = WHAT_EVENTS;
            else die(EXIT_USAGE, "--what must be conversations, messages or events, got '%s'",
                     optarg);
            break;
        case 'M': x.mask = 0; break;
        case 'o': output = optarg; break;
        case 'h': fputs(usage_text, stdout); return 0;
        case ':': die(EXIT_USAGE, "option '%s' needs a value", argv[optind - 1]); break;
        default: die(EXIT_USAGE, "unknown option '%s'", argv[optind - 1]); break;
        }
    }
    if (optind < argc) die(EXIT_USAGE, "unexpected argument '%s'", argv[optind]);
    if (!db || !*db) die(EXIT_USAGE, "no database: give --db URL or set KEFU_ARCHIVE_DB");
    char err[256];
    if (kf_tz_load(&x.tz, tzspec, err, sizeof(err)) < 0) die(EXIT_USAGE, "--timezone: %s", err);

    /* [from, to) in unix seconds: local midnights of the first day and of the day after the
     * last, so a day is the time zone's day (23 or 25 hours across a DST change). */
    char from_p[32], to_p[32];
    const char *params[5] = {NULL, NULL, NULL, NULL, NULL};
    int64_t from_d = 0, to_d = 0;
    if (from_s) from_d = parse_day("--from", from_s);
    if (to_s) to_d = parse_day("--to", to_s);
    if (from_s && to_s && to_d < from_d)
        die(EXIT_USAGE, "the range is reversed: --to %s is before --from %s", to_s, from_s);
    if (from_s) {
        snprintf(from_p, sizeof(from_p), "%lld", (long long)kf_tz_mktime(&x.tz, from_d * 86400));
        params[0] = from_p;
    }
    if (to_s) {
        snprintf(to_p, sizeof(to_p), "%lld", (long long)kf_tz_mktime(&x.tz, (to_d + 1) * 86400));
        params[1] = to_p;
    }
    char *arrays[3] = {filter_array(&channels), filter_array(&groups), filter_array(&agents)};
    params[2] = arrays[0];
    params[3] = arrays[1];
    params[4] = arrays[2];

    /* connect_timeout first: one in the connection string overrides it. */
    const char *const keys[] = {"connect_timeout", "fallback_application_name", "dbname", NULL};
    const char *const vals[] = {"10", "kefu-export", db, NULL};
    x.pg = PQconnectdbParams(keys, vals, 1);
    if (PQstatus(x.pg) != CONNECTION_OK) {
        const char *m = PQerrorMessage(x.pg);
        size_t n = strlen(m);
        while (n && (m[n - 1] == '\n' || m[n - 1] == ' ')) n--;
        die(EXIT_CONNECT, "cannot reach the archive database: %.*s", (int)n, m);
    }
    /* UTF-8 whatever the database's encoding, and one snapshot for every cursor, so the
     * nested messages and events are those of the conversations read. */
    if (PQsetClientEncoding(x.pg, "UTF8") != 0)
        die(EXIT_QUERY, "cannot set the client encoding: %s", PQerrorMessage(x.pg));
    exec_ok(x.pg, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY");
    check_schema(x.pg);

    char *tmp = NULL;
    struct stat st;
    if (output && stat(output, &st) == 0 && !S_ISREG(st.st_mode)) {
        /* A device or pipe (/dev/stdout, a FIFO) is written as it is: never replaced. */
        if (!(x.out = fopen(output, "w"))) die(EXIT_OUTPUT, "%s: %s", output, strerror(errno));
    } else if (output) {
        /* A file that is there is complete: written beside it, renamed at the end. */
        size_t n = strlen(output) + 32;
        tmp = kf_malloc(n);
        snprintf(tmp, n, "%s.tmp%ld", output, (long)getpid());
        if (!(x.out = fopen(tmp, "w"))) die(EXIT_OUTPUT, "%s: %s", tmp, strerror(errno));
        partial_output = tmp;
    } else {
        x.out = stdout;
    }
    static char obuf[1 << 16];
    setvbuf(x.out, obuf, _IOFBF, sizeof(obuf));

    if (x.what == WHAT_CONVERSATIONS && !x.csv) export_nested(&x, params);
    else export_flat(&x, params);
    exec_ok(x.pg, "COMMIT");

    if (fflush(x.out) != 0 || ferror(x.out)) die(EXIT_OUTPUT, "write: %s", strerror(errno));
    if (tmp) {
        if (fclose(x.out) != 0 || rename(tmp, output) != 0)
            die(EXIT_OUTPUT, "%s: %s", output, strerror(errno));
        partial_output = NULL;
        kf_free(tmp);
    }
    PQfinish(x.pg);
    for (int i = 0; i < 3; i++) kf_free(arrays[i]);
    kf_free(x.mbuf);
    kf_tz_free(&x.tz);
    return 0;
}
