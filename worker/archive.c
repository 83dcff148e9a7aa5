/* The archive: closed conversations (meta, every message, the record) are written to PostgreSQL
 * (archive_db; schema sql/kefu-archive.sql, embedded and run at every connect) and later
 * trimmed from Redis. Without archive_db a closed conversation's keys expire retention_days
 * after the close instead.
 *
 * Which and when: the `closed` lifecycle event puts the conversation into a pending set scored
 * by when it is due (close + archive_delay_s, so the rating usually comes first); a `rated`
 * event makes it due again at once. The pending set is split into PARTS partitions, hash tags
 * {ar:0}..{ar:7} chosen by FNV-1a of the conversation id, so no single slot takes every close.
 * Every worker polls every partition; archive_claim.lua hands each due conversation to one
 * worker under a lease (kefu:{ar:<p>}:leases), a member whose lease ran out (its worker was
 * killed) is handed out again. A claimed member stays in the pending set until it is done, so
 * the oldest due member measures the lag even while the database is down.
 *
 * One pass: archive_read.lua reads meta, messages and record in one snapshot (after the first
 * committed pass only the messages and entries that came since: the meta notes how far the
 * database holds the streams, archived_msg_id and archived_log_id); one SQL statement
 * (one transaction) upserts the conversations and inserts messages and events with ON CONFLICT
 * DO NOTHING, so any number of passes, by any workers, leave each row once (a second pass only
 * updates the conversation row: a rating, a QA review). The statement is prepared once per
 * connection and takes up to BATCH_MAX conversations read and waiting (BATCH_BYTES of JSON at
 * most) as three jsonb arrays: parsing, planning and committing once per conversation had cost
 * PostgreSQL more than the rows themselves. When PostgreSQL refuses a batch, one conversation's
 * row is at fault and nothing of the batch was written: its members are written again one per
 * statement, so the others get in and only the faulty one is held (HOLD_MS) and logged.
 * Only after the commit, archive_mark.lua notes
 * `archived_at` in the meta and sets the keys' expiry; archive_done.lua reschedules the member
 * for one more pass archive_trim_s after the first archiving, which catches late QA reviews and
 * deletes the keys (unless the record grew since it was read: then yet another pass). The keys'
 * expiry, GRACE_MS after that pass is due, only matters when the pass cannot run (database
 * down that long): what changed since the previous pass is then lost.
 *
 * The database is reached with libpq's asynchronous API on the worker's loop: one connection,
 * one statement at a time, reconnected with backoff; while it is down nothing is claimed and
 * the other jobs of the worker go on. */
#include <event2/buffer.h>
#include <event2/event.h>
#include <libpq-fe.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kefu/alloc.h"
#include "kefu/hash.h"
#include "kefu/keys.h"
#include "kefu/log.h"
#include "kefu/mask.h"
#include "kefu/utf8.h"
#include "wk.h"

#define PARTS 8
#define POLL_MS 1000
#define QUERY_TIMEOUT_MS 30000
#define BACKOFF_MIN_MS 250
#define BACKOFF_MAX_MS 5000
#define HOLD_MS 600000         /* a conversation the database refused is tried again this late */
#define GRACE_MS 3600000LL     /* the keys expire this long after the trim pass is due */
#define BATCH_MAX 100          /* conversations per statement ... */
#define BATCH_BYTES (1 << 20)  /* ... and their JSON, at most (one conversation may exceed it) */
#define STMT "kefu_archive"    /* the prepared statement's name */

extern const char wk_archive_schema[]; /* sql/kefu-archive.sql, generated */

enum { DB_OFF, DB_DOWN, DB_CONNECTING, DB_SCHEMA, DB_PREPARE, DB_READY };

struct item {
    struct item *next;
    char conv[72];
    char due[32];   /* the pending score it was claimed with */
    int part;
    int alone;              /* its batch was refused: written in a statement of its own */
    char *row, *msgs, *evs; /* its JSON for the statement's parameters */
    size_t size;            /* ... their length */
    char last_log[48];      /* id of the last record entry read (or archived before) */
    char last_msg[48];      /* ... of the last message */
};

static struct {
    int state;
    PGconn *pg;
    struct event *rd_ev, *wr_ev, *retry_ev, *poll_ev, *timeout_ev;
    long long backoff_ms;
    int busy;               /* a statement is in flight */
    struct item *cur;       /* ... for these items, a list (NULL: the schema, the prepare) */
    int ncur;
    struct item *head, *tail; /* read from Redis, waiting for the database */
    int inflight;           /* claimed and not finished */
    int claiming;           /* claim calls unanswered */
    int reading;            /* archive_read calls unanswered */
    int full;               /* a partition gave a full share: poll again when done */
    long long pending[PARTS], oldest[PARTS];
    PGresult *last;         /* the statement's result kept so far */
    int ok;                 /* ... no failure among them */
    int warned;             /* the database's absence was logged (once until it is back) */
    uint64_t archived, failures, trimmed;
} ar;

static void connect_db(void);
static void pump(void);
static void sent(void);

/* ---- keys ---- */

static int part_of(const char *conv) { return (int)(kf_hash_str(conv) % PARTS); }

static void key_pending(char *k, int p) { snprintf(k, KF_KEY_MAX, "kefu:{ar:%d}:pending", p); }
static void key_leases(char *k, int p) { snprintf(k, KF_KEY_MAX, "kefu:{ar:%d}:leases", p); }

/* ---- lifecycle hooks ---- */

void wk_archive_closed(wk_job *j, const char *conv, long long ts) {
    if (!*conv) return;
    if (!*wk.opt.archive_db) {
        if (wk.opt.retention_days <= 0 || ts <= 0) return;
        long long at = ts + wk.opt.retention_days * 86400000LL;
        char k[KF_KEY_MAX];
        void (*keyf[4])(char *, const char *) = {kf_key_conv_meta, kf_key_conv_msgs,
                                                 kf_key_conv_log, kf_key_conv_bot};
        for (int i = 0; i < 4; i++) {
            keyf[i](k, conv);
            kf_redis_cmd_key(wk.redis, k, wk_job_cb, wk_job_ref(j), "PEXPIREAT %s %lld", k, at);
        }
        return;
    }
    char k[KF_KEY_MAX];
    key_pending(k, part_of(conv));
    kf_redis_cmd_key(wk.redis, k, wk_job_cb, wk_job_ref(j), "ZADD %s LT %lld %s", k,
                     (ts > 0 ? ts : (long long)wk_now_ms()) + wk.opt.archive_delay_s * 1000, conv);
}

void wk_archive_rated(wk_job *j, const char *conv, long long ts) {
    if (!*conv || !*wk.opt.archive_db) return;
    char k[KF_KEY_MAX];
    key_pending(k, part_of(conv));
    kf_redis_cmd_key(wk.redis, k, wk_job_cb, wk_job_ref(j), "ZADD %s LT %lld %s", k,
                     ts > 0 ? ts : (long long)wk_now_ms(), conv);
}

/* ---- finishing an item ---- */

static void item_free(struct item *it) {
    kf_free(it->row);
    kf_free(it->msgs);
    kf_free(it->evs);
    kf_free(it);
}

static void on_done(const redisReply *r, const char *err, void *priv) {
    (void)priv;
    if (!err && r->type == REDIS_REPLY_ERROR) kf_error("archive_done: %s", r->str);
}

/* mode "done" (next: the next pass, "" none), "release" or "hold" (next: the lease's end) */
static void finish(struct item *it, const char *mode, const char *next) {
    if (!wk.stopping) {
        char pk[KF_KEY_MAX], lk[KF_KEY_MAX];
        key_pending(pk, it->part);
        key_leases(lk, it->part);
        const char *argv[] = {pk, lk, it->conv, it->due, next, mode};
        kf_redis_script(wk.redis, kf_redis_slot(wk.redis, pk), "archive_done", on_done, NULL, 2,
                        6, argv, NULL);
    }
    item_free(it);
    ar.inflight--;
    if (ar.inflight == 0 && ar.full && !wk.draining && !wk.stopping) {
        ar.full = 0;
        event_active(ar.poll_ev, EV_TIMEOUT, 0);
    }
}

static void on_marked(const redisReply *r, const char *err, void *priv) {
    struct item *it = priv;
    if (wk.stopping) {
        item_free(it);
        ar.inflight--;
        return;
    }
    if (err || r->type != REDIS_REPLY_ARRAY || r->elements < 1 ||
        r->element[0]->type != REDIS_REPLY_STRING) {
        /* archived, not marked: the lease hands it out again, which changes nothing */
        kf_warn("archive: conversation written, not marked in Redis: %s",
                err ? err : r->type == REDIS_REPLY_ERROR ? r->str : "bad reply");
        finish(it, "release", "");
        return;
    }
    char code = r->element[0]->str[0];
    const char *next = r->elements >= 2 && r->element[1]->type == REDIS_REPLY_STRING
                           ? r->element[1]->str : "";
    if (code == 'D') ar.trimmed++;
    finish(it, "done", code == 'A' || code == 'C' ? next : "");
}

static void mark(struct item *it) {
    char meta[KF_KEY_MAX], msgs[KF_KEY_MAX], log[KF_KEY_MAX], bot[KF_KEY_MAX];
    kf_key_conv_meta(meta, it->conv);
    kf_key_conv_msgs(msgs, it->conv);
    kf_key_conv_log(log, it->conv);
    kf_key_conv_bot(bot, it->conv);
    char now[24], trim[24], grace[24];
    snprintf(now, sizeof(now), "%lld", (long long)wk_now_ms());
    snprintf(trim, sizeof(trim), "%lld", wk.opt.archive_trim_s * 1000);
    snprintf(grace, sizeof(grace), "%lld", GRACE_MS);
    const char *argv[] = {meta, msgs, log, bot, now, trim, grace, wk.consumer, it->last_log,
                          it->last_msg};
    kf_redis_script(wk.redis, kf_redis_slot(wk.redis, meta), "archive_mark", on_marked, it, 4, 10,
                    argv, NULL);
}

/* ---- the rows ---- */

static const char *s_of(const redisReply *r) {
    return r && r->type == REDIS_REPLY_STRING ? r->str : "";
}

/* A JSON string of s, which Redis holds as the gateway stored it (valid UTF-8); anything else
 * loses its bytes >= 0x80 rather than the whole row. */
static json_t *jstr(const char *s) {
    if (kf_utf8_valid(s, strlen(s))) return json_string(s);
    char *c = kf_strdup(s);
    for (char *p = c; *p; p++)
        if ((unsigned char)*p >= 0x80) *p = '?';
    json_t *j = json_string(c);
    kf_free(c);
    return j;
}

/* Text that may hold personal data, masked when archive_mask says so. */
static json_t *jtext(const char *s) {
    if (!wk.opt.archive_mask || !*s) return jstr(s);
    size_t cap = strlen(s) * 2 + 64;
    char *m = kf_malloc(cap);
    kf_mask_pii(m, cap, s);
    json_t *j = jstr(m);
    kf_free(m);
    return j;
}

/* Fields of the meta and of record entries written by people (names, topics, comments, notes):
 * masked. The others are ids, times, counters and fixed words. */
static int is_text_field(const char *f) {
    static const char *const text[] = {"customer_name", "agent_name", "name", "topic",
                                       "rating_comment", "comment", "qa_notes", "notes", "text",
                                       "reason", "handoff", "note", "keyword", NULL};
    for (int i = 0; text[i]; i++)
        if (!strcmp(f, text[i])) return 1;
    return 0;
}

/* An ISO 8601 UTC time of a unix ms value, or JSON null for 0 and less. */
static json_t *jtime(long long ms) {
    if (ms <= 0) return json_null();
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    char buf[48];
    snprintf(buf, sizeof(buf), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(ms % 1000));
    return json_string(buf);
}

static json_t *jint_or_null(const char *s) {
    return *s ? json_integer(atoll(s)) : json_null();
}

static const char *mget(json_t *meta, const char *f) {
    const char *v = json_string_value(json_object_get(meta, f));
    return v ? v : "";
}

/* Builds the item's parameters from archive_read.lua's answer; 0, or -1 when there is nothing
 * to archive (no such conversation, or not closed). */
static int build(struct item *it, const redisReply *r) {
    const redisReply *m = r->element[0], *msgs = r->element[1], *log = r->element[2];
    if (m->type != REDIS_REPLY_ARRAY || m->elements == 0) return -1;
    json_t *raw = json_object(), *masked = json_object();
    for (size_t i = 0; i + 1 < m->elements; i += 2) {
        const char *f = s_of(m->element[i]), *v = s_of(m->element[i + 1]);
        json_object_set_new(raw, f, jstr(v));
        json_object_set_new(masked, f, is_text_field(f) ? jtext(v) : jstr(v));
    }
    if (strcmp(mget(raw, "state"), "closed") != 0) {
        json_decref(raw);
        json_decref(masked);
        return -1;
    }
    /* a later pass reads only the entries after these (archive_read.lua) */
    snprintf(it->last_msg, sizeof(it->last_msg), "%s", mget(raw, "archived_msg_id"));
    snprintf(it->last_log, sizeof(it->last_log), "%s", mget(raw, "archived_log_id"));
    long long closed = atoll(mget(raw, "closed_at")), created = atoll(mget(raw, "created"));
    const char *rc = mget(raw, "rating_comment"), *qn = mget(raw, "qa_notes");
    json_t *row = json_pack(
        "{s:s, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o,"
        " s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:O, s:o, s:s}",
        "conv", it->conv, "ticket", jstr(mget(raw, "ticket")), "channel",
        jstr(mget(raw, "channel")), "grp", jstr(mget(raw, "group")), "topic",
        jtext(mget(raw, "topic")),
        "category", jstr(mget(raw, "category")), "priority", jstr(mget(raw, "priority")),
        "level", jstr(mget(raw, "level")), "customer", jstr(mget(raw, "customer")),
        "customer_name", jtext(mget(raw, "customer_name")), "agent", jstr(mget(raw, "agent")),
        "agent_name", jtext(mget(raw, "agent_name")), "resolution",
        jstr(mget(raw, "resolution")), "closed_by", jstr(mget(raw, "closed_by")), "created_at",
        jtime(created > 0 ? created : closed), "assigned_at",
        jtime(atoll(mget(raw, "assigned_at"))), "first_response_at",
        jtime(atoll(mget(raw, "first_response"))), "closed_at", jtime(closed), "rating",
        jint_or_null(mget(raw, "rating")), "rating_comment",
        json_object_get(raw, "rating_comment") ? jtext(rc) : json_null(), "rated_at",
        jtime(atoll(mget(raw, "rated_at"))), "qa_score", jint_or_null(mget(raw, "qa_score")),
        "qa_notes", json_object_get(raw, "qa_notes") ? jtext(qn) : json_null(), "qa_tags",
        json_object_get(raw, "qa_tags") ? jstr(mget(raw, "qa_tags")) : json_null(), "qa_by",
        json_object_get(raw, "qa_by") ? jstr(mget(raw, "qa_by")) : json_null(), "qa_at",
        jtime(atoll(mget(raw, "qa_at"))), "meta", masked, "archived_at", jtime(wk_now_ms()),
        "archived_by", wk.consumer);
    json_decref(raw);
    json_decref(masked);
    if (!row) return -1;

    json_t *ma = json_array();
    for (size_t i = 0; msgs->type == REDIS_REPLY_ARRAY && i < msgs->elements; i++) {
        const redisReply *e = msgs->element[i];
        if (e->type != REDIS_REPLY_ARRAY || e->elements != 2) continue;
        const char *id = s_of(e->element[0]);
        snprintf(it->last_msg, sizeof(it->last_msg), "%s", id);
        const redisReply *kv = e->element[1];
        const char *from = "", *role = "", *name = "", *text = "", *cid = "";
        for (size_t k = 0; kv->type == REDIS_REPLY_ARRAY && k + 1 < kv->elements; k += 2) {
            const char *f = s_of(kv->element[k]), *v = s_of(kv->element[k + 1]);
            if (!strcmp(f, "from")) from = v;
            else if (!strcmp(f, "role")) role = v;
            else if (!strcmp(f, "name")) name = v;
            else if (!strcmp(f, "text")) text = v;
            else if (!strcmp(f, "cid")) cid = v;
        }
        json_array_append_new(ma, json_pack("{s:s, s:o, s:o, s:o, s:o, s:o, s:o, s:o}", "conv",
                                            it->conv, "id", jstr(id), "at", jtime(atoll(id)),
                                            "sender", jstr(from), "role", jstr(role), "name",
                                            jtext(name), "body", jtext(text), "cid", jstr(cid)));
    }
    json_t *ea = json_array();
    for (size_t i = 0; log->type == REDIS_REPLY_ARRAY && i < log->elements; i++) {
        const redisReply *e = log->element[i];
        if (e->type != REDIS_REPLY_ARRAY || e->elements != 2) continue;
        const char *id = s_of(e->element[0]);
        snprintf(it->last_log, sizeof(it->last_log), "%s", id);
        const redisReply *kv = e->element[1];
        json_t *fields = json_object();
        for (size_t k = 0; kv->type == REDIS_REPLY_ARRAY && k + 1 < kv->elements; k += 2) {
            const char *f = s_of(kv->element[k]), *v = s_of(kv->element[k + 1]);
            json_object_set_new(fields, f, is_text_field(f) ? jtext(v) : jstr(v));
        }
        long long ts = atoll(mget(fields, "ts"));
        json_t *ev = json_pack("{s:s, s:o, s:o, s:o, s:o}", "conv", it->conv, "id", jstr(id),
                               "at", jtime(ts > 0 ? ts : atoll(id)), "ev",
                               jstr(mget(fields, "ev")), "actor", jstr(mget(fields, "by")));
        json_object_set_new(ev, "fields", fields);
        json_array_append_new(ea, ev);
    }
    it->row = json_dumps(row, JSON_COMPACT);
    it->msgs = json_dumps(ma, JSON_COMPACT);
    it->evs = json_dumps(ea, JSON_COMPACT);
    json_decref(row);
    json_decref(ma);
    json_decref(ea);
    if (!it->row || !it->msgs || !it->evs) return -1;
    it->size = strlen(it->row) + strlen(it->msgs) + strlen(it->evs);
    return 0;
}

static void on_read(const redisReply *r, const char *err, void *priv) {
    struct item *it = priv;
    ar.reading--;
    if (wk.stopping) {
        item_free(it);
        ar.inflight--;
        return;
    }
    if (err || r->type != REDIS_REPLY_ARRAY || r->elements != 3) {
        kf_warn("archive: reading a conversation failed: %s",
                err ? err : r->type == REDIS_REPLY_ERROR ? r->str : "bad reply");
        finish(it, "release", "");
        pump(); /* the batch may have waited for this read */
        return;
    }
    if (build(it, r) < 0) { /* gone (trimmed already), or not closed: nothing to archive */
        kf_debug("archive: %s not archived: no such closed conversation", it->conv);
        finish(it, "done", "");
        pump();
        return;
    }
    if (ar.tail) ar.tail->next = it;
    else ar.head = it;
    ar.tail = it;
    pump();
}

/* ---- the database ---- */

/* $1 the conversations' rows, $2 their messages, $3 their record entries: jsonb arrays. A batch
 * never holds a conversation twice (it is claimed once at a time), which DO UPDATE requires. */
static const char upsert_sql[] =
    "WITH c AS (INSERT INTO kefu_conversations SELECT * FROM "
    "jsonb_populate_recordset(NULL::kefu_conversations, $1::jsonb) ON CONFLICT (conv) DO UPDATE SET "
    "ticket = EXCLUDED.ticket, channel = EXCLUDED.channel, grp = EXCLUDED.grp, "
    "topic = EXCLUDED.topic, category = EXCLUDED.category, priority = EXCLUDED.priority, "
    "level = EXCLUDED.level, customer = EXCLUDED.customer, "
    "customer_name = EXCLUDED.customer_name, agent = EXCLUDED.agent, "
    "agent_name = EXCLUDED.agent_name, resolution = EXCLUDED.resolution, "
    "closed_by = EXCLUDED.closed_by, created_at = EXCLUDED.created_at, "
    "assigned_at = EXCLUDED.assigned_at, first_response_at = EXCLUDED.first_response_at, "
    "closed_at = EXCLUDED.closed_at, rating = EXCLUDED.rating, "
    "rating_comment = EXCLUDED.rating_comment, rated_at = EXCLUDED.rated_at, "
    "qa_score = EXCLUDED.qa_score, qa_notes = EXCLUDED.qa_notes, qa_tags = EXCLUDED.qa_tags, "
    "qa_by = EXCLUDED.qa_by, qa_at = EXCLUDED.qa_at, meta = EXCLUDED.meta, "
    "archived_at = EXCLUDED.archived_at, archived_by = EXCLUDED.archived_by RETURNING 1), "
    "m AS (INSERT INTO kefu_messages SELECT * FROM "
    "jsonb_populate_recordset(NULL::kefu_messages, $2::jsonb) ON CONFLICT DO NOTHING RETURNING 1), "
    "e AS (INSERT INTO kefu_events SELECT * FROM "
    "jsonb_populate_recordset(NULL::kefu_events, $3::jsonb) ON CONFLICT DO NOTHING RETURNING 1) "
    "SELECT (SELECT count(*) FROM c), (SELECT count(*) FROM m), (SELECT count(*) FROM e)";

static void release_list(struct item *it) {
    while (it) {
        struct item *n = it->next;
        finish(it, "release", "");
        it = n;
    }
}

/* Everything read and not written goes back to the pending set as it was (its lease dropped). */
static void release_all(void) {
    struct item *it = ar.head;
    ar.head = ar.tail = NULL;
    release_list(it);
}

static void drop_conn(void) {
    if (ar.rd_ev) event_free(ar.rd_ev);
    if (ar.wr_ev) event_free(ar.wr_ev);
    ar.rd_ev = ar.wr_ev = NULL;
    event_del(ar.timeout_ev);
    if (ar.last) PQclear(ar.last);
    ar.last = NULL;
    if (ar.pg) PQfinish(ar.pg);
    ar.pg = NULL;
}

static void db_fail(const char *what) {
    char msg[256] = "";
    if (ar.pg) snprintf(msg, sizeof(msg), "%s", PQerrorMessage(ar.pg));
    for (char *p = msg; *p; p++)
        if (*p == '\n') *p = ' ';
    if (ar.state == DB_READY || ar.state == DB_SCHEMA || !ar.warned) {
        kf_warn("archive database %s (%s): %s; retrying with backoff",
                ar.state == DB_READY || ar.state == DB_SCHEMA ? "lost" : "unreachable", what, msg);
        ar.warned = 1;
    } else {
        kf_debug("archive database: %s: %s", what, msg);
    }
    if (ar.cur) {
        ar.failures += (uint64_t)ar.ncur;
        release_list(ar.cur);
        ar.cur = NULL;
        ar.ncur = 0;
    }
    ar.busy = 0;
    release_all();
    drop_conn();
    ar.state = DB_DOWN;
    if (wk.stopping) return;
    struct timeval tv = {(time_t)(ar.backoff_ms / 1000), (suseconds_t)((ar.backoff_ms % 1000) * 1000)};
    event_add(ar.retry_ev, &tv);
    ar.backoff_ms = ar.backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : ar.backoff_ms * 2;
}

/* A statement ended (every result read): what it was for decides what follows. */
static void statement_done(PGresult *last, int ok) {
    event_del(ar.timeout_ev);
    ar.busy = 0;
    struct item *it = ar.cur;
    int n = ar.ncur;
    ar.cur = NULL;
    ar.ncur = 0;
    if (ar.state == DB_SCHEMA || ar.state == DB_PREPARE) {
        if (!ok) {
            kf_error("archive: the %s failed: %s",
                     ar.state == DB_SCHEMA ? "schema could not be applied" : "statement's prepare",
                     last ? PQresultErrorMessage(last) : "no result");
            db_fail(ar.state == DB_SCHEMA ? "schema" : "prepare");
            return;
        }
        if (ar.state == DB_SCHEMA) {
            /* prepared once per connection: a new connection (after a loss) prepares again */
            ar.state = DB_PREPARE;
            if (!PQsendPrepare(ar.pg, STMT, upsert_sql, 3, NULL)) {
                db_fail("send prepare");
                return;
            }
            sent();
            return;
        }
        ar.state = DB_READY;
        ar.backoff_ms = BACKOFF_MIN_MS;
        ar.warned = 0;
        kf_info("archive database connected, schema in place");
        pump();
        return;
    }
    if (!it) return;
    if (ok) {
        /* committed: only now does Redis hear of it */
        while (it) {
            struct item *next = it->next;
            it->next = NULL;
            ar.archived++;
            mark(it);
            it = next;
        }
    } else if (n > 1) {
        /* the server refused the batch, most likely for one conversation's row; nothing of it
         * was written. Each is written again on its own, ahead of the rest, so the faulty one
         * is found and the others go in. */
        kf_warn("archive: a batch of %d conversations refused (%s); writing them one by one", n,
                last && PQresultErrorField(last, PG_DIAG_MESSAGE_PRIMARY)
                    ? PQresultErrorField(last, PG_DIAG_MESSAGE_PRIMARY) : "no result");
        struct item *t = it;
        for (;; t = t->next) {
            t->alone = 1;
            if (!t->next) break;
        }
        t->next = ar.head;
        if (!ar.head) ar.tail = t;
        ar.head = it;
    } else {
        /* the server refused this conversation's rows: not the connection's fault */
        ar.failures++;
        char *e = last ? PQresultErrorMessage(last) : "no result";
        for (char *p = e; *p; p++)
            if (*p == '\n') *p = ' ';
        kf_error("archive: conversation %s not archived, tried again in %d s: %s", it->conv,
                 HOLD_MS / 1000, e);
        char until[24];
        snprintf(until, sizeof(until), "%lld", (long long)wk_now_ms() + HOLD_MS);
        finish(it, "hold", until);
    }
    pump();
}

static void on_readable(evutil_socket_t fd, short what, void *arg) {
    (void)fd, (void)what, (void)arg;
    if (!PQconsumeInput(ar.pg)) {
        db_fail("read");
        return;
    }
    PGnotify *n;
    while ((n = PQnotifies(ar.pg))) PQfreemem(n);
    if (!ar.busy) {
        if (PQstatus(ar.pg) == CONNECTION_BAD) db_fail("closed");
        return;
    }
    /* a statement may have several results (the schema: one per statement); the first failure
     * is kept, else the last one; NULL ends them */
    while (!PQisBusy(ar.pg)) {
        PGresult *res = PQgetResult(ar.pg);
        if (!res) {
            PGresult *last = ar.last;
            int ok = ar.ok && last;
            ar.last = NULL;
            statement_done(last, ok);
            if (last) PQclear(last);
            return;
        }
        ExecStatusType st = PQresultStatus(res);
        int good = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
        if (ar.ok || !ar.last) {
            if (ar.last) PQclear(ar.last);
            ar.last = res;
        } else {
            PQclear(res);
        }
        if (!good) ar.ok = 0;
    }
    if (PQstatus(ar.pg) == CONNECTION_BAD) db_fail("closed");
}

static void on_writable(evutil_socket_t fd, short what, void *arg) {
    (void)fd, (void)what, (void)arg;
    int f = PQflush(ar.pg);
    if (f < 0) db_fail("write");
    else if (f > 0) event_add(ar.wr_ev, NULL);
}

static void on_timeout(evutil_socket_t fd, short what, void *arg) {
    (void)fd, (void)what, (void)arg;
    db_fail("no answer within 30 s");
}

/* After a statement was sent: write out what libpq buffered, then wait for the answer. */
static void sent(void) {
    ar.busy = 1;
    ar.ok = 1;
    struct timeval tv = {QUERY_TIMEOUT_MS / 1000, 0};
    event_add(ar.timeout_ev, &tv);
    on_writable(-1, 0, NULL);
}

/* Appends the elements of the JSON array a ("[...]") to b, comma-separated. */
static void add_elems(struct evbuffer *b, const char *a) {
    size_t n = strlen(a);
    if (n <= 2) return; /* [] */
    if (evbuffer_get_length(b) > 1) evbuffer_add(b, ",", 1);
    evbuffer_add(b, a + 1, n - 2);
}

/* Sends the next batch: the waiting items, up to BATCH_MAX or BATCH_BYTES, or one item alone
 * whose batch was refused. */
static void pump(void) {
    if (ar.state != DB_READY || ar.busy || !ar.head || wk.stopping) return;
    if (!ar.head->alone && (ar.reading > 0 || ar.claiming > 0)) {
        /* more of this round are being read: wait for them, or for a full batch */
        int n = 0;
        size_t bytes = 0;
        for (struct item *it = ar.head;
             it && !it->alone && n < BATCH_MAX && bytes < BATCH_BYTES; it = it->next) {
            n++;
            bytes += it->size;
        }
        if (n < BATCH_MAX && bytes < BATCH_BYTES) return;
    }
    struct evbuffer *b[3];
    for (int i = 0; i < 3; i++) {
        b[i] = evbuffer_new();
        evbuffer_add(b[i], "[", 1);
    }
    struct item *first = ar.head, *last = NULL;
    size_t bytes = 0;
    int n = 0;
    while (ar.head && n < BATCH_MAX) {
        struct item *it = ar.head;
        size_t sz = it->size;
        if (n > 0 && (it->alone || first->alone || bytes + sz > BATCH_BYTES)) break;
        if (evbuffer_get_length(b[0]) > 1) evbuffer_add(b[0], ",", 1);
        evbuffer_add(b[0], it->row, strlen(it->row));
        add_elems(b[1], it->msgs);
        add_elems(b[2], it->evs);
        bytes += sz;
        n++;
        last = it;
        ar.head = it->next;
    }
    if (!ar.head) ar.tail = NULL;
    last->next = NULL;
    ar.cur = first;
    ar.ncur = n;
    const char *params[3];
    for (int i = 0; i < 3; i++) {
        evbuffer_add(b[i], "]", 2); /* with the NUL */
        params[i] = (const char *)evbuffer_pullup(b[i], -1);
    }
    int rc = PQsendQueryPrepared(ar.pg, STMT, 3, params, NULL, NULL, 0);
    for (int i = 0; i < 3; i++) evbuffer_free(b[i]);
    if (!rc) {
        db_fail("send");
        return;
    }
    sent();
}

static void wait_connect(PostgresPollingStatusType ps);

static void on_connect_io(evutil_socket_t fd, short what, void *arg) {
    (void)fd, (void)arg;
    if (what & EV_TIMEOUT) {
        db_fail("connect timed out");
        return;
    }
    wait_connect(PQconnectPoll(ar.pg));
}

static void wait_connect(PostgresPollingStatusType ps) {
    if (ar.rd_ev) event_free(ar.rd_ev);
    ar.rd_ev = NULL;
    if (ps == PGRES_POLLING_FAILED) {
        db_fail("connect");
        return;
    }
    int fd = PQsocket(ar.pg);
    if (ps == PGRES_POLLING_OK) {
        if (PQsetnonblocking(ar.pg, 1) != 0) {
            db_fail("nonblocking");
            return;
        }
        ar.rd_ev = event_new(wk.base, fd, EV_READ | EV_PERSIST, on_readable, NULL);
        ar.wr_ev = event_new(wk.base, fd, EV_WRITE, on_writable, NULL);
        event_add(ar.rd_ev, NULL);
        ar.state = DB_SCHEMA;
        /* two workers starting together: CREATE ... IF NOT EXISTS may race, so they take
         * turns (the lock ends with the statement's implicit transaction) */
        struct evbuffer *q = evbuffer_new();
        evbuffer_add_printf(q, "SELECT pg_advisory_xact_lock(7363301);\n%s", wk_archive_schema);
        evbuffer_add(q, "", 1);
        int rc = PQsendQuery(ar.pg, (const char *)evbuffer_pullup(q, -1));
        evbuffer_free(q);
        if (!rc) {
            db_fail("send schema");
            return;
        }
        sent();
        return;
    }
    ar.rd_ev = event_new(wk.base, fd, ps == PGRES_POLLING_READING ? EV_READ : EV_WRITE,
                         on_connect_io, NULL);
    struct timeval tv = {QUERY_TIMEOUT_MS / 1000, 0};
    event_add(ar.rd_ev, &tv);
}

static void connect_db(void) {
    if (wk.stopping) return;
    ar.pg = PQconnectStart(wk.opt.archive_db);
    ar.state = DB_CONNECTING;
    if (!ar.pg || PQstatus(ar.pg) == CONNECTION_BAD) {
        db_fail("connect");
        return;
    }
    wait_connect(PGRES_POLLING_WRITING);
}

static void on_retry(evutil_socket_t fd, short what, void *arg) {
    (void)fd, (void)what, (void)arg;
    connect_db();
}

/* ---- claiming ---- */

static void claimed(const redisReply *r, const char *err, int p) {
    if (err || r->type != REDIS_REPLY_ARRAY || r->elements < 2) {
        if (!err && r->type == REDIS_REPLY_ERROR) kf_error("archive_claim: %s", r->str);
        return;
    }
    ar.pending[p] = r->element[0]->type == REDIS_REPLY_INTEGER ? r->element[0]->integer : 0;
    ar.oldest[p] = atoll(s_of(r->element[1]));
    size_t n = (r->elements - 2) / 2;
    long long share = (wk.opt.archive_batch + PARTS - 1) / PARTS;
    if ((long long)n >= share) ar.full = 1;
    for (size_t i = 0; i < n; i++) {
        struct item *it = kf_calloc(1, sizeof(*it));
        snprintf(it->conv, sizeof(it->conv), "%s", s_of(r->element[2 + 2 * i]));
        snprintf(it->due, sizeof(it->due), "%s", s_of(r->element[3 + 2 * i]));
        it->part = p;
        ar.inflight++;
        ar.reading++;
        char meta[KF_KEY_MAX], msgs[KF_KEY_MAX], log[KF_KEY_MAX];
        kf_key_conv_meta(meta, it->conv);
        kf_key_conv_msgs(msgs, it->conv);
        kf_key_conv_log(log, it->conv);
        const char *argv[] = {meta, msgs, log};
        kf_redis_script(wk.redis, kf_redis_slot(wk.redis, meta), "archive_read", on_read, it, 3,
                        3, argv, NULL);
    }
}

static void on_claimed(const redisReply *r, const char *err, void *priv) {
    ar.claiming--;
    if (wk.stopping) return;
    claimed(r, err, (int)(intptr_t)priv);
    pump(); /* the batch may have waited for the last claim's answer */
}

static void on_poll(evutil_socket_t fd, short what, void *arg) {
    (void)fd, (void)what, (void)arg;
    if (ar.claiming || wk.stopping) return;
    /* a new batch only when the previous one is done and the database is there: while it is
     * down only the counts are read (the metrics) */
    long long share = (wk.opt.archive_batch + PARTS - 1) / PARTS;
    int take = ar.state == DB_READY && ar.inflight == 0 && !wk.draining;
    char now[24], max[24], lease[24];
    snprintf(now, sizeof(now), "%lld", (long long)wk_now_ms());
    snprintf(max, sizeof(max), "%lld", take ? share : 0);
    snprintf(lease, sizeof(lease), "%lld", wk.opt.archive_lease_ms);
    for (int p = 0; p < PARTS; p++) {
        char pk[KF_KEY_MAX], lk[KF_KEY_MAX];
        key_pending(pk, p);
        key_leases(lk, p);
        unsigned slot = kf_redis_slot(wk.redis, pk);
        if (!kf_redis_is_up(wk.redis, slot)) continue;
        const char *argv[] = {pk, lk, now, max, lease};
        ar.claiming++;
        kf_redis_script(wk.redis, slot, "archive_claim", on_claimed, (void *)(intptr_t)p, 2, 5,
                        argv, NULL);
    }
}

/* ---- start, stop, metrics ---- */

int wk_archive_check(const wk_options *o, char *err, size_t errlen) {
    if (!*o->archive_db) return 0;
    char *perr = NULL;
    PQconninfoOption *opts = PQconninfoParse(o->archive_db, &perr);
    if (!opts) {
        snprintf(err, errlen, "archive_db: %s", perr ? perr : "not a connection string");
        for (char *p = err; *p; p++)
            if (*p == '\n') *p = ' ';
        if (perr) PQfreemem(perr);
        return -1;
    }
    PQconninfoFree(opts);
    return 0;
}

void wk_archive_start(void) {
    if (!*wk.opt.archive_db) {
        ar.state = DB_OFF;
        return;
    }
    ar.backoff_ms = BACKOFF_MIN_MS;
    ar.retry_ev = evtimer_new(wk.base, on_retry, NULL);
    ar.timeout_ev = evtimer_new(wk.base, on_timeout, NULL);
    ar.poll_ev = wk_timer_every(POLL_MS, on_poll, NULL);
    ar.state = DB_DOWN;
    connect_db();
}

void wk_archive_stop(void) {
    if (ar.state == DB_OFF) return;
    struct item *it = ar.head;
    while (it) {
        struct item *n = it->next;
        item_free(it);
        it = n;
    }
    ar.head = ar.tail = NULL;
    for (it = ar.cur; it;) {
        struct item *n = it->next;
        item_free(it);
        it = n;
    }
    ar.cur = NULL;
    drop_conn();
    event_free(ar.retry_ev);
    event_free(ar.timeout_ev);
    event_free(ar.poll_ev);
}

void wk_archive_render(struct evbuffer *o) {
    long long pending = 0, oldest = 0;
    for (int p = 0; p < PARTS; p++) {
        pending += ar.pending[p];
        if (ar.oldest[p] > 0 && (!oldest || ar.oldest[p] < oldest)) oldest = ar.oldest[p];
    }
    double lag = oldest > 0 ? (double)(wk_now_ms() - oldest) / 1000.0 : 0;
    if (lag < 0) lag = 0;
    evbuffer_add_printf(
        o,
        "# HELP kefu_worker_archive_db_up The archive database is connected and its schema in place (1) or not (0; also without archive_db).\n"
        "# TYPE kefu_worker_archive_db_up gauge\nkefu_worker_archive_db_up %d\n"
        "# HELP kefu_worker_archive_archived_total Conversations written to the archive database by this worker (each pass counts: a rating or the pass before the trim writes again).\n"
        "# TYPE kefu_worker_archive_archived_total counter\nkefu_worker_archive_archived_total %llu\n"
        "# HELP kefu_worker_archive_failures_total Conversations whose archive write failed (the database lost while writing them, or the conversation refused on its own).\n"
        "# TYPE kefu_worker_archive_failures_total counter\nkefu_worker_archive_failures_total %llu\n"
        "# HELP kefu_worker_archive_trimmed_total Archived conversations whose Redis keys this worker deleted (archive_trim_s).\n"
        "# TYPE kefu_worker_archive_trimmed_total counter\nkefu_worker_archive_trimmed_total %llu\n"
        "# HELP kefu_worker_archive_pending Conversations due for archiving and not archived yet (all workers; as of this worker's last poll).\n"
        "# TYPE kefu_worker_archive_pending gauge\nkefu_worker_archive_pending %lld\n"
        "# HELP kefu_worker_archive_lag_seconds How long ago the oldest of them became due (0: none).\n"
        "# TYPE kefu_worker_archive_lag_seconds gauge\nkefu_worker_archive_lag_seconds %.3f\n",
        ar.state == DB_READY, (unsigned long long)ar.archived, (unsigned long long)ar.failures,
        (unsigned long long)ar.trimmed, pending, lag);
}
