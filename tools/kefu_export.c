/* kefu-export: writes the closed conversations of a date range as JSON lines or CSV, with
 * personal data masked by default, from the archive (PostgreSQL, see sql/kefu-archive.sql) or,
 * without one, from Redis, where they stay for retention_days: the same rows either way. */
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>
#include <jansson.h>
#include <libpq-fe.h>

#include "kefu/alloc.h"
#include "kefu/keys.h"
#include "kefu/mask.h"
#include "kefu/slot.h"
#include "kefu/tz.h"
#include "kefu/utf8.h"

/* Exit statuses (docs/operations.md, "kefu-export"). */
enum {
    EXIT_USAGE = 2,    /* bad option, date, time zone, range reversed, no source given */
    EXIT_CONNECT = 3,  /* the database or Redis cannot be reached or refuses the login */
    EXIT_SCHEMA = 4,   /* the archive tables are missing, or of a newer schema version */
    EXIT_QUERY = 5,    /* the database or Redis failed during the export */
    EXIT_OUTPUT = 6,   /* the output cannot be written */
};

#define SCHEMA_VERSION 1
#define FETCH_ROWS "500" /* rows per FETCH: memory stays at a few batches, whatever the range */
#define MAX_FILTER 64
#define STR_(x) #x
#define STR(x) STR_(x)

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
    "Writes the closed conversations of a date range to stdout or a file, from the\n"
    "archive database or, without one, from Redis.\n"
    "\n"
    "  --db URL            libpq connection string or URL of the archive database\n"
    "                      (default: $KEFU_ARCHIVE_DB)\n"
    "  --redis HOST:PORT   read the closed conversations still in Redis instead (no\n"
    "                      archive_db: kept retention_days); a stand-alone server or any\n"
    "                      node of a Redis Cluster; those closed within the workers'\n"
    "                      stats_days, found by the statistics' daily index\n"
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
    "  --no-mask           write texts, names and user ids as archived, or as in Redis\n"
    "                      (default: personal data masked: phones, e-mails, ID and card\n"
    "                      numbers)\n"
    "  -o, --output FILE   write FILE (complete or not at all) instead of stdout\n"
    "  -h, --help          show this help\n"
    "\n"
    "Exit status: 0 done, 2 bad usage, 3 database or Redis unreachable, 4 archive tables\n"
    "missing, 5 database or Redis error during the export, 6 output not writable.\n";

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

/* A row as both sources give it: one text per column of the colsets, in their order, as the
 * archive's SELECT returns it (a time in microseconds since the epoch, an integer, JSON as
 * text), NULL for SQL NULL (no rating, a time never set). */
typedef const char *const *rowv;

/* The value of one column as JSON; s NULL is null. */
static json_t *json_value(exporter *x, const column *c, const char *s) {
    if (!s) return json_null();
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

/* Sets the columns cs, valued v, into obj. */
static void json_row(exporter *x, json_t *obj, colset cs, rowv v) {
    for (int i = 0; i < cs.n; i++)
        json_object_set_new(obj, cs.cols[i].name, json_value(x, &cs.cols[i], v[i]));
}

static void csv_row(exporter *x, colset cs, rowv v, int *lead) {
    for (int i = 0; i < cs.n; i++, *lead = 0) {
        const column *c = &cs.cols[i];
        const char *s = v[i];
        char buf[64];
        if (!s) {
            csv_field(x, NULL, *lead);
        } else if (c->kind == K_PII) {
            csv_field(x, masked(x, s), *lead);
        } else if (c->kind == K_TIME) {
            iso_time(&x->tz, s, buf, sizeof(buf));
            csv_field(x, buf, *lead);
        } else if (c->kind == K_JSON) {
            json_t *j = json_column(x, s);
            char *text = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
            csv_field(x, text, *lead);
            free(text);
            json_decref(j);
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

/* ---- what is written, whichever the source ---- */

#define MAX_COLS 32 /* of one row: a conversation and its two counts */
_Static_assert(NCOLS(conv_cols) + NCOLS(conv_count_cols) <= MAX_COLS, "MAX_COLS");

/* jsonl conversations nest their messages and events; every other format is flat. */
static int is_nested(const exporter *x) { return x->what == WHAT_CONVERSATIONS && !x->csv; }

/* The two column sets of a flat row: a conversation with the counts of its messages and
 * events, or a message or event led by its conversation's columns. */
static void flat_sets(const exporter *x, colset sets[2]) {
    if (x->what == WHAT_CONVERSATIONS) {
        sets[0] = (colset){conv_cols, NCOLS(conv_cols)};
        sets[1] = (colset){conv_count_cols, NCOLS(conv_count_cols)};
    } else {
        sets[0] = (colset){owner_cols, NCOLS(owner_cols)};
        sets[1] = x->what == WHAT_MESSAGES ? (colset){msg_cols, NCOLS(msg_cols)}
                                           : (colset){ev_cols, NCOLS(ev_cols)};
    }
}

/* The CSV header of the flat formats; nothing for JSON lines. */
static void emit_header(exporter *x) {
    if (is_nested(x) || !x->csv) return;
    colset sets[2];
    flat_sets(x, sets);
    int lead = 1;
    for (int s = 0; s < 2; s++) csv_header(x, sets[s], &lead);
    csv_end(x);
}

/* One flat row: the values of both sets, one after the other. */
static void emit_flat(exporter *x, rowv v) {
    colset sets[2];
    flat_sets(x, sets);
    if (x->csv) {
        int lead = 1;
        csv_row(x, sets[0], v, &lead);
        csv_row(x, sets[1], v + sets[0].n, &lead);
        csv_end(x);
        return;
    }
    json_t *o = json_object();
    json_row(x, o, sets[0], v);
    json_row(x, o, sets[1], v + sets[0].n);
    json_line(x, o);
    json_decref(o);
}

/* Appends a nested message or event (its columns cs without its conversation's) to arr. */
static void nest_item(exporter *x, json_t *arr, colset cs, rowv v) {
    json_t *o = json_object();
    json_row(x, o, cs, v);
    json_array_append_new(arr, o);
}

/* One jsonl conversation: its columns, then the messages and events nested (taken). */
static void emit_nested(exporter *x, rowv conv, json_t *msgs, json_t *evs) {
    json_t *o = json_object();
    json_row(x, o, (colset){conv_cols, NCOLS(conv_cols)}, conv);
    json_object_set_new(o, "messages", msgs);
    json_object_set_new(o, "events", evs);
    json_line(x, o);
    json_decref(o);
}

/* ---- the archive in PostgreSQL ---- */

/* A server-side cursor read in batches of FETCH_ROWS. */
typedef struct {
    exporter *x;
    const char *name;
    PGresult *res;
    int row, nrows, done;
    const char *vals[MAX_COLS];
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

/* Result columns first.. of row r of cur as a row of texts (valid until the next call). */
static rowv cursor_values(cursor *cur, int r, int first) {
    int n = PQnfields(cur->res) - first;
    for (int i = 0; i < n && i < MAX_COLS; i++)
        cur->vals[i] = PQgetisnull(cur->res, r, first + i) ? NULL
                                                           : PQgetvalue(cur->res, r, first + i);
    return cur->vals;
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
#define MSG_FROM "kefu_messages m JOIN kefu_conversations c ON c.conv = m.conv"
#define EV_FROM "kefu_events e JOIN kefu_conversations c ON c.conv = e.conv"

/* Appends the rows of cur that belong to conversation conv (column 0) to arr. The cursors run
 * in the conversations' order, so a conversation's rows are the next ones. */
static void nest(exporter *x, cursor *cur, const char *conv, colset cs, json_t *arr) {
    int r;
    while ((r = cursor_row(cur)) >= 0 && !strcmp(PQgetvalue(cur->res, r, 0), conv)) {
        nest_item(x, arr, cs, cursor_values(cur, r, 1));
        cur->row++;
    }
}

static void pg_nested(exporter *x, const char *const params[5]) {
    colset cs = {conv_cols, NCOLS(conv_cols)};
    colset mcs[2] = {{owner_cols, 1}, {msg_cols, NCOLS(msg_cols)}};
    colset ecs[2] = {{owner_cols, 1}, {ev_cols, NCOLS(ev_cols)}};
    cursor conv, msgs, evs;
    cursor_open(&conv, x, "convs", &cs, 1, "kefu_conversations c", NULL, params);
    cursor_open(&msgs, x, "msgs", mcs, 2, MSG_FROM, MSG_ORDER, params);
    cursor_open(&evs, x, "evs", ecs, 2, EV_FROM, EV_ORDER, params);
    int r;
    while ((r = cursor_row(&conv)) >= 0) {
        const char *id = PQgetvalue(conv.res, r, 0);
        json_t *ma = json_array(), *ea = json_array();
        nest(x, &msgs, id, mcs[1], ma);
        nest(x, &evs, id, ecs[1], ea);
        emit_nested(x, cursor_values(&conv, r, 0), ma, ea);
        conv.row++;
    }
    cursor_close(&conv);
    cursor_close(&msgs);
    cursor_close(&evs);
}

/* One row per conversation, message or event. */
static void pg_flat(exporter *x, const char *const params[5]) {
    colset sets[2];
    flat_sets(x, sets);
    const char *from = x->what == WHAT_CONVERSATIONS ? "kefu_conversations c"
                       : x->what == WHAT_MESSAGES    ? MSG_FROM
                                                     : EV_FROM;
    const char *order = x->what == WHAT_CONVERSATIONS ? NULL
                        : x->what == WHAT_MESSAGES    ? MSG_ORDER
                                                      : EV_ORDER;
    cursor cur;
    cursor_open(&cur, x, "rows", sets, 2, from, order, params);
    int r;
    while ((r = cursor_row(&cur)) >= 0) {
        emit_flat(x, cursor_values(&cur, r, 0));
        cur.row++;
    }
    cursor_close(&cur);
}

/* ---- the closed conversations still in Redis ---- */

/* Without an archive database, closed conversations stay in Redis for retention_days
 * (worker/archive.c). The index of them is the statistics' kefu:{st:D}:closed of each local day
 * D of the workers' stats_timezone (conversation -> closed_at in ms; worker/stats.c), kept
 * stats_days: a day's closes are one ZRANGEBYSCORE away, no SCAN. The tool does not know that
 * time zone, but an offset is at most 14 hours, so the closes of the UTC days d..e are in the
 * index days d-1..e+1, read with the range on the score. */
#define REDIS_PAGE 500      /* conversations per read of a day's index */
#define REDIS_NODES 64      /* cluster masters this tool talks to, at most */
#define REDIS_TRIES 20      /* redirections or retries of one command */
#define LOOKBACK_DAYS 3661  /* without --from: stats_days' largest value (3650), and a margin */
#define DAY_BATCH 256       /* days looked up per round trip */

typedef struct {
    char host[256];
    int port;
    redisContext *c; /* connected at its first command */
} rnode;

typedef struct {
    rnode nodes[REDIS_NODES]; /* [0] the one given */
    int n;
    unsigned char slot[KF_SLOTS]; /* node serving each slot: 0 everywhere stand-alone */
} rsource;

static int rnode_of(rsource *rs, const char *host, int port) {
    for (int i = 0; i < rs->n; i++)
        if (rs->nodes[i].port == port && !strcmp(rs->nodes[i].host, host)) return i;
    if (rs->n == REDIS_NODES) die(EXIT_QUERY, "Redis: more than %d cluster nodes", REDIS_NODES);
    rnode *nd = &rs->nodes[rs->n];
    snprintf(nd->host, sizeof(nd->host), "%s", host);
    nd->port = port;
    return rs->n++;
}

static redisContext *rconn(rsource *rs, int i) {
    rnode *nd = &rs->nodes[i];
    if (nd->c) return nd->c;
    struct timeval connect_tv = {10, 0}, command_tv = {30, 0};
    nd->c = redisConnectWithTimeout(nd->host, nd->port, connect_tv);
    if (!nd->c || nd->c->err)
        die(EXIT_CONNECT, "cannot reach Redis at %s:%d: %s", nd->host, nd->port,
            nd->c ? nd->c->errstr : "out of memory");
    redisSetTimeout(nd->c, command_tv);
    return nd->c;
}

/* Redis holds texts as the gateway stored them (valid UTF-8); the bytes >= 0x80 of anything
 * else become '?' (in place, every string of a reply), as the archive writes them
 * (worker/archive.c), so both sources give the same rows and JSON stays valid. */
static void rclean(redisReply *r) {
    if (r->type == REDIS_REPLY_STRING && !kf_utf8_valid(r->str, strlen(r->str)))
        for (char *p = r->str; *p; p++)
            if ((unsigned char)*p >= 0x80) *p = '?';
    for (size_t i = 0; r->type == REDIS_REPLY_ARRAY && i < r->elements; i++)
        rclean(r->element[i]);
}

/* The string of a reply element, "" for anything else. */
static const char *rstr(const redisReply *r) {
    return r && r->type == REDIS_REPLY_STRING ? r->str : "";
}

/* The reply to a command on key, sent to the node serving the key's slot; a cluster's MOVED,
 * ASK, TRYAGAIN and CLUSTERDOWN are followed. Exits on any other error. */
static redisReply *rcmd(rsource *rs, const char *key, int argc, const char **argv) {
    unsigned slot = kf_key_slot(key, strlen(key));
    int ask = -1;
    for (int tries = 0; tries < REDIS_TRIES; tries++) {
        int i = ask >= 0 ? ask : rs->slot[slot];
        redisContext *c = rconn(rs, i);
        if (ask >= 0) {
            redisReply *r = redisCommand(c, "ASKING");
            if (!r) die(EXIT_QUERY, "Redis at %s:%d: %s", rs->nodes[i].host, rs->nodes[i].port,
                        c->errstr);
            freeReplyObject(r);
        }
        redisReply *r = redisCommandArgv(c, argc, argv, NULL);
        if (!r)
            die(EXIT_QUERY, "Redis at %s:%d: %s", rs->nodes[i].host, rs->nodes[i].port,
                c->errstr);
        if (r->type != REDIS_REPLY_ERROR) {
            rclean(r);
            return r;
        }
        char host[256];
        int port;
        unsigned s;
        enum kf_redirect k = kf_redirect_parse(r->str, r->len, &s, host, sizeof(host), &port);
        if (k == KF_REDIR_NONE) die(EXIT_QUERY, "Redis: %s: %s", argv[0], r->str);
        freeReplyObject(r);
        if (!*host) snprintf(host, sizeof(host), "%s", rs->nodes[i].host);
        ask = -1;
        if (k == KF_REDIR_MOVED && s < KF_SLOTS) rs->slot[s] = (unsigned char)rnode_of(rs, host, port);
        else if (k == KF_REDIR_ASK) ask = rnode_of(rs, host, port);
        else usleep(100000); /* a failover or a migration under way */
    }
    die(EXIT_QUERY, "Redis: %s %s: redirected or retried %d times", argv[0], key, REDIS_TRIES);
    return NULL;
}

/* Connects to host:port; a cluster node gives the slot map, any node of it will do. */
static void rsource_open(rsource *rs, const char *spec) {
    char host[256];
    const char *colon = strrchr(spec, ':');
    int port = 6379;
    size_t hl = colon ? (size_t)(colon - spec) : strlen(spec);
    if (colon) {
        char *end;
        long p = strtol(colon + 1, &end, 10);
        if (*end || p < 1 || p > 65535 || end == colon + 1)
            die(EXIT_USAGE, "--redis must be HOST:PORT, got '%s'", spec);
        port = (int)p;
    }
    if (hl >= 2 && spec[0] == '[' && spec[hl - 1] == ']') spec++, hl -= 2; /* [::1]:6379 */
    if (hl == 0 || hl >= sizeof(host)) die(EXIT_USAGE, "--redis must be HOST:PORT, got '%s'", spec);
    memcpy(host, spec, hl);
    host[hl] = '\0';
    memset(rs, 0, sizeof(*rs));
    rnode_of(rs, host, port);
    redisContext *c = rconn(rs, 0);
    redisReply *r = redisCommand(c, "CLUSTER SLOTS");
    if (!r) die(EXIT_CONNECT, "cannot reach Redis at %s:%d: %s", host, port, c->errstr);
    if (r->type == REDIS_REPLY_ERROR) {
        /* "cluster support disabled": stand-alone, every slot here; "NOAUTH" and the like: */
        if (!strstr(r->str, "cluster support disabled"))
            die(EXIT_CONNECT, "Redis at %s:%d: %s", host, port, r->str);
    } else {
        enum { MAX_RANGES = 4096 };
        kf_slot_range *ranges = kf_malloc(MAX_RANGES * sizeof(*ranges));
        int n = kf_cluster_slots_parse(r, ranges, MAX_RANGES);
        if (n < 0) die(EXIT_CONNECT, "Redis at %s:%d: CLUSTER SLOTS: not a slot map", host, port);
        for (int i = 0; i < n; i++) {
            int node = rnode_of(rs, *ranges[i].host ? ranges[i].host : host, ranges[i].port);
            for (unsigned sl = ranges[i].first; sl <= ranges[i].last && sl < KF_SLOTS; sl++)
                rs->slot[sl] = (unsigned char)node;
        }
        kf_free(ranges);
    }
    freeReplyObject(r);
}

static void rsource_close(rsource *rs) {
    for (int i = 0; i < rs->n; i++)
        if (rs->nodes[i].c) redisFree(rs->nodes[i].c);
}

/* The value of field f in a flat field, value, ... array (HGETALL, a stream entry), or NULL. */
static const char *rfield(redisReply *kv, const char *f) {
    for (size_t i = 0; kv->type == REDIS_REPLY_ARRAY && i + 1 < kv->elements; i += 2)
        if (!strcmp(rstr(kv->element[i]), f)) return rstr(kv->element[i + 1]);
    return NULL;
}

typedef struct {
    const char *k, *v;
} pair;

/* PostgreSQL's jsonb keeps an object's keys shorter first, then bytewise. */
static int jsonb_order(const void *a, const void *b) {
    const char *x = ((const pair *)a)->k, *y = ((const pair *)b)->k;
    size_t lx = strlen(x), ly = strlen(y);
    return lx != ly ? (lx < ly ? -1 : 1) : strcmp(x, y);
}

/* The pairs of a flat field, value, ... array as a JSON object text, its keys in jsonb's order:
 * the object the archive's jsonb column gives back. The caller frees it. */
static char *rjson(redisReply *kv) {
    size_t n = kv->type == REDIS_REPLY_ARRAY ? kv->elements / 2 : 0;
    pair *ps = kf_malloc((n ? n : 1) * sizeof(*ps));
    for (size_t i = 0; i < n; i++)
        ps[i] = (pair){rstr(kv->element[2 * i]), rstr(kv->element[2 * i + 1])};
    qsort(ps, n, sizeof(*ps), jsonb_order);
    json_t *o = json_object();
    for (size_t i = 0; i < n; i++) json_object_set_new(o, ps[i].k, json_string(ps[i].v));
    kf_free(ps);
    char *text = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(o);
    if (!text) die(EXIT_QUERY, "cannot encode a record as JSON");
    return text;
}

/* Numbers written for a row's values: times (ms, as the archive's microseconds), ratings and
 * QA scores, counts. */
typedef struct {
    char num[MAX_COLS][24];
    int n;
} numbuf;

static const char *rnum(numbuf *b, long long v) {
    snprintf(b->num[b->n], sizeof(b->num[0]), "%lld", v);
    return b->num[b->n++];
}

/* A time in ms as the archive holds it; NULL (never set) for 0 and less. */
static const char *rtime(numbuf *b, long long ms) { return ms > 0 ? rnum(b, ms * 1000) : NULL; }

/* Where each column of conv_cols comes from in the meta hash, as worker/archive.c archives it:
 * 's' the field's text ("" when absent), 'n' its text or NULL when absent, 'i' an integer or
 * NULL when absent or empty, 't' a time (ms; a stream id's ms for first_response), and the
 * conversation id ('v'), the creation ('C': created, else the close), the close ('X') and the
 * whole hash ('m'). */
static const struct {
    const char *field;
    char how;
} conv_src[] = {
    {"", 'v'}, {"ticket", 's'}, {"channel", 's'}, {"group", 's'}, {"topic", 's'},
    {"category", 's'}, {"priority", 's'}, {"level", 's'}, {"customer", 's'},
    {"customer_name", 's'}, {"agent", 's'}, {"agent_name", 's'}, {"resolution", 's'},
    {"closed_by", 's'}, {"created", 'C'}, {"assigned_at", 't'}, {"first_response", 't'},
    {"closed_at", 'X'}, {"rating", 'i'}, {"rating_comment", 'n'}, {"rated_at", 't'},
    {"qa_score", 'i'}, {"qa_notes", 'n'}, {"qa_tags", 'n'}, {"qa_by", 'n'}, {"qa_at", 't'},
    {"", 'm'},
};
_Static_assert(NCOLS(conv_src) == NCOLS(conv_cols), "conv_src follows conv_cols");
enum { CONV_CHANNEL = 2, CONV_GROUP = 3, CONV_AGENT = 10 };

/* The range and filters of the export. */
typedef struct {
    int has_from, has_to;
    int64_t from_s, to_s; /* [from, to) */
    filter channels, groups, agents;
} query;

static int filter_match(const filter *f, const char *v) {
    if (f->n == 0) return 1;
    for (int i = 0; i < f->n; i++)
        if (!strcmp(f->v[i], v)) return 1;
    return 0;
}

static redisReply *rstream(rsource *rs, void (*keyf)(char *, const char *), const char *conv) {
    char k[KF_KEY_MAX];
    keyf(k, conv);
    const char *argv[] = {"XRANGE", k, "-", "+"};
    return rcmd(rs, k, 4, argv);
}

/* The entries of a conversation's messages or record as rows, led by its owner columns:
 * written flat, or nested into arr when arr is given. */
static void rentries(exporter *x, redisReply *xr, int events, const char *owner[5],
                     json_t *arr) {
    for (size_t i = 0; xr->type == REDIS_REPLY_ARRAY && i < xr->elements; i++) {
        redisReply *e = xr->element[i];
        if (e->type != REDIS_REPLY_ARRAY || e->elements != 2) continue;
        redisReply *kv = e->element[1];
        const char *v[5 + 7], *id = rstr(e->element[0]), *f;
        numbuf nb = {.n = 0};
        char *fields = NULL;
        memcpy(v, owner, 5 * sizeof(*v));
        v[5] = id;
        if (!events) {
            static const char *const from[] = {"from", "role", "name", "text", "cid"};
            v[6] = rtime(&nb, atoll(id));
            for (int c = 0; c < 5; c++) v[7 + c] = (f = rfield(kv, from[c])) ? f : "";
        } else {
            long long ts = (f = rfield(kv, "ts")) ? atoll(f) : 0;
            v[6] = rtime(&nb, ts > 0 ? ts : atoll(id));
            v[7] = (f = rfield(kv, "ev")) ? f : "";
            v[8] = (f = rfield(kv, "by")) ? f : "";
            v[9] = fields = rjson(kv);
        }
        if (arr)
            nest_item(x, arr, events ? (colset){ev_cols, NCOLS(ev_cols)}
                                     : (colset){msg_cols, NCOLS(msg_cols)}, v + 5);
        else
            emit_flat(x, v);
        free(fields);
    }
}

static long long rlen(rsource *rs, void (*keyf)(char *, const char *), const char *conv) {
    char k[KF_KEY_MAX];
    keyf(k, conv);
    const char *argv[] = {"XLEN", k};
    redisReply *r = rcmd(rs, k, 2, argv);
    long long n = r->type == REDIS_REPLY_INTEGER ? r->integer : 0;
    freeReplyObject(r);
    return n;
}

/* One conversation of a day's index, written when it is still there, closed, and within the
 * range and filters. */
static void rconv(exporter *x, rsource *rs, const query *q, const char *conv, long long score) {
    char k[KF_KEY_MAX];
    kf_key_conv_meta(k, conv);
    const char *argv[] = {"HGETALL", k};
    redisReply *meta = rcmd(rs, k, 2, argv);
    const char *f = rfield(meta, "state");
    if (!f || strcmp(f, "closed")) { /* expired, trimmed after archiving, or never closed */
        freeReplyObject(meta);
        return;
    }
    long long closed = (f = rfield(meta, "closed_at")) && atoll(f) > 0 ? atoll(f) : score;
    if ((q->has_from && closed < q->from_s * 1000) || (q->has_to && closed >= q->to_s * 1000)) {
        freeReplyObject(meta);
        return;
    }
    const char *v[MAX_COLS];
    numbuf nb = {.n = 0};
    char *meta_json = NULL;
    for (int i = 0; i < NCOLS(conv_src); i++) {
        const char *s = rfield(meta, conv_src[i].field);
        switch (conv_src[i].how) {
        case 'v': v[i] = conv; break;
        case 's': v[i] = s ? s : ""; break;
        case 'n': v[i] = s; break;
        case 'i': v[i] = s && *s ? rnum(&nb, atoll(s)) : NULL; break;
        case 't': v[i] = rtime(&nb, s ? atoll(s) : 0); break;
        case 'C': v[i] = rtime(&nb, s && atoll(s) > 0 ? atoll(s) : closed); break;
        case 'X': v[i] = rtime(&nb, closed); break;
        case 'm': v[i] = meta_json = rjson(meta); break;
        }
    }
    if (filter_match(&q->channels, v[CONV_CHANNEL]) && filter_match(&q->groups, v[CONV_GROUP]) &&
        filter_match(&q->agents, v[CONV_AGENT])) {
        const char *owner[5] = {v[0], v[1], v[CONV_CHANNEL], v[CONV_GROUP], v[CONV_AGENT]};
        if (is_nested(x)) {
            json_t *ma = json_array(), *ea = json_array();
            redisReply *msgs = rstream(rs, kf_key_conv_msgs, conv);
            redisReply *log = rstream(rs, kf_key_conv_log, conv);
            rentries(x, msgs, 0, owner, ma);
            rentries(x, log, 1, owner, ea);
            freeReplyObject(msgs);
            freeReplyObject(log);
            emit_nested(x, v, ma, ea);
        } else if (x->what == WHAT_CONVERSATIONS) {
            v[NCOLS(conv_cols)] = rnum(&nb, rlen(rs, kf_key_conv_msgs, conv));
            v[NCOLS(conv_cols) + 1] = rnum(&nb, rlen(rs, kf_key_conv_log, conv));
            emit_flat(x, v);
        } else {
            int events = x->what == WHAT_EVENTS;
            redisReply *xr = rstream(rs, events ? kf_key_conv_log : kf_key_conv_msgs, conv);
            rentries(x, xr, events, owner, NULL);
            freeReplyObject(xr);
        }
    }
    free(meta_json);
    freeReplyObject(meta);
}

/* Which of keys exist: EXISTS of each, pipelined to the nodes serving them (a range without
 * --from looks up some 3660 days, most of them empty: one round trip per batch, not per day).
 * A key whose node redirects is asked again on its own, which follows the redirection. */
static void rexist(rsource *rs, int n, char keys[][KF_KEY_MAX], int *out) {
    int node[DAY_BATCH];
    for (int i = 0; i < n; i++) {
        node[i] = rs->slot[kf_key_slot(keys[i], strlen(keys[i]))];
        const char *argv[] = {"EXISTS", keys[i]};
        if (redisAppendCommandArgv(rconn(rs, node[i]), 2, argv, NULL) != REDIS_OK)
            die(EXIT_QUERY, "Redis: out of memory");
    }
    for (int i = 0; i < n; i++) {
        redisContext *c = rs->nodes[node[i]].c;
        void *rv = NULL;
        if (redisGetReply(c, &rv) != REDIS_OK)
            die(EXIT_QUERY, "Redis at %s:%d: %s", rs->nodes[node[i]].host,
                rs->nodes[node[i]].port, c->errstr);
        redisReply *r = rv;
        if (r->type == REDIS_REPLY_ERROR) {
            freeReplyObject(r);
            const char *argv[] = {"EXISTS", keys[i]};
            r = rcmd(rs, keys[i], 2, argv);
        }
        out[i] = r->type == REDIS_REPLY_INTEGER && r->integer > 0;
        freeReplyObject(r);
    }
}

/* The conversations of one day's index within the range, read in pages by score, so what the
 * workers add meanwhile neither repeats nor hides a conversation. */
static void redis_day(exporter *x, rsource *rs, const query *q, const char *key) {
    char lo[32], hi[32], skip[24];
    if (q->has_from) snprintf(lo, sizeof(lo), "%lld", (long long)q->from_s * 1000);
    else snprintf(lo, sizeof(lo), "-inf");
    if (q->has_to) snprintf(hi, sizeof(hi), "(%lld", (long long)q->to_s * 1000);
    else snprintf(hi, sizeof(hi), "+inf");
    long long offset = 0; /* members of score lo already read */
    for (;;) {
        snprintf(skip, sizeof(skip), "%lld", offset);
        const char *argv[] = {"ZRANGEBYSCORE", key, lo, hi, "WITHSCORES", "LIMIT", skip,
                              STR(REDIS_PAGE)};
        redisReply *r = rcmd(rs, key, 8, argv);
        size_t n = r->type == REDIS_REPLY_ARRAY ? r->elements / 2 : 0;
        long long score = 0, same = 0;
        for (size_t i = 0; i < n; i++) {
            long long s = atoll(rstr(r->element[2 * i + 1]));
            same = i && s == score ? same + 1 : 1;
            score = s;
            rconv(x, rs, q, rstr(r->element[2 * i]), s);
        }
        freeReplyObject(r);
        if (n < REDIS_PAGE) return;
        /* the next page starts at the last score, after the members of it read */
        char next[32];
        snprintf(next, sizeof(next), "%lld", score);
        if (!strcmp(next, lo)) {
            offset += (long long)n;
        } else {
            snprintf(lo, sizeof(lo), "%s", next);
            offset = same;
        }
    }
}

/* Every day's index that may hold closes of the range, oldest first. */
static void redis_export(exporter *x, rsource *rs, const query *q) {
    int64_t today = (int64_t)time(NULL) / 86400;
    int64_t first = q->has_from ? (q->from_s >= 0 ? q->from_s / 86400 : -1) - 1
                                : today - LOOKBACK_DAYS;
    int64_t last = q->has_to ? (q->to_s - 1) / 86400 + 1 : today + 1;
    static char keys[DAY_BATCH][KF_KEY_MAX];
    int there[DAY_BATCH];
    for (int64_t d = first; d <= last; d += DAY_BATCH) {
        int n = last - d + 1 < DAY_BATCH ? (int)(last - d + 1) : DAY_BATCH;
        for (int i = 0; i < n; i++) {
            int64_t y;
            int m, dd;
            char day[16];
            kf_civil_from_days(d + i, &y, &m, &dd);
            snprintf(day, sizeof(day), "%04lld%02d%02d", (long long)y, m, dd);
            kf_key_stats(keys[i], day, "closed");
        }
        rexist(rs, n, keys, there);
        for (int i = 0; i < n; i++)
            if (there[i]) redis_day(x, rs, q, keys[i]);
    }
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

/* Connects to the archive database and opens the export's transaction; exits when it cannot
 * be reached or is no kefu archive. */
static void pg_open(exporter *x, const char *db) {
    /* connect_timeout first: one in the connection string overrides it. */
    const char *const keys[] = {"connect_timeout", "fallback_application_name", "dbname", NULL};
    const char *const vals[] = {"10", "kefu-export", db, NULL};
    x->pg = PQconnectdbParams(keys, vals, 1);
    if (PQstatus(x->pg) != CONNECTION_OK) {
        const char *m = PQerrorMessage(x->pg);
        size_t n = strlen(m);
        while (n && (m[n - 1] == '\n' || m[n - 1] == ' ')) n--;
        die(EXIT_CONNECT, "cannot reach the archive database: %.*s", (int)n, m);
    }
    /* UTF-8 whatever the database's encoding, and one snapshot for every cursor, so the
     * nested messages and events are those of the conversations read. */
    if (PQsetClientEncoding(x->pg, "UTF8") != 0)
        die(EXIT_QUERY, "cannot set the client encoding: %s", PQerrorMessage(x->pg));
    exec_ok(x->pg, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY");
    check_schema(x->pg);
}

int main(int argc, char **argv) {
    static const struct option opts[] = {
        {"db", required_argument, NULL, 'd'},
        {"redis", required_argument, NULL, 'r'},
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
    query qy;
    rsource *rs = NULL;
    const char *db = NULL, *redis = NULL, *tzspec = "UTC", *output = NULL;
    const char *from_s = NULL, *to_s = NULL;
    int opt;

    memset(&x, 0, sizeof(x));
    memset(&qy, 0, sizeof(qy));
    x.mask = 1;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, ":ho:", opts, NULL)) != -1) {
        switch (opt) {
        case 'd': db = optarg; break;
        case 'r': redis = optarg; break;
        case 'f': from_s = optarg; break;
        case 't': to_s = optarg; break;
        case 'z': tzspec = optarg; break;
        case 'c': filter_add(&qy.channels, "--channel", optarg); break;
        case 'g': filter_add(&qy.groups, "--group", optarg); break;
        case 'a': filter_add(&qy.agents, "--agent", optarg); break;
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
    if (db && redis) die(EXIT_USAGE, "--db and --redis: give one source");
    if (!db && !redis) db = getenv("KEFU_ARCHIVE_DB");
    if (!redis && (!db || !*db))
        die(EXIT_USAGE, "no source: give --db URL (or set KEFU_ARCHIVE_DB), or --redis HOST:PORT");
    char err[256];
    if (kf_tz_load(&x.tz, tzspec, err, sizeof(err)) < 0) die(EXIT_USAGE, "--timezone: %s", err);

    /* [from, to) in unix seconds: local midnights of the first day and of the day after the
     * last, so a day is the time zone's day (23 or 25 hours across a DST change). */
    int64_t from_d = 0, to_d = 0;
    if (from_s) from_d = parse_day("--from", from_s);
    if (to_s) to_d = parse_day("--to", to_s);
    if (from_s && to_s && to_d < from_d)
        die(EXIT_USAGE, "the range is reversed: --to %s is before --from %s", to_s, from_s);
    qy.has_from = from_s != NULL;
    qy.has_to = to_s != NULL;
    if (from_s) qy.from_s = kf_tz_mktime(&x.tz, from_d * 86400);
    if (to_s) qy.to_s = kf_tz_mktime(&x.tz, (to_d + 1) * 86400);

    char from_p[32], to_p[32], *arrays[3] = {NULL, NULL, NULL};
    const char *params[5] = {NULL, NULL, NULL, NULL, NULL};
    if (redis) {
        rs = kf_malloc(sizeof(*rs));
        rsource_open(rs, redis);
    } else {
        if (from_s) {
            snprintf(from_p, sizeof(from_p), "%lld", (long long)qy.from_s);
            params[0] = from_p;
        }
        if (to_s) {
            snprintf(to_p, sizeof(to_p), "%lld", (long long)qy.to_s);
            params[1] = to_p;
        }
        arrays[0] = filter_array(&qy.channels);
        arrays[1] = filter_array(&qy.groups);
        arrays[2] = filter_array(&qy.agents);
        params[2] = arrays[0];
        params[3] = arrays[1];
        params[4] = arrays[2];
        pg_open(&x, db);
    }

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

    emit_header(&x);
    if (rs) {
        redis_export(&x, rs, &qy);
    } else {
        if (is_nested(&x)) pg_nested(&x, params);
        else pg_flat(&x, params);
        exec_ok(x.pg, "COMMIT");
    }

    if (fflush(x.out) != 0 || ferror(x.out)) die(EXIT_OUTPUT, "write: %s", strerror(errno));
    if (tmp) {
        if (fclose(x.out) != 0 || rename(tmp, output) != 0)
            die(EXIT_OUTPUT, "%s: %s", output, strerror(errno));
        partial_output = NULL;
        kf_free(tmp);
    }
    if (x.pg) PQfinish(x.pg);
    if (rs) rsource_close(rs);
    kf_free(rs);
    for (int i = 0; i < 3; i++) kf_free(arrays[i]);
    kf_free(x.mbuf);
    kf_tz_free(&x.tz);
    return 0;
}
