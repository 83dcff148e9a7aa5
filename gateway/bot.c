/* Bots in the gateway: runs the rule set of `bots_dir` (kefu/bot.h, one lua_State per process)
 * on conversation events. Per conversation, events run one at a time on this node: read the
 * meta and the bot state, run the engine, then apply everything atomically (bot_apply.lua,
 * which also refuses an event whose state another node changed first: it is then re-run).
 * Replies are stored in the conversation stream and pushed like chat messages; a handoff puts
 * the conversation in its group's queue; a sensitive flag alerts supervisors. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <event2/event.h>

#include "agent.h"
#include "bot.h"
#include "kefu/alloc.h"
#include "kefu/bot.h"
#include "kefu/keys.h"
#include "kefu/log.h"
#include "kefu/redis.h"
#include "kefu/service.h"
#include "request.h"

#include "kefu/hash.h" /* uthash, with kefu's allocator and hash */

#define MAX_JOBS 16         /* queued events per conversation; more are dropped (counted) */
#define MAX_TRIES 3         /* re-runs after another node changed the state first */
#define NOTBOT_SLOTS 65536  /* direct-mapped cache of conversations known not to be the bot's:
                               64-bit hashes of their ids (a false match is about 2^-64 per
                               lookup) */
#define STAFF_SCAN_MS 2000  /* local supervisors registered for alerts this often */


enum { F_STATE, F_CUSTOMER, F_CUSTOMER_NAME, F_CHANNEL, F_TOPIC, F_TICKET, F_LEVEL, F_GROUP,
       F_PRIORITY, F_CATEGORY, F_TAGS, NFIELDS };
static const char *const meta_fields[NFIELDS] = {"state", "customer", "customer_name", "channel",
                                                 "topic", "ticket", "level", "group", "priority",
                                                 "category", "tags"};

typedef struct bot_job {
    struct bot_job *next;
    kf_bot_event_type type;
    char *text;
    long long waited;
} bot_job;

typedef struct bot_conv {
    UT_hash_handle hh;      /* in B.convs, by id */
    char id[CONV_ID_MAX + 1];
    bot_job *head, *tail;
    int njobs;
    int busy;               /* a job is being read, run or applied */
    int tries;
    int pending;            /* reads outstanding */
    const char *err;
    char *f[NFIELDS];       /* meta as read */
    long long version;
    char *state;
    size_t state_len;
    /* results of the run, for after the apply */
    kf_bot_result res;
    char tags[512];
} bot_conv;

/* A handed-off conversation whose queue_wait thresholds are still to come. */
typedef struct wait_ent {
    struct wait_ent *next;
    char id[CONV_ID_MAX + 1];
    int64_t queued_ms;
    long long fired; /* the largest threshold fired, seconds */
} wait_ent;

static struct {
    int enabled;
    int stopping;
    kf_bot *bot;            /* NULL when the rules did not load */
    struct event *tick_ev;
    bot_conv *convs;        /* conversations with bot events in flight (uthash, by id) */
    wait_ent *waits;
    uint64_t *notbot;
    char watch_sig[64];
    int64_t last_scan_ms, last_trim_ms;
} B;

/* The actor written as `by` into lifecycle events the bot causes. */
static gw_conn bot_actor = {.ident = {.sub = (char *)"bot", .name = (char *)"bot"}};

/* ---- the rule set ---- */

static void update_gauges(void) {
    GW_M->bot_rules_loaded = B.bot != NULL;
    if (B.bot) {
        kf_bot_stats st;
        kf_bot_get_stats(B.bot, &st);
        GW_M->bot_memory_bytes = (int64_t)st.memory_bytes;
    }
}

/* Loads bots_dir into a new engine; on success replaces the running one. */
static int rules_load(const char *why) {
    kf_bot_config cfg = {.instructions = gw->opt.bot_instruction_budget,
                         .memory_bytes = (size_t)gw->opt.bot_memory_kb << 10,
                         .timezone = gw->opt.bot_timezone};
    char err[1024];
    kf_bot *b = kf_bot_load(gw->opt.bots_dir, &cfg, err, sizeof(err));
    if (!b) {
        GW_M->bot_reload_failures++;
        if (B.bot)
            kf_error("bot rules in %s not %s: %s; the previous rules keep running", gw->opt.bots_dir,
                     why, err);
        else
            kf_error("bot rules in %s not %s: %s; conversations go to humans until a reload "
                     "succeeds", gw->opt.bots_dir, why, err);
        update_gauges();
        return -1;
    }
    kf_bot_free(B.bot);
    B.bot = b;
    GW_M->bot_reloads++;
    kf_info("bot rules %s from %s: %d files, bot \"%s\"", why, gw->opt.bots_dir, kf_bot_nfiles(b),
            kf_bot_name(b));
    update_gauges();
    return 0;
}

/* A cheap signature of the rule directory: names, sizes and modification times. */
static void dir_signature(char out[64]) {
    uint64_t h = 0;
    DIR *d = opendir(gw->opt.bots_dir);
    if (d) {
        struct dirent *de;
        while ((de = readdir(d))) {
            size_t l = strlen(de->d_name);
            if (l < 5 || strcmp(de->d_name + l - 4, ".lua") != 0) continue;
            char path[4096];
            struct stat st;
            snprintf(path, sizeof(path), "%s/%s", gw->opt.bots_dir, de->d_name);
            if (stat(path, &st) < 0) continue;
            /* order-independent: sum of per-file hashes */
            uint64_t fh = kf_hash_str(de->d_name) ^ ((uint64_t)st.st_size * 0x9E3779B97F4A7C15ull) ^
                          ((uint64_t)st.st_mtim.tv_sec * 1000000007ull + (uint64_t)st.st_mtim.tv_nsec);
            h += fh * 0xff51afd7ed558ccdull;
        }
        closedir(d);
    }
    snprintf(out, 64, "%016llx", (unsigned long long)h);
}

void gw_bot_reload(void) {
    if (!B.enabled) return;
    rules_load("reloaded");
    dir_signature(B.watch_sig);
}

/* ---- conversations with events in flight ---- */

static void conv_clear_read(bot_conv *bc) {
    for (int i = 0; i < NFIELDS; i++) {
        kf_free(bc->f[i]);
        bc->f[i] = NULL;
    }
    kf_free(bc->state);
    bc->state = NULL;
    bc->state_len = 0;
    bc->version = 0;
    kf_bot_result_free(&bc->res);
}

static void job_free(bot_job *j) {
    kf_free(j->text);
    kf_free(j);
}

static void conv_free(bot_conv *bc) {
    conv_clear_read(bc);
    while (bc->head) {
        bot_job *j = bc->head;
        bc->head = j->next;
        job_free(j);
    }
    kf_free(bc);
}

/* A state only moves from "bot" to "waiting"/"assigned"/"closed", never back, so a conversation
 * once seen elsewhere never needs its state read again for a customer message. */
static int notbot_known(const char *id) {
    uint64_t h = kf_hash_str(id) | 1; /* 0 marks an empty slot */
    return B.notbot && B.notbot[(h >> 1) % NOTBOT_SLOTS] == h;
}

static void notbot_add(const char *id) {
    if (!B.notbot) B.notbot = kf_calloc(NOTBOT_SLOTS, sizeof(*B.notbot));
    uint64_t h = kf_hash_str(id) | 1;
    B.notbot[(h >> 1) % NOTBOT_SLOTS] = h;
}

static void job_start(bot_conv *bc);

/* The current job is over: start the next one, or forget the conversation. */
static void job_done(bot_conv *bc) {
    bot_job *j = bc->head;
    bc->head = j->next;
    if (!bc->head) bc->tail = NULL;
    bc->njobs--;
    job_free(j);
    conv_clear_read(bc);
    bc->busy = 0;
    bc->tries = 0;
    if (bc->head && !B.stopping) {
        job_start(bc);
        return;
    }
    HASH_DEL(B.convs, bc);
    conv_free(bc);
}

static void submit(const char *conv, kf_bot_event_type type, const char *text, long long waited) {
    if (B.stopping) return;
    bot_conv *bc;
    HASH_FIND_STR(B.convs, conv, bc);
    if (!bc) {
        bc = kf_calloc(1, sizeof(*bc));
        snprintf(bc->id, sizeof(bc->id), "%s", conv);
        HASH_ADD_STR(B.convs, id, bc);
    }
    if (bc->njobs >= MAX_JOBS) {
        GW_M->bot_dropped++;
        kf_warn("bot: conv %s: %d events already waiting for the bot; %s dropped", conv, MAX_JOBS,
                kf_bot_event_name(type));
        return;
    }
    bot_job *j = kf_calloc(1, sizeof(*j));
    j->type = type;
    j->text = text ? kf_strdup(text) : NULL;
    j->waited = waited;
    if (bc->tail) bc->tail->next = j;
    else bc->head = j;
    bc->tail = j;
    bc->njobs++;
    if (!bc->busy) job_start(bc);
}

/* ---- hooks on the message path (request.h): what starts the events ---- */

/* A conversation was opened in state "bot" (its meta is stored): the "opened" event. */
static void on_conv_opened(const char *conv) { submit(conv, KF_BOT_OPENED, NULL, 0); }

/* A message was stored: the bot answers the customer while it has the conversation. */
static void on_message_stored(const gw_conn *from, const char *conv, const char *text,
                              size_t len) {
    (void)len; /* text is NUL-terminated and holds no NUL (msg.send refuses them) */
    if (from->ident.role == KF_ROLE_CUSTOMER && !notbot_known(conv))
        submit(conv, KF_BOT_MESSAGE, text, 0);
}

static const gw_hooks bot_hooks = {
    .new_state = "bot", /* queued at the handoff (on_applied) */
    .conv_opened = on_conv_opened,
    .message_stored = on_message_stored,
};

void gw_bot_waiting_event(const char *conv, int no_agent, long long waited_s) {
    if (!B.enabled || !B.bot) return;
    kf_bot_event_type t = no_agent ? KF_BOT_NO_AGENT : KF_BOT_QUEUE_WAIT;
    if (kf_bot_handles(B.bot, t)) submit(conv, t, NULL, waited_s);
}

/* ---- step 1: read the meta and the bot state (pipelined on the conversation's slot) ---- */

static void job_run(bot_conv *bc);

static void on_read(bot_conv *bc, const char *err) {
    if (err && !bc->err) bc->err = err;
    if (--bc->pending > 0) return;
    if (bc->err || B.stopping) {
        if (!B.stopping) {
            GW_M->bot_dropped++;
            kf_warn("bot: conv %s: reading its state failed (%s); %s event dropped", bc->id, bc->err,
                    kf_bot_event_name(bc->head->type));
        }
        job_done(bc);
        return;
    }
    job_run(bc);
}

static void on_meta(const redisReply *r, const char *err, void *priv) {
    bot_conv *bc = priv;
    if (!err && (r->type != REDIS_REPLY_ARRAY || r->elements != NFIELDS)) err = "bad reply";
    if (!err)
        for (int i = 0; i < NFIELDS; i++)
            if (r->element[i]->type == REDIS_REPLY_STRING) bc->f[i] = kf_strdup(r->element[i]->str);
    on_read(bc, err);
}

static void on_state(const redisReply *r, const char *err, void *priv) {
    bot_conv *bc = priv;
    if (!err && (r->type != REDIS_REPLY_ARRAY || r->elements != 2)) err = "bad reply";
    if (!err) {
        if (r->element[0]->type == REDIS_REPLY_STRING) bc->version = atoll(r->element[0]->str);
        const redisReply *s = r->element[1];
        if (s->type == REDIS_REPLY_STRING && s->len) {
            bc->state = kf_malloc(s->len);
            memcpy(bc->state, s->str, s->len);
            bc->state_len = s->len;
        }
    }
    on_read(bc, err);
}

static void job_start(bot_conv *bc) {
    bc->busy = 1;
    bc->pending = 2;
    bc->err = NULL;
    conv_clear_read(bc);
    char meta[KF_KEY_MAX], botk[KF_KEY_MAX];
    kf_key_conv_meta(meta, bc->id);
    kf_key_conv_bot(botk, bc->id);
    unsigned slot = kf_redis_slot(gw->redis, meta);
    const char *argv[2 + NFIELDS] = {"HMGET", meta};
    for (int i = 0; i < NFIELDS; i++) argv[2 + i] = meta_fields[i];
    kf_redis_argv(gw->redis, slot, on_meta, bc, 2 + NFIELDS, argv, NULL);
    kf_redis_cmd(gw->redis, slot, on_state, bc, "HMGET %s v s", botk);
}

/* ---- step 2: run the rules; step 3: apply atomically ---- */

static const char *fv(const bot_conv *bc, int i) { return bc->f[i] ? bc->f[i] : ""; }

static void on_applied(const redisReply *r, const char *err, void *priv);

static void count_failure(const bot_conv *bc, const kf_bot_result *res, kf_bot_event_type t) {
    GW_M->bot_errors++;
    if (res->failure == KF_BOT_FAIL_BUDGET) GW_M->bot_budget_kills++;
    if (res->failure == KF_BOT_FAIL_MEMORY) GW_M->bot_memory_kills++;
    static const char *const kinds[] = {"", "error", "instruction budget", "memory cap"};
    kf_warn("bot: conv %s: %s event: rule failed (%s): %s%s", bc->id, kf_bot_event_name(t),
            kinds[res->failure], res->error,
            t == KF_BOT_OPENED || t == KF_BOT_MESSAGE ? "; handing the conversation to a human" : "");
}

static void job_run(bot_conv *bc) {
    bot_job *j = bc->head;
    int needs_bot = j->type == KF_BOT_OPENED || j->type == KF_BOT_MESSAGE;
    const char *st = fv(bc, F_STATE);
    if (!bc->f[F_STATE] || strcmp(st, needs_bot ? "bot" : "waiting") != 0) {
        /* not (or no longer) the bot's: nothing to do */
        if (j->type == KF_BOT_MESSAGE && bc->f[F_STATE]) notbot_add(bc->id);
        job_done(bc);
        return;
    }
    kf_bot_event ev = {
        .type = j->type,
        .now_ms = gw_now_ms() + gw->opt.bot_clock_offset_s * 1000,
        .text = j->text,
        .text_len = j->text ? strlen(j->text) : 0,
        .waited_s = j->waited,
        .conv = {bc->id, fv(bc, F_TICKET), fv(bc, F_CHANNEL), fv(bc, F_TOPIC), fv(bc, F_CUSTOMER),
                 fv(bc, F_CUSTOMER_NAME), fv(bc, F_GROUP), fv(bc, F_PRIORITY), fv(bc, F_CATEGORY),
                 fv(bc, F_TAGS), atoi(fv(bc, F_LEVEL))},
        .state = bc->state,
        .state_len = bc->state_len,
    };
    kf_bot_result *res = &bc->res;
    kf_bot_result_free(res);
    if (B.bot) {
        GW_M->bot_runs++;
        if (kf_bot_run(B.bot, &ev, res) < 0) count_failure(bc, res, j->type);
        update_gauges();
    } else {
        /* the rules did not load: every conversation goes to a human */
        memset(res, 0, sizeof(*res));
        res->acts = kf_calloc(1, sizeof(kf_bot_action));
        if (needs_bot) {
            res->acts[0] = (kf_bot_action){KF_BOT_ACT_HANDOFF, kf_strdup("bot_unavailable"), NULL};
            res->nacts = 1;
        }
        res->state = kf_malloc(bc->state_len ? bc->state_len : 1);
        if (bc->state_len) memcpy(res->state, bc->state, bc->state_len);
        res->state_len = bc->state_len;
    }
    /* the script's arguments */
    size_t nacts = res->nacts, max = 16 + 3 * nacts;
    const char **argv = kf_calloc(max, sizeof(char *));
    size_t *lens = kf_calloc(max, sizeof(size_t));
    char meta[KF_KEY_MAX], msgs[KF_KEY_MAX], botk[KF_KEY_MAX], logk[KF_KEY_MAX], ver[24], maxlen[24],
        now[24], nrep[16], nfields[16];
    kf_key_conv_meta(meta, bc->id);
    kf_key_conv_msgs(msgs, bc->id);
    kf_key_conv_bot(botk, bc->id);
    kf_key_conv_log(logk, bc->id);
    snprintf(ver, sizeof(ver), "%lld", bc->version);
    snprintf(maxlen, sizeof(maxlen), "%lld", gw->opt.history_maxlen);
    snprintf(now, sizeof(now), "%lld", (long long)gw_now_ms());
    size_t n = 0;
#define ARG(s) (argv[n] = (s), lens[n] = strlen(argv[n]), n++)
    ARG(meta), ARG(msgs), ARG(botk), ARG(logk), ARG(ver);
    argv[n] = res->state ? res->state : "";
    lens[n++] = res->state_len;
    ARG(maxlen), ARG(B.bot ? kf_bot_name(B.bot) : "bot"), ARG(now), ARG(needs_bot ? "bot" : "waiting");
    size_t nr = 0;
    for (size_t i = 0; i < nacts; i++) nr += res->acts[i].kind == KF_BOT_ACT_REPLY;
    snprintf(nrep, sizeof(nrep), "%zu", nr);
    ARG(nrep);
    for (size_t i = 0; i < nacts; i++)
        if (res->acts[i].kind == KF_BOT_ACT_REPLY) ARG(res->acts[i].value);
    /* meta fields: the last value of each wins; tags accumulate onto the stored list */
    const char *set_cat = NULL, *set_prio = NULL, *set_group = NULL, *sensitive = NULL;
    const char *handoff = "", *finish = "";
    snprintf(bc->tags, sizeof(bc->tags), "%s", fv(bc, F_TAGS));
    int tags_changed = 0;
    for (size_t i = 0; i < nacts; i++) {
        const kf_bot_action *a = &res->acts[i];
        if (a->kind == KF_BOT_ACT_SET && a->key && a->value) {
            if (!strcmp(a->key, "category")) set_cat = a->value;
            else if (!strcmp(a->key, "priority")) set_prio = a->value;
            else if (!strcmp(a->key, "group")) set_group = a->value;
        } else if (a->kind == KF_BOT_ACT_TAG && a->value) {
            size_t l = strlen(bc->tags);
            if (l + strlen(a->value) + 2 < sizeof(bc->tags)) {
                snprintf(bc->tags + l, sizeof(bc->tags) - l, "%s%s", l ? "," : "", a->value);
                tags_changed = 1;
            }
        } else if (a->kind == KF_BOT_ACT_SENSITIVE) {
            sensitive = a->value ? a->value : "flagged by a rule";
        } else if (a->kind == KF_BOT_ACT_HANDOFF) {
            handoff = a->key && *a->key ? a->key : "bot handoff";
        } else if (a->kind == KF_BOT_ACT_FINISH) {
            finish = a->value && *a->value ? a->value : "resolved";
        }
    }
    size_t nf_at = n;
    ARG(nfields);
    size_t nf = 0;
    if (set_cat) ARG("category"), ARG(set_cat), nf++;
    if (set_prio) ARG("priority"), ARG(set_prio), nf++;
    if (set_group) ARG("group"), ARG(set_group), nf++;
    if (tags_changed) ARG("tags"), ARG(bc->tags), nf++;
    if (sensitive) ARG("sensitive"), ARG(sensitive), nf++;
    snprintf(nfields, sizeof(nfields), "%zu", nf);
    lens[nf_at] = strlen(nfields);
    ARG(handoff), ARG(finish);
#undef ARG
    kf_redis_script(gw->redis, kf_redis_slot(gw->redis, meta), "bot_apply", on_applied, bc, 4,
                    (int)n, argv, lens);
    kf_free(argv);
    kf_free(lens);
}

/* ---- step 4: what follows a stored event: pushes, queueing, alerts ---- */

struct alert_ctx {
    json_t *payload;
};

static void on_alert_targets(const redisReply *r, const char *err, void *priv) {
    struct alert_ctx *ac = priv;
    if (!err && r->type == REDIS_REPLY_ARRAY && r->elements) {
        const char *users[256];
        size_t n = 0;
        for (size_t i = 0; i < r->elements && n < 256; i++)
            if (r->element[i]->type == REDIS_REPLY_STRING) users[n++] = r->element[i]->str;
        GW_M->bot_alerts++;
        gw_route_push(ac->payload, users, n, NULL);
    } else {
        if (err) kf_warn("bot: supervisor lookup failed (%s); sensitive alert not sent", err);
        json_decref(ac->payload);
    }
    kf_free(ac);
}

/* bot_staff.lua on the staff domain of the conversation's group: its agents, and its copy of
 * the monitoring supervisors and alert recipients (every domain holds them all). */
static void staff_script(const char *mode, const char *group, kf_redis_cb *cb, void *priv) {
    char now[24], dom[KF_GROUP_MAX + 1];
    snprintf(now, sizeof(now), "%lld", (long long)gw_now_ms());
    const char *argv[] = {mode, now, group ? group : ""};
    kf_staff_script_in(gw->redis, gw_staff_domain(group, dom), "bot_staff", cb, priv, 3, argv);
}

static void on_agents(const redisReply *r, const char *err, void *priv) {
    char *conv = priv;
    if (!err && r->type == REDIS_REPLY_INTEGER && r->integer == 0) gw_bot_waiting_event(conv, 1, 0);
    kf_free(conv);
}

static void wait_track(const char *conv) {
    const long long *w;
    if (!B.bot || !kf_bot_queue_waits(B.bot, &w)) return;
    wait_ent *e = kf_calloc(1, sizeof(*e));
    snprintf(e->id, sizeof(e->id), "%s", conv);
    e->queued_ms = gw_now_ms();
    e->next = B.waits;
    B.waits = e;
}

static void wait_untrack(const char *conv) {
    for (wait_ent **pp = &B.waits; *pp; pp = &(*pp)->next) {
        if (!strcmp((*pp)->id, conv)) {
            wait_ent *e = *pp;
            *pp = e->next;
            kf_free(e);
            return;
        }
    }
}

static void push_state(bot_conv *bc, const char *state, const char *const *users, size_t n) {
    json_t *p = json_pack("{s:s, s:s, s:s}", "type", "conv.state", "conv", bc->id, "state", state);
    if (!strcmp(state, "waiting")) {
        json_object_set_new(p, "ticket", json_string(fv(bc, F_TICKET)));
    } else if (!strcmp(state, "closed")) {
        for (size_t i = 0; i < bc->res.nacts; i++)
            if (bc->res.acts[i].kind == KF_BOT_ACT_FINISH && bc->res.acts[i].value)
                json_object_set_new(p, "resolution", json_string(bc->res.acts[i].value));
        json_object_set_new(p, "closed_by", json_string("bot"));
    }
    gw_route_push(p, users, n, NULL);
}

static void on_applied(const redisReply *r, const char *err, void *priv) {
    bot_conv *bc = priv;
    bot_job *j = bc->head;
    if (B.stopping) {
        job_done(bc);
        return;
    }
    /* {'S', state, customer, agent, group, nreplies, prev, reply ids..., members...}; {'R'}: the
     * state changed under it; {'E', code, state}: the conversation moved on */
    kf_script_ans ans;
    char tag = kf_script_parse(r, err, 1, &ans);
    if (ans.kind == KF_SCRIPT_UNAVAILABLE || ans.kind == KF_SCRIPT_BROKEN) {
        GW_M->bot_dropped++;
        kf_warn("bot: conv %s: storing the %s event failed (%s)", bc->id, kf_bot_event_name(j->type),
                ans.detail ? ans.detail : "bad reply");
        job_done(bc);
        return;
    }
    if (tag == 'R') {
        /* another node's event changed the state first: run this one again on the new state */
        GW_M->bot_conflicts++;
        if (++bc->tries < MAX_TRIES) {
            int tries = bc->tries;
            bc->busy = 0;
            job_start(bc);
            bc->tries = tries;
        } else {
            GW_M->bot_dropped++;
            kf_warn("bot: conv %s: state kept changing; %s event dropped", bc->id, kf_bot_event_name(j->type));
            job_done(bc);
        }
        return;
    }
    if (ans.kind == KF_SCRIPT_REFUSED) {
        /* the conversation moved on meanwhile (accepted, closed): the event no longer applies */
        if (j->type != KF_BOT_MESSAGE && j->type != KF_BOT_OPENED) wait_untrack(bc->id);
        job_done(bc);
        return;
    }
    if (r->elements < 7 || !kf_script_parse(r, NULL, 5, &ans)) {
        job_done(bc);
        return;
    }
    const char *state = r->element[1]->str, *customer = r->element[2]->str,
               *agent = r->element[3]->str, *group = r->element[4]->str;
    size_t nr = (size_t)atoll(r->element[5]->str ? r->element[5]->str : "0");
    if (r->element[5]->type == REDIS_REPLY_INTEGER) nr = (size_t)r->element[5]->integer;
    const char *users[64];
    size_t nu = 0;
    if (*customer) users[nu++] = customer;
    if (*agent) users[nu++] = agent;
    for (size_t i = 7 + nr; i < r->elements && nu < 64; i++)
        if (r->element[i]->type == REDIS_REPLY_STRING) users[nu++] = r->element[i]->str;
    /* replies, in order, like any chat message */
    const char *name = B.bot ? kf_bot_name(B.bot) : "bot";
    size_t k = 0;
    const char *prev = r->element[6]->type == REDIS_REPLY_STRING ? r->element[6]->str : "";
    for (size_t i = 0; i < bc->res.nacts && k < nr && 7 + k < r->elements; i++) {
        if (bc->res.acts[i].kind != KF_BOT_ACT_REPLY) continue;
        const char *id = r->element[7 + k]->str;
        char cid[48];
        snprintf(cid, sizeof(cid), "bot-%lld-%zu", bc->version + 1, k + 1);
        json_t *push = json_pack("{s:s, s:s, s:s, s:{s:s, s:s, s:s}, s:s, s:I, s:s}", "type", "msg",
                                 "conv", bc->id, "id", id, "from", "id", "bot", "role", "bot", "name",
                                 name, "text", bc->res.acts[i].value, "ts", (json_int_t)atoll(id),
                                 "cid", cid);
        json_object_set_new(push, "prev", json_string(prev));
        prev = id;
        gw_route_push(push, users, nu, NULL);
        GW_M->bot_replies++;
        k++;
    }
    const char *before = fv(bc, F_STATE);
    int requeue = 0;
    for (size_t i = 0; i < bc->res.nacts; i++) {
        const kf_bot_action *a = &bc->res.acts[i];
        if (a->kind == KF_BOT_ACT_SENSITIVE) {
            gw_lifecycle("flagged", bc->id, &bot_actor, "reason", a->value ? a->value : "", NULL, NULL);
            struct alert_ctx *ac = kf_malloc(sizeof(*ac));
            const char *prio = fv(bc, F_PRIORITY);
            for (size_t m = 0; m < bc->res.nacts; m++)
                if (bc->res.acts[m].kind == KF_BOT_ACT_SET && !strcmp(bc->res.acts[m].key, "priority"))
                    prio = bc->res.acts[m].value;
            ac->payload = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "type", "alert",
                                    "kind", "sensitive", "conv", bc->id, "reason",
                                    a->value ? a->value : "", "ticket", fv(bc, F_TICKET), "group",
                                    group, "priority", *prio ? prio : "medium", "customer", customer);
            staff_script("sups", group, on_alert_targets, ac);
        }
        if (a->kind == KF_BOT_ACT_SET && a->key && (!strcmp(a->key, "priority") || !strcmp(a->key, "group")))
            requeue = 1;
    }
    if (!strcmp(before, "bot") && !strcmp(state, "waiting")) {
        /* handoff: into the group's queue (gw_conv_enqueue tells the worker) */
        GW_M->bot_handoffs++;
        gw_conv_enqueue(bc->id, group, NULL, NULL);
        push_state(bc, "waiting", users, nu);
        wait_track(bc->id);
        notbot_add(bc->id);
        if (B.bot && kf_bot_handles(B.bot, KF_BOT_NO_AGENT))
            staff_script("agents", group, on_agents, kf_strdup(bc->id));
    } else if (!strcmp(before, "waiting") && !strcmp(state, "waiting") && requeue) {
        /* a waiting conversation changed priority or group: its queue place follows */
        if (strcmp(fv(bc, F_GROUP), group) != 0 && bc->f[F_GROUP]) {
            char q[KF_KEY_MAX];
            kf_key_queue(q, fv(bc, F_GROUP));
            kf_redis_cmd_key(gw->redis, q, NULL, NULL, "ZREM %s %s", q, bc->id);
        }
        gw_conv_enqueue(bc->id, group, NULL, NULL);
    }
    if (strcmp(before, "closed") != 0 && !strcmp(state, "closed")) {
        GW_M->bot_finishes++;
        char key[KF_KEY_MAX];
        if (!strcmp(before, "waiting")) {
            kf_key_queue(key, fv(bc, F_GROUP));
            kf_redis_cmd_key(gw->redis, key, NULL, NULL, "ZREM %s %s", key, bc->id);
        }
        for (size_t i = 0; i < nu; i++) {
            kf_key_user_convs(key, users[i]);
            kf_redis_cmd_key(gw->redis, key, NULL, NULL, "SREM %s %s", key, bc->id);
        }
        const char *resolution = "resolved";
        for (size_t i = 0; i < bc->res.nacts; i++)
            if (bc->res.acts[i].kind == KF_BOT_ACT_FINISH && bc->res.acts[i].value)
                resolution = bc->res.acts[i].value;
        gw_lifecycle("closed", bc->id, &bot_actor, "resolution", resolution, NULL, NULL);
        push_state(bc, "closed", users, nu);
        wait_untrack(bc->id);
        notbot_add(bc->id);
    }
    job_done(bc);
}

/* ---- timers: queue waits, supervisors for alerts, the rule directory ---- */

static void check_waits(int64_t now) {
    const long long *w;
    size_t nw = B.bot ? kf_bot_queue_waits(B.bot, &w) : 0;
    for (wait_ent **pp = &B.waits; *pp;) {
        wait_ent *e = *pp;
        long long next = -1;
        for (size_t i = 0; i < nw; i++)
            if (w[i] > e->fired) {
                next = w[i];
                break;
            }
        if (next < 0) {
            *pp = e->next;
            kf_free(e);
            continue;
        }
        if (now - e->queued_ms >= next * 1000) {
            e->fired = next;
            gw_bot_waiting_event(e->id, 0, next);
        }
        pp = &e->next;
    }
}

/* Registers this node's supervisors and admins as alert recipients (kefu:{staff}:supervisors),
 * in every staff domain's copy, which bot_staff.lua reads in the domain of the alert's group. */
static void scan_staff_in(const char *domain, int64_t now, int trim) {
    const char *argv[2 + 256 * 2];
    char score[24], key[KF_KEY_MAX];
    snprintf(score, sizeof(score), "%lld", (long long)now);
    kf_key_staff_in(key, domain, "supervisors");
    unsigned slot = kf_redis_slot(gw->redis, key);
    argv[0] = "ZADD";
    argv[1] = key;
    int n = 2;
    for (gw_user *u = gw->users; u; u = u->hh.next) {
        if (!u->conns || (u->conns->ident.role != KF_ROLE_SUPERVISOR &&
                          u->conns->ident.role != KF_ROLE_ADMIN))
            continue;
        argv[n++] = score;
        argv[n++] = u->id;
        if (n == (int)(sizeof(argv) / sizeof(argv[0]))) {
            kf_redis_argv(gw->redis, slot, NULL, NULL, n, argv, NULL);
            n = 2;
        }
    }
    if (n > 2) kf_redis_argv(gw->redis, slot, NULL, NULL, n, argv, NULL);
    if (trim)
        kf_redis_cmd(gw->redis, slot, NULL, NULL, "ZREMRANGEBYSCORE %s -inf %lld", key,
                     (long long)(now - 3600000));
}

static void scan_staff(int64_t now) {
    int trim = now - B.last_trim_ms > 60000;
    if (trim) B.last_trim_ms = now;
    char doms[KF_STAFF_DOMAINS_MAX][KF_GROUP_MAX + 1];
    size_t nd = gw_staff_domain_list(doms, KF_STAFF_DOMAINS_MAX);
    for (size_t i = 0; i < nd; i++) scan_staff_in(doms[i], now, trim);
}

static void on_tick(evutil_socket_t fd, short what, void *arg) {
    (void)fd, (void)what, (void)arg;
    int64_t now = gw_now_ms();
    check_waits(now);
    if (now - B.last_scan_ms >= STAFF_SCAN_MS) {
        B.last_scan_ms = now;
        scan_staff(now);
    }
    if (gw->opt.bot_watch) {
        char sig[64];
        dir_signature(sig);
        if (strcmp(sig, B.watch_sig) != 0) {
            memcpy(B.watch_sig, sig, sizeof(sig));
            rules_load("reloaded (files changed)");
        }
    }
}

void gw_bot_start(void) {
    memset(&B, 0, sizeof(B));
    B.enabled = gw->opt.bots_dir && *gw->opt.bots_dir;
    if (!B.enabled) return;
    rules_load("loaded");
    dir_signature(B.watch_sig);
    gw_hooks_register(&bot_hooks);
    B.tick_ev = event_new(gw->base, -1, EV_PERSIST, on_tick, NULL);
    struct timeval sec = {1, 0};
    event_add(B.tick_ev, &sec);
    /* supervisors connected before the first tick count too */
    B.last_scan_ms = 0;
}

void gw_bot_stop(void) {
    if (!B.enabled) return;
    B.stopping = 1;
    gw_hooks_unregister(&bot_hooks);
    if (B.tick_ev) event_free(B.tick_ev);
    B.tick_ev = NULL;
    /* conversations with a Redis command in flight are freed by its (failing) callback */
    bot_conv *bc, *tmp;
    HASH_ITER(hh, B.convs, bc, tmp) {
        if (bc->busy) continue;
        HASH_DEL(B.convs, bc);
        conv_free(bc);
    }
    while (B.waits) {
        wait_ent *e = B.waits;
        B.waits = e->next;
        kf_free(e);
    }
    kf_free(B.notbot);
    B.notbot = NULL;
    kf_bot_free(B.bot);
    B.bot = NULL;
}
