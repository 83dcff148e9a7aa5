/* Protocol v1 conversation requests (conv.open, conv.list, queue.list, msg.send, history,
 * typing, read, conv.accept, conv.close, conv.join) and the dispatcher: validation, role checks,
 * the Redis commands behind each request, the answer, and the pushes to the other
 * participants. The plumbing they share is in request.c, authentication in auth.c. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include <event2/event.h>
#include <libwebsockets.h>

#include "agent.h"
#include "auth.h"
#include "alerts.h"
#include "callback.h"
#include "gateway.h"
#include "handlers.h"
#include "qa.h"
#include "stats.h"
#include "kefu/alloc.h"
#include "kefu/keys.h"
#include "kefu/slot.h"
#include "kefu/log.h"
#include "kefu/redis.h"
#include "kefu/service.h"
#include "kefu/ticket.h"
#include "kefu/utf8.h"



/* Digits of one part of a stream id, at most UINT64_MAX (what Redis accepts). */
static int u64_digits_ok(const char *p, size_t n) {
    static const char max[] = "18446744073709551615";
    if (n == 0 || n > 20) return 0;
    for (size_t i = 0; i < n; i++)
        if (!isdigit((unsigned char)p[i])) return 0;
    return n < 20 || memcmp(p, max, 20) <= 0;
}

/* "<ms>-<seq>", both unsigned 64-bit decimals. */
static int stream_id_ok(const char *s) {
    const char *dash = strchr(s, '-');
    if (!dash) return 0;
    return u64_digits_ok(s, (size_t)(dash - s)) && u64_digits_ok(dash + 1, strlen(dash + 1));
}

static void h_ping(gw_conn *c, json_t *msg) {
    json_t *o = json_pack("{s:s}", "type", "pong");
    json_t *req = json_object_get(msg, "req");
    if (req) json_object_set(o, "req", req);
    gw_conn_send(c, o);
    json_decref(o);
}

/* ---- conv.open ---- */

static void conv_id_new(char out[25]) {
    unsigned char rnd[12];
    if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd)) {
        for (size_t i = 0; i < sizeof(rnd); i++) rnd[i] = (unsigned char)rand();
    }
    for (int i = 0; i < 12; i++) sprintf(out + 2 * i, "%02x", rnd[i]);
}

/* What conv.open does once the conversation's own keys are stored: put it in its group's queue,
 * then tell the customer's conversation set and the worker (kept writes), then answer. In that
 * order, so a conversation whose keys could not be stored (its master is down) never waits in
 * a queue, where the worker would reserve an agent for it, nor in the customer's set. */
struct open_then {
    req_ctx *x;
    int queue, prio, level;
    long long queued_us;
    char sub[KF_SUB_MAX + 1], channel[KF_CHANNEL_MAX + 1], now[24], level_s[8];
    char prio_name[8], group[KF_GROUP_MAX + 1];
};

static int step_failed(req_ctx *x, const redisReply *r, const char *err) {
    if (err && !x->err) x->err = err;
    if (!err && r->type == REDIS_REPLY_ERROR && !x->err) x->err = "unavailable";
    return x->err != NULL;
}

static void open_finish(struct open_then *ot) {
    req_ctx *x = ot->x;
    if (x->err) {
        gw_reply_failure(x);
        goto out;
    }
    char convs[KF_KEY_MAX], lkey[KF_KEY_MAX];
    kf_key_user_convs(convs, ot->sub);
    const char *sargv[] = {"SADD", convs, x->conv};
    gw_redis_kept(convs, 3, sargv);
    kf_key_lifecycle(lkey, kf_part_of(x->conv));
    const char *largv[] = {"XADD", lkey, "MAXLEN", "~", "1000000", "*", "ev", "opened",
                           "conv", x->conv, "by", ot->sub, "ts", ot->now, "channel", ot->channel,
                           "ticket", x->ticket, "level", ot->level_s, "group", ot->group,
                           "priority", ot->prio_name};
    gw_redis_kept(lkey, 24, largv);
    /* with bots the conversation starts in state "bot" (gateway/bot.c) */
    const char *st = gw_hooks_new_state();
    gw_reply_ok(x->c, x->req, json_pack("{s:s, s:s, s:s}", "conv", x->conv, "ticket", x->ticket,
                                     "state", st));
    if (x->c->ident.sub) {
        const char *u[1] = {x->c->ident.sub};
        gw_route_push(json_pack("{s:s, s:s, s:s, s:s}", "type", "conv.state", "conv", x->conv,
                                "state", st, "ticket", x->ticket),
                      u, 1, x->c);
    }
    gw_hooks_conv_opened(x->conv);
out:
    gw_ctx_free(x);
    kf_free(ot);
}

static void open_queued(const redisReply *r, const char *err, void *priv) {
    struct open_then *ot = priv;
    step_failed(ot->x, r, err);
    open_finish(ot);
}

/* The conversation's meta and record entries (one slot): then the queue, or the end. */
static void open_step_done(const redisReply *r, const char *err, void *priv) {
    struct open_then *ot = priv;
    req_ctx *x = ot->x;
    step_failed(x, r, err);
    if (--x->pending > 0) return;
    if (!x->err && ot->queue)
        gw_queue_add(x->conv, ot->group, ot->prio, ot->level, ot->queued_us, open_queued, ot);
    else
        open_finish(ot);
}

/* conv.open waits for two answers before it stores anything: the ticket number and the routing
 * configuration the worker published (group and priority from channel/topic rules). */
struct open_args {
    req_ctx *x;
    char channel[KF_CHANNEL_MAX + 1];
    char day[9];
    char conv[25];        /* the new conversation's id: where its ticket counter is */
    char *topic;
    int pending;          /* ticket and configuration answers outstanding */
    int part;             /* partition of the ticket counter; -1: the single counter */
    long long seq;        /* ticket sequence, 0 when the ticket failed */
    const char *err;
    char *routes;         /* published route rules, NULL when none */
    char group[KF_GROUP_MAX + 1];
    int prio;
};

/* Group and priority of the new conversation: the first matching route rule, else the defaults. */
static void open_route(struct open_args *oa) {
    char err[160];
    int prio = -1;
    if (oa->routes &&
        kf_route_match(oa->routes, oa->channel, oa->topic, oa->group, sizeof(oa->group), &prio,
                       err, sizeof(err)) < 0)
        kf_warn("conv.open: published routes ignored: %s", err);
    if (prio >= 0) oa->prio = prio;
}

static void open_store(struct open_args *oa) {
    req_ctx *x = oa->x;
    gw_conn *c = x->c;
    if (!oa->seq) {
        x->err = oa->err ? oa->err : "unavailable";
        gw_reply_failure(x);
        goto out;
    }
    if (kf_ticket_format(x->ticket, sizeof(x->ticket), oa->channel, oa->day, oa->seq) < 0) {
        x->err_code = kf_strdup("internal");
        gw_reply_failure(x);
        goto out;
    }
    open_route(oa);
    const char *prio = kf_priority_name((kf_priority)oa->prio);
    char id[25], meta[KF_KEY_MAX], log[KF_KEY_MAX], now[24], level[8], queued[24];
    memcpy(id, oa->conv, sizeof(id));
    snprintf(x->conv, sizeof(x->conv), "%s", id);
    snprintf(x->group, sizeof(x->group), "%s", oa->group);
    snprintf(now, sizeof(now), "%lld", (long long)gw_now_ms());
    snprintf(level, sizeof(level), "%d", c->ident.level);
    long long queued_us = gw_queue_time_now();
    snprintf(queued, sizeof(queued), "%lld", queued_us);
    const char *state = gw_hooks_new_state();
    const int queue = !strcmp(state, "waiting"); /* else a hook (the bots) queues it later */
    kf_key_conv_meta(meta, id);
    kf_key_conv_log(log, id);
    const char *argv[] = {"HSET", meta, "customer", c->ident.sub, "customer_name", c->ident.name,
                          "channel", oa->channel, "topic", oa->topic ? oa->topic : "",
                          "ticket", x->ticket, "state", state, "created", now,
                          "level", level, "group", oa->group, "priority", prio,
                          "queued_us", queue ? queued : "0", "assign_seq", "0"};
    /* Answered once the conversation's own keys and then its queue entry are stored (a bot
     * conversation is queued at its handoff, gateway/bot.c): see open_finish. The customer's
     * conversation set and the worker's lifecycle event follow as kept writes: another master
     * being down (the event's partition's, the user's) must not fail the request. */
    struct open_then *ot = kf_calloc(1, sizeof(*ot));
    ot->x = x;
    ot->queue = queue;
    ot->prio = oa->prio;
    ot->level = c->ident.level;
    ot->queued_us = queued_us;
    snprintf(ot->sub, sizeof(ot->sub), "%s", c->ident.sub);
    snprintf(ot->channel, sizeof(ot->channel), "%s", oa->channel);
    snprintf(ot->now, sizeof(ot->now), "%s", now);
    snprintf(ot->level_s, sizeof(ot->level_s), "%s", level);
    snprintf(ot->prio_name, sizeof(ot->prio_name), "%s", prio);
    snprintf(ot->group, sizeof(ot->group), "%s", oa->group);
    x->pending = queue ? 3 : 2;
    unsigned slot = kf_redis_slot(gw->redis, meta);
    kf_redis_argv(gw->redis, slot, open_step_done, ot, 26, argv, NULL);
    const char *oargv[] = {"XADD", log, "*", "ev", "opened", "by", c->ident.sub, "ts", now,
                           "channel", oa->channel, "ticket", x->ticket};
    kf_redis_argv(gw->redis, slot, open_step_done, ot, 13, oargv, NULL);
    const char *qargv[] = {"XADD", log, "*", "ev", "queued", "by", c->ident.sub, "ts", now,
                           "group", oa->group, "priority", prio, "level", level};
    if (queue) kf_redis_argv(gw->redis, slot, open_step_done, ot, 15, qargv, NULL);
    x = NULL;
out:
    if (x) gw_ctx_free(x);
    kf_free(oa->topic);
    kf_free(oa->routes);
    kf_free(oa);
}

static void on_ticket(const redisReply *r, const char *err, void *priv) {
    struct open_args *oa = priv;
    if (err || r->type != REDIS_REPLY_INTEGER) {
        oa->err = err ? err : "unavailable";
    } else if (oa->part < 0) {
        oa->seq = r->integer;
    } else {
        oa->seq = kf_ticket_number(r->integer, (unsigned)oa->part, KF_PARTS);
        if (oa->seq < 0) { /* a billion tickets in one channel-day */
            kf_warn("conv.open: ticket counter of channel %s exhausted", oa->channel);
            oa->seq = 0;
        }
    }
    if (--oa->pending == 0) open_store(oa);
}

/* Which counter numbers a channel-day's tickets (ticket_mode.lua), remembered per channel: the
 * single counter of earlier versions is read once per channel and day by each process, not on
 * every conv.open, so that only the partitioned counters are on the hot path. A direct-mapped
 * table: a client may name any channel, and a forgotten one only costs that read again. */
#define TICKET_MODES 256
static struct ticket_mode {
    char channel[KF_CHANNEL_MAX + 1];
    char day[9];
    int partitioned;
} ticket_modes[TICKET_MODES];

static struct ticket_mode *ticket_mode_slot(const char *channel) {
    return &ticket_modes[kf_hash32(channel, strlen(channel)) % TICKET_MODES];
}

/* The partition whose counter numbers a new conversation's ticket: one on the server of the
 * conversation's own keys, so that conv.open needs no master besides that one (and the ticket
 * counters share its load). Partition k's slot lies in the k-th sixteenth of the slot range
 * (keys.h), so the sixteenth of the conversation's slot is on its server unless a server's
 * range ends inside that sixteenth: then a neighbour is. Any partition keeps the numbers
 * unique; this only picks where the counter is. */
static unsigned ticket_part(const char *conv) {
    char meta[KF_KEY_MAX], key[KF_KEY_MAX];
    kf_key_conv_meta(meta, conv);
    unsigned slot = kf_redis_slot(gw->redis, meta);
    unsigned p = slot * KF_PARTS / KF_SLOTS;
    const int tries[] = {0, -1, 1};
    for (size_t i = 0; i < sizeof(tries) / sizeof(tries[0]); i++) {
        int q = (int)p + tries[i];
        if (q < 0 || q >= KF_PARTS) continue;
        kf_key_lifecycle(key, (unsigned)q);
        if (kf_redis_same_server(gw->redis, slot, kf_redis_slot(gw->redis, key))) return (unsigned)q;
    }
    return p;
}

/* "<channel>-<day>": what names a channel-day's counters */
static void ticket_tag(const struct open_args *oa, char tag[64]) {
    snprintf(tag, 64, "%s-%s", oa->channel, oa->day);
}

static void ticket_next(struct open_args *oa, int partitioned) {
    char tag[64], key[KF_KEY_MAX];
    ticket_tag(oa, tag);
    if (partitioned) {
        oa->part = (int)ticket_part(oa->conv);
        kf_key_ticket_part(key, (unsigned)oa->part, tag);
    } else {
        oa->part = -1;
        kf_key_ticket_seq(key, tag);
    }
    const char *argv[] = {key};
    kf_redis_script(gw->redis, kf_redis_slot(gw->redis, key), "ticket_next", on_ticket, oa, 1, 1,
                    argv, NULL);
}

static void on_ticket_mode(const redisReply *r, const char *err, void *priv) {
    struct open_args *oa = priv;
    if (err || r->type != REDIS_REPLY_INTEGER) {
        /* without knowing whether an earlier version numbers this day, a number from the
         * partitioned counters could repeat one of its; the next conv.open asks again */
        oa->err = err ? err : "unavailable";
        if (--oa->pending == 0) open_store(oa);
        return;
    }
    struct ticket_mode *m = ticket_mode_slot(oa->channel);
    snprintf(m->channel, sizeof(m->channel), "%s", oa->channel);
    memcpy(m->day, oa->day, sizeof(m->day));
    m->partitioned = r->integer == 1;
    ticket_next(oa, m->partitioned);
}

/* The ticket number: from the conversation's partition's counter of the channel-day, or from the
 * day's single counter when an earlier version numbered tickets that day before this process
 * first asked (an upgrade during the day). */
static void ticket_start(struct open_args *oa) {
    struct ticket_mode *m = ticket_mode_slot(oa->channel);
    if (!strcmp(m->channel, oa->channel) && !memcmp(m->day, oa->day, sizeof(m->day))) {
        ticket_next(oa, m->partitioned);
        return;
    }
    char tag[64], key[KF_KEY_MAX], mark[24];
    ticket_tag(oa, tag);
    kf_key_ticket_seq(key, tag);
    snprintf(mark, sizeof(mark), "%lld", KF_TICKET_LEGACY_CLOSED);
    const char *argv[] = {key, mark};
    kf_redis_script(gw->redis, kf_redis_slot(gw->redis, key), "ticket_mode", on_ticket_mode, oa,
                    1, 2, argv, NULL);
}

/* The published routing; when the {staff} slot cannot answer, the copy the gateway read last
 * from any staff domain applies, or without one the defaults, so the conversation still reaches
 * a queue. */
static void on_open_config(const redisReply *r, const char *err, void *priv) {
    struct open_args *oa = priv;
    const char *routes_read, *group_read, *prio_read;
    if (!err && r->type == REDIS_REPLY_ARRAY && r->elements == 3) {
        const redisReply *routes = r->element[0], *group = r->element[1], *prio = r->element[2];
        if (routes->type == REDIS_REPLY_STRING && routes->len) oa->routes = kf_strdup(routes->str);
        if (group->type == REDIS_REPLY_STRING && kf_group_valid(group->str))
            snprintf(oa->group, sizeof(oa->group), "%s", group->str);
        if (prio->type == REDIS_REPLY_STRING && kf_priority_parse(prio->str) >= 0)
            oa->prio = kf_priority_parse(prio->str);
    } else if (gw_staff_routing(&routes_read, &group_read, &prio_read)) {
        /* the copy read last from any staff domain (gateway/agent.c): losing the {staff}
         * master does not send every new conversation to the default group */
        kf_debug("conv.open: routing configuration unavailable (%s); the copy read last",
                 err ? err : "bad reply");
        if (*routes_read) oa->routes = kf_strdup(routes_read);
        snprintf(oa->group, sizeof(oa->group), "%s", group_read);
        oa->prio = kf_priority_parse(prio_read);
    } else {
        kf_warn("conv.open: routing configuration unavailable (%s); default group",
                err ? err : "bad reply");
    }
    if (--oa->pending == 0) open_store(oa);
}

static void h_conv_open(gw_conn *c, json_t *msg) {
    const char *channel, *topic;
    if (gw_get_str(c, msg, "channel", 0, KF_CHANNEL_MAX, &channel) < 0) return;
    if (gw_get_str(c, msg, "topic", 0, TOPIC_MAX, &topic) < 0) return;
    if (!channel) channel = c->ident.channel[0] ? c->ident.channel : "web";
    if (!kf_channel_valid(channel)) {
        gw_reply_error(c, json_object_get(msg, "req"), "bad_request",
                       "field 'channel' must match [a-z0-9_-]{1,24}");
        return;
    }
    struct open_args *oa = kf_calloc(1, sizeof(*oa));
    oa->x = gw_ctx_new(c, json_object_get(msg, "req"));
    snprintf(oa->channel, sizeof(oa->channel), "%s", channel);
    oa->topic = topic ? kf_strdup(topic) : NULL;
    snprintf(oa->group, sizeof(oa->group), "default");
    oa->prio = KF_PRIO_MEDIUM;
    oa->pending = 2;
    kf_ticket_day(time(NULL), oa->day);
    conv_id_new(oa->conv);
    ticket_start(oa);
    kf_redis_cmd(gw->redis, kf_redis_slot(gw->redis, KF_KEY_STAFF_CONFIG), on_open_config, oa,
                 "HMGET %s routes default_group default_priority", KF_KEY_STAFF_CONFIG);
}

/* ---- conv.list / queue.list: an id list, then one HMGET per conversation ---- */

static const char *const list_fields[] = {"ticket", "state", "channel", "topic", "customer",
                                          "agent", "created", "customer_name", "level",
                                          "priority"};
#define NLIST_FIELDS 10

struct list_item {
    req_ctx *x;
    size_t index;
};

static void list_done(req_ctx *x) {
    if (x->err) {
        gw_reply_failure(x);
    } else {
        json_t *out = json_array();
        size_t i;
        json_t *v;
        json_array_foreach(x->acc, i, v) if (json_is_object(v)) json_array_append(out, v);
        gw_reply_ok(x->c, x->req, json_pack("{s:o}", "convs", out));
    }
    gw_ctx_free(x);
}

static void on_list_item(const redisReply *r, const char *err, void *priv) {
    struct list_item *li = priv;
    req_ctx *x = li->x;
    if (err) {
        if (!x->err) x->err = err;
    } else if (r->type == REDIS_REPLY_ARRAY && r->elements == NLIST_FIELDS &&
               r->element[1]->type == REDIS_REPLY_STRING) {
        const char *state = r->element[1]->str;
        int want_waiting = x->limit < 0; /* queue.list */
        if (want_waiting ? strcmp(state, "waiting") == 0 : strcmp(state, "closed") != 0) {
            json_t *o = json_object();
            json_object_set_new(o, "conv", json_string(json_string_value(json_array_get(x->acc, li->index))));
            for (int f = 0; f < NLIST_FIELDS; f++) {
                const redisReply *e = r->element[f];
                const char *s = e->type == REDIS_REPLY_STRING ? e->str : "";
                if (!strcmp(list_fields[f], "created") || !strcmp(list_fields[f], "level"))
                    json_object_set_new(o, list_fields[f], json_integer(atoll(s)));
                else
                    json_object_set_new(o, list_fields[f], json_string(s));
            }
            json_object_set_new(o, "last_id", json_string(""));
            json_array_set_new(x->acc, li->index, o);
        }
    }
    kf_free(li);
    if (--x->pending == 0) x->done(x);
}

/* The last message id comes from the stream itself (XREVRANGE COUNT 1), answered after the HMGET
 * of the same conversation on the same connection. */
static void on_list_last(const redisReply *r, const char *err, void *priv) {
    struct list_item *li = priv;
    req_ctx *x = li->x;
    json_t *o = json_array_get(x->acc, li->index);
    if (!err && json_is_object(o) && r->type == REDIS_REPLY_ARRAY && r->elements == 1 &&
        r->element[0]->type == REDIS_REPLY_ARRAY && r->element[0]->elements == 2)
        json_object_set_new(o, "last_id", json_string(r->element[0]->element[0]->str));
    kf_free(li);
    if (--x->pending == 0) x->done(x);
}

static void on_list_ids(const redisReply *r, const char *err, void *priv) {
    req_ctx *x = priv;
    if (err || r->type != REDIS_REPLY_ARRAY) {
        x->err = err ? err : "unavailable";
        x->done(x);
        return;
    }
    x->acc = json_array();
    for (size_t i = 0; i < r->elements; i++)
        json_array_append_new(x->acc, json_string(r->element[i]->type == REDIS_REPLY_STRING ? r->element[i]->str : ""));
    x->pending = (int)r->elements * 2;
    if (x->pending == 0) {
        x->done(x);
        return;
    }
    for (size_t i = 0; i < r->elements; i++) {
        const char *id = json_string_value(json_array_get(x->acc, i));
        char meta[KF_KEY_MAX];
        struct list_item *li = kf_malloc(sizeof(*li));
        li->x = x;
        li->index = i;
        if (!gw_id_chars_ok(id) || strlen(id) > CONV_ID_MAX) id = "-";
        kf_key_conv_meta(meta, id);
        const char *argv[2 + NLIST_FIELDS] = {"HMGET", meta};
        for (int f = 0; f < NLIST_FIELDS; f++) argv[2 + f] = list_fields[f];
        kf_redis_argv(gw->redis, kf_redis_slot(gw->redis, meta), on_list_item, li,
                      2 + NLIST_FIELDS, argv, NULL);
        char msgs[KF_KEY_MAX];
        kf_key_conv_msgs(msgs, id);
        struct list_item *ll = kf_malloc(sizeof(*ll));
        ll->x = x;
        ll->index = i;
        kf_redis_cmd(gw->redis, kf_redis_slot(gw->redis, msgs), on_list_last, ll,
                     "XREVRANGE %s + - COUNT 1", msgs);
    }
}

static void h_conv_list(gw_conn *c, json_t *msg) {
    req_ctx *x = gw_ctx_new(c, json_object_get(msg, "req"));
    x->done = list_done;
    char key[KF_KEY_MAX];
    kf_key_user_convs(key, c->ident.sub);
    kf_redis_cmd_key(gw->redis, key, on_list_ids, x, "SMEMBERS %s", key);
}

static void h_queue_list(gw_conn *c, json_t *msg) {
    long long limit;
    const char *group;
    if (gw_get_int(c, msg, "limit", 100, 1, 1000, &limit) < 0) return;
    if (gw_get_str(c, msg, "group", 0, 32, &group) < 0) return;
    if (!group) group = "default";
    if (!gw_id_chars_ok(group)) {
        gw_reply_error(c, json_object_get(msg, "req"), "bad_request", "field 'group' is not a group name");
        return;
    }
    if (c->ident.role == KF_ROLE_AGENT && strcmp(group, "default") != 0) {
        int mine = 0;
        const char *sk = c->ident.skills ? c->ident.skills : "";
        size_t gl = strlen(group);
        for (const char *p = sk; *p;) {
            size_t n = strcspn(p, ",");
            if (n == gl && strncmp(p, group, n) == 0) mine = 1;
            p += n + (p[n] == ',');
        }
        if (!mine) {
            gw_reply_error(c, json_object_get(msg, "req"), "forbidden", "not one of your skill groups");
            return;
        }
    }
    req_ctx *x = gw_ctx_new(c, json_object_get(msg, "req"));
    x->done = list_done;
    x->limit = -1;
    char key[KF_KEY_MAX];
    kf_key_queue(key, group);
    kf_redis_cmd_key(gw->redis, key, on_list_ids, x, "ZRANGE %s 0 %lld", key, limit - 1);
}

/* ---- msg.send ---- */

struct send_args {
    req_ctx *x;
    char *text;
    size_t text_len;
    char cid[CID_MAX + 1];
};

/* {"type":"ok","req":..,"id":..,"prev":..,"ts":..,"dup":..} written directly for JSON clients */
static void reply_sent(req_ctx *x, const char *id, const char *prev, long long ts, int dup) {
    gw_conn *c = x->c;
    if (!gw_conn_alive(c)) return;
    if (c->fmt != KF_FMT_JSON) {
        json_t *ok = json_pack("{s:s, s:I, s:b}", "id", id, "ts", (json_int_t)ts, "dup", dup);
        if (!dup) json_object_set_new(ok, "prev", json_string(prev));
        gw_reply_ok(c, x->req, ok);
        return;
    }
    gw_json j;
    gw_json_init(&j, LWS_PRE, 160);
    GW_JSON_LIT(&j, "{\"type\":\"ok\"");
    if (x->req) {
        GW_JSON_LIT(&j, ",\"req\":");
        gw_json_req(&j, x->req);
    }
    GW_JSON_LIT(&j, ",\"id\":");
    gw_json_str(&j, id, strlen(id));
    if (!dup) {
        GW_JSON_LIT(&j, ",\"prev\":");
        gw_json_str(&j, prev, strlen(prev));
    }
    GW_JSON_LIT(&j, ",\"ts\":");
    gw_json_int(&j, ts);
    if (dup)
        GW_JSON_LIT(&j, ",\"dup\":true}");
    else
        GW_JSON_LIT(&j, ",\"dup\":false}");
    gw_buf *b = gw_buf_new(j.buf, j.len - LWS_PRE, 0);
    gw_conn_send_buf(c, b);
    gw_buf_unref(b);
}

/* The msg push as JSON text (the routing format whatever the recipients speak). */
static void push_sent(req_ctx *x, struct send_args *sa, const char *id, const char *prev,
                      long long ts, const char *const *users, size_t n) {
    const gw_conn *c = x->c;
    const char *role = kf_role_name((kf_role)c->ident.role);
    gw_json j;
    gw_json_init(&j, 0, 192 + sa->text_len + strlen(c->ident.name));
    GW_JSON_LIT(&j, "{\"type\":\"msg\",\"conv\":");
    gw_json_str(&j, x->conv, strlen(x->conv));
    GW_JSON_LIT(&j, ",\"id\":");
    gw_json_str(&j, id, strlen(id));
    GW_JSON_LIT(&j, ",\"prev\":");
    gw_json_str(&j, prev, strlen(prev));
    GW_JSON_LIT(&j, ",\"from\":{\"id\":");
    gw_json_str(&j, c->ident.sub, strlen(c->ident.sub));
    GW_JSON_LIT(&j, ",\"role\":");
    gw_json_str(&j, role, strlen(role));
    GW_JSON_LIT(&j, ",\"name\":");
    gw_json_str(&j, c->ident.name, strlen(c->ident.name));
    GW_JSON_LIT(&j, "},\"text\":");
    gw_json_str(&j, sa->text, sa->text_len);
    GW_JSON_LIT(&j, ",\"ts\":");
    gw_json_int(&j, ts);
    GW_JSON_LIT(&j, ",\"cid\":");
    gw_json_str(&j, sa->cid, strlen(sa->cid));
    gw_json_raw(&j, "}", 2); /* with the NUL the route's copies rely on */
    gw_route_push_text(j.buf, j.len - 1, x->conv, 1, users, n, c);
}

static void on_msg_stored(const redisReply *r, const char *err, void *priv) {
    struct send_args *sa = priv;
    req_ctx *x = sa->x;
    if (err && strcmp(err, "unreplicated") == 0) {
        /* stored on the master, not confirmed by ack_replicas replicas: not acknowledged and
         * not pushed (a failover now could lose it); a retry with the same cid finds it */
        gw_reply_error(x->c, x->req, "unavailable",
                       "stored but not yet confirmed by the replicas; retry with the same cid");
        goto out;
    }
    if (gw_script_result(x, r, err, 3) < 0) { /* {'S' or 'D', id, prev, members...} */
        gw_reply_failure(x);
        goto out;
    }
    const char *id = r->element[1]->str, *prev = r->element[2]->str;
    int dup = r->element[0]->str[0] == 'D';
    long long ts = atoll(id);
    reply_sent(x, id, prev, ts, dup);
    const char *users[64];
    size_t n = gw_members(r, 3, NULL, users, 64);
    if (dup) {
        /* A retry of a message stored before: the first attempt's answer was lost (timeout,
         * dropped connection), and with it maybe its push. The participants re-check. */
        gw_route_resync(x->conv, users, n);
    } else {
        GW_M->messages_stored++;
        push_sent(x, sa, id, prev, ts, users, n);
        /* the bot answers the customer while it has the conversation (gateway/bot.c) */
        gw_hooks_message_stored(x->c, x->conv, sa->text, sa->text_len);
    }
out:
    gw_ctx_free(x);
    kf_free(sa->text);
    kf_free(sa);
}

/* ---- msg.send batches: one EVALSHA msg_send per batch group per loop iteration ----
 * The requests a loop iteration brings are stored by one script call per batch group (at most
 * SEND_BATCH_MAX each), in arrival order: the script's fixed cost (the call, its KEYS and ARGV
 * tables, one request to parse and one reply to write) is paid once for all of them. A group
 * is the whole server when it is stand-alone (its scripts may touch any key), one slot in a
 * cluster (a command's keys must share a slot there). The groups with messages gathered sit in
 * a small table; a group that finds its place taken sends the one there first. */
#define SEND_BATCH_MAX 128
#define SEND_BATCH_BYTES (256 * 1024) /* text per call: a script call holds Redis up */
#define SEND_BATCHES 64
struct send_batch {
    int n;
    unsigned group, slot;
    size_t bytes;
    struct send_args *sa[SEND_BATCH_MAX];
};
static struct send_batch *send_batches; /* SEND_BATCHES places, by group */
static struct event *send_flush_ev;
static size_t send_pending; /* messages gathered or in flight */

size_t gw_send_backlog(void) { return send_pending; }

struct sent_msgs {
    int n;
    struct send_args *sa[];
};

static void on_batch_stored(const redisReply *r, const char *err, void *priv) {
    struct sent_msgs *sm = priv;
    send_pending -= (size_t)sm->n;
    int ok = !err && r->type == REDIS_REPLY_ARRAY && r->elements == (size_t)sm->n;
    if (!err && !ok && r->type != REDIS_REPLY_ERROR) {
        kf_error("msg_send: unexpected reply");
        err = "protocol error";
    }
    for (int i = 0; i < sm->n; i++) on_msg_stored(ok ? r->element[i] : r, err, sm->sa[i]);
    kf_free(sm);
}

/* The longest entry of a sender's cid window (msg_send.lua): "\n", 16 hex digits, " ", and a
 * stream id of a 13-digit millisecond time, "-" and a sequence below 10^7 in one millisecond. */
#define CID_WINDOW_ENTRY 40

/* "\n", the cid's 64-bit hash in hex, " ": how the window names a cid (18 bytes). */
static void cid_token(char tok[20], const char *cid) {
    static const char hex[] = "0123456789abcdef";
    uint64_t h = kf_hash_str(cid);
    tok[0] = '\n';
    for (int i = 16; i >= 1; i--, h >>= 4) tok[i] = hex[h & 15];
    tok[17] = ' ';
    tok[18] = '\0';
}

static void send_batch_flush(struct send_batch *b) {
    if (b->n == 0) return;
    char maxlen[24], winbytes[24];
    snprintf(maxlen, sizeof(maxlen), "%lld", gw->opt.history_maxlen);
    snprintf(winbytes, sizeof(winbytes), "%lld", gw->opt.cid_window * CID_WINDOW_ENTRY);
    int argc = 2 + 8 * b->n; /* 2 keys per message, 2 shared values, 6 values per message */
    const char **av = kf_malloc(sizeof(char *) * (size_t)argc);
    size_t *al = kf_malloc(sizeof(size_t) * (size_t)argc);
    char (*keys)[2][KF_KEY_MAX] = kf_malloc(sizeof(*keys) * (size_t)b->n);
    char (*toks)[20] = kf_malloc(sizeof(*toks) * (size_t)b->n);
#define ARG(str, len) (av[k] = (str), al[k] = (len), k++)
    int k = 0;
    for (int i = 0; i < b->n; i++) {
        struct send_args *sa = b->sa[i];
        kf_key_conv_meta(keys[i][0], sa->x->conv);
        kf_key_conv_msgs(keys[i][1], sa->x->conv);
        for (int j = 0; j < 2; j++) ARG(keys[i][j], strlen(keys[i][j]));
    }
    ARG(maxlen, strlen(maxlen));
    ARG(winbytes, strlen(winbytes));
    for (int i = 0; i < b->n; i++) {
        struct send_args *sa = b->sa[i];
        const gw_conn *c = sa->x->c;
        const char *role = kf_role_name((kf_role)c->ident.role);
        ARG(c->ident.sub, strlen(c->ident.sub));
        ARG(role, strlen(role));
        ARG(c->ident.name, strlen(c->ident.name));
        ARG(sa->text, sa->text_len);
        ARG(sa->cid, strlen(sa->cid));
        /* the window holds the cid's 64-bit hash: 18 bytes an entry whatever the cid's length */
        cid_token(toks[i], sa->cid);
        ARG(toks[i], 18);
    }
#undef ARG
    struct sent_msgs *sm = kf_malloc(sizeof(*sm) + sizeof(sm->sa[0]) * (size_t)b->n);
    sm->n = b->n;
    memcpy(sm->sa, b->sa, sizeof(sm->sa[0]) * (size_t)b->n);
    b->n = 0;
    b->bytes = 0;
    /* acknowledged once ack_replicas replicas have it (kf_redis_set_durable; 0: at once) */
    kf_redis_script_durable(gw->redis, b->slot, "msg_send", on_batch_stored, sm, 2 * sm->n,
                            argc, av, al);
    kf_free(keys);
    kf_free(toks);
    kf_free(av);
    kf_free(al);
}

static void on_send_flush(evutil_socket_t fd, short what, void *arg) {
    (void)fd, (void)what, (void)arg;
    for (unsigned i = 0; i < SEND_BATCHES; i++) send_batch_flush(&send_batches[i]);
}

/* Any other command for a slot goes out after the messages gathered before it for that slot:
 * a conv.close after a msg.send on one connection must find the message stored. */
static void before_send(kf_redis *r, unsigned slot, void *priv) {
    (void)priv;
    unsigned g = kf_redis_batch_group(r, slot);
    struct send_batch *b = &send_batches[g % SEND_BATCHES];
    if (b->n && b->group == g) send_batch_flush(b);
}

void gw_msg_send(req_ctx *x, char *text, size_t text_len, const char *cid) {
    if (gw_conn_shed(x->c)) {
        x->c->shed_refused = 1;
        gw_reply_error(x->c, x->req, "overloaded",
                       "the gateway is overloaded; nothing was stored, retry later with the same cid");
        gw_ctx_free(x);
        kf_free(text);
        return;
    }
    struct send_args *sa = kf_malloc(sizeof(*sa));
    sa->x = x;
    sa->text = text;
    sa->text_len = text_len;
    snprintf(sa->cid, sizeof(sa->cid), "%s", cid);
    if (!send_batches) {
        send_batches = kf_calloc(SEND_BATCHES, sizeof(*send_batches));
        send_flush_ev = event_new(gw->base, -1, 0, on_send_flush, NULL);
        kf_redis_before_send(gw->redis, before_send, NULL);
    }
    char meta[KF_KEY_MAX];
    kf_key_conv_meta(meta, x->conv);
    unsigned slot = kf_redis_slot(gw->redis, meta);
    unsigned g = kf_redis_batch_group(gw->redis, slot);
    struct send_batch *b = &send_batches[g % SEND_BATCHES];
    if (b->n && (b->group != g || b->n == SEND_BATCH_MAX || b->bytes + text_len > SEND_BATCH_BYTES))
        send_batch_flush(b);
    b->group = g;
    b->slot = slot; /* any slot of the group routes the call */
    b->sa[b->n++] = sa;
    b->bytes += text_len;
    send_pending++;
    /* runs after the callbacks already active in this loop iteration */
    event_active(send_flush_ev, EV_TIMEOUT, 0);
}

/* Shutdown: what is gathered is not sent; each request is failed (its connection is gone). */
void gw_msg_send_stop(void) {
    if (!send_batches) return;
    for (unsigned i = 0; i < SEND_BATCHES; i++) {
        struct send_batch *b = &send_batches[i];
        for (int k = 0; k < b->n; k++) {
            send_pending--;
            on_msg_stored(NULL, "unavailable", b->sa[k]);
        }
        b->n = 0;
    }
    kf_redis_before_send(gw->redis, NULL, NULL);
    event_free(send_flush_ev);
    kf_free(send_batches);
    send_batches = NULL;
    send_flush_ev = NULL;
}

static void h_msg_send(gw_conn *c, json_t *msg) {
    const char *text, *cid;
    if (gw_get_str(c, msg, "text", 1, (size_t)gw->opt.max_text_bytes, &text) < 0) return;
    if (gw_get_str(c, msg, "cid", 1, CID_MAX, &cid) < 0) return;
    req_ctx *x;
    if (gw_get_conv(c, msg, &x) < 0) return;
    size_t tl = json_string_length(json_object_get(msg, "text"));
    char *t = kf_malloc(tl + 1);
    memcpy(t, text, tl + 1);
    gw_msg_send(x, t, tl, cid);
}

/* ---- history: access check and range, pipelined on the conversation's slot ---- */

static void on_history_access(const redisReply *r, const char *err, void *priv) {
    req_ctx *x = priv;
    x->access_ok = gw_script_result(x, r, err, 2) == 0;
}

/* The message before a history page: the newest at or before `after`. */
static void on_history_prev(const redisReply *r, const char *err, void *priv) {
    req_ctx *x = priv;
    if (!err && r->type == REDIS_REPLY_ARRAY && r->elements >= 1 &&
        r->element[0]->type == REDIS_REPLY_ARRAY && r->element[0]->elements == 2 &&
        r->element[0]->element[0]->type == REDIS_REPLY_STRING)
        snprintf(x->prev, sizeof(x->prev), "%s", r->element[0]->element[0]->str);
}

static json_t *entry_to_msg(const char *conv, const redisReply *e) {
    if (e->type != REDIS_REPLY_ARRAY || e->elements != 2) return NULL;
    const redisReply *kv = e->element[1];
    const char *from = "", *role = "", *name = "", *text = "", *cid = "";
    for (size_t i = 0; i + 1 < kv->elements; i += 2) {
        const char *k = kv->element[i]->str, *v = kv->element[i + 1]->str;
        if (!strcmp(k, "from")) from = v;
        else if (!strcmp(k, "role")) role = v;
        else if (!strcmp(k, "name")) name = v;
        else if (!strcmp(k, "text")) text = v;
        else if (!strcmp(k, "cid")) cid = v;
    }
    const char *id = e->element[0]->str;
    return json_pack("{s:s, s:s, s:{s:s, s:s, s:s}, s:s, s:I, s:s}", "conv", conv, "id", id,
                     "from", "id", from, "role", role, "name", name, "text", text, "ts",
                     (json_int_t)atoll(id), "cid", cid);
}

static void on_history_range(const redisReply *r, const char *err, void *priv) {
    req_ctx *x = priv;
    if (!x->access_ok || err || r->type != REDIS_REPLY_ARRAY) {
        if (!x->err && err) x->err = err;
        if (x->access_ok && !err) {
            /* Redis refused the range: a bug of ours, not an outage */
            kf_error("history XRANGE: %s", r->type == REDIS_REPLY_ERROR ? r->str : "bad reply");
            x->err_code = kf_strdup("internal");
        }
        gw_reply_failure(x);
        gw_ctx_free(x);
        return;
    }
    json_t *msgs = json_array();
    size_t n = r->elements > (size_t)x->limit ? (size_t)x->limit : r->elements;
    const char *prev = x->prev;
    for (size_t i = 0; i < n; i++) {
        json_t *m = entry_to_msg(x->conv, r->element[i]);
        if (!m) continue;
        json_object_set_new(m, "prev", json_string(prev));
        prev = json_string_value(json_object_get(m, "id"));
        json_array_append_new(msgs, m);
    }
    gw_reply_ok(x->c, x->req, json_pack("{s:s, s:o, s:b}", "conv", x->conv, "msgs", msgs, "more",
                                     r->elements > (size_t)x->limit));
    gw_ctx_free(x);
}

static void h_history(gw_conn *c, json_t *msg) {
    const char *after;
    long long limit;
    if (gw_get_str(c, msg, "after", 0, 41, &after) < 0) return;
    if (after && *after && !stream_id_ok(after)) {
        gw_reply_error(c, json_object_get(msg, "req"), "bad_request", "field 'after' is not a message id");
        return;
    }
    if (gw_get_int(c, msg, "limit", 50, 1, gw->opt.history_page_max, &limit) < 0) return;
    req_ctx *x;
    if (gw_get_conv(c, msg, &x) < 0) return;
    x->limit = (int)limit;
    char meta[KF_KEY_MAX], msgs[KF_KEY_MAX], start[48];
    kf_key_conv_meta(meta, x->conv);
    kf_key_conv_msgs(msgs, x->conv);
    if (after && !strcmp(after, "18446744073709551615-18446744073709551615"))
        snprintf(start, sizeof(start), "%s", after); /* nothing can follow the largest id */
    else if (after && *after)
        snprintf(start, sizeof(start), "(%s", after);
    else
        snprintf(start, sizeof(start), "-");
    const char *argv[] = {c->ident.sub, kf_role_name((kf_role)c->ident.role), "read"};
    /* All go to the same slot and connection, so they are answered in this order. */
    gw_conv_script(x, "conv_access", meta, on_history_access, 3, argv, NULL);
    if (after && *after)
        kf_redis_cmd(gw->redis, kf_redis_slot(gw->redis, meta), on_history_prev, x,
                     "XREVRANGE %s %s - COUNT 1", msgs, after);
    kf_redis_cmd(gw->redis, kf_redis_slot(gw->redis, meta), on_history_range, x,
                 "XRANGE %s %s + COUNT %lld", msgs, start, limit + 1);
}

/* ---- typing / read ---- */

struct touch_args {
    req_ctx *x;
    char id[48];
    int is_read;
};

static void on_touch(const redisReply *r, const char *err, void *priv) {
    struct touch_args *ta = priv;
    req_ctx *x = ta->x;
    if (gw_script_result(x, r, err, 2) < 0) {
        gw_reply_failure(x);
    } else {
        gw_reply_ok(x->c, x->req, NULL);
        const char *users[64];
        size_t n = gw_members(r, 2, x->c->ident.sub, users, 64);
        json_t *push = json_pack("{s:s, s:s, s:o}", "type", ta->is_read ? "read" : "typing",
                                 "conv", x->conv, "from", gw_from_obj(x->c));
        if (ta->is_read) json_object_set_new(push, "id", json_string(ta->id));
        gw_route_push(push, users, n, x->c);
    }
    gw_ctx_free(x);
    kf_free(ta);
}

static void touch(gw_conn *c, json_t *msg, int is_read) {
    const char *id = NULL;
    if (is_read) {
        if (gw_get_str(c, msg, "id", 1, 41, &id) < 0) return;
        if (!stream_id_ok(id)) {
            gw_reply_error(c, json_object_get(msg, "req"), "bad_request", "field 'id' is not a message id");
            return;
        }
    }
    req_ctx *x;
    if (gw_get_conv(c, msg, &x) < 0) return;
    struct touch_args *ta = kf_calloc(1, sizeof(*ta));
    ta->x = x;
    ta->is_read = is_read;
    if (id) snprintf(ta->id, sizeof(ta->id), "%s", id);
    char meta[KF_KEY_MAX];
    kf_key_conv_meta(meta, x->conv);
    const char *argv[] = {c->ident.sub, kf_role_name((kf_role)c->ident.role), "write", ta->id};
    const char *av[5] = {meta, argv[0], argv[1], argv[2], argv[3]};
    kf_redis_script(gw->redis, kf_redis_slot(gw->redis, meta), "conv_access", on_touch, ta, 1, 5,
                    av, NULL);
}

static void h_typing(gw_conn *c, json_t *msg) { touch(c, msg, 0); }
static void h_read(gw_conn *c, json_t *msg) { touch(c, msg, 1); }

/* ---- conv.accept / conv.close / conv.join ---- */

static void on_accepted(const redisReply *r, const char *err, void *priv) {
    req_ctx *x = priv;
    gw_conn *c = x->c;
    if (gw_script_result(x, r, err, 3) < 0) { /* {'S', customer, group, members...} */
        gw_reply_failure(x);
        gw_ctx_free(x);
        return;
    }
    const char *customer = r->element[1]->str, *group = r->element[2]->str;
    char queue[KF_KEY_MAX], convs[KF_KEY_MAX];
    kf_key_queue(queue, group);
    gw_redis_kept_member(queue, "ZREM", x->conv);
    kf_key_user_convs(convs, c->ident.sub);
    gw_redis_kept_member(convs, "SADD", x->conv);
    gw_lifecycle("accepted", x->conv, c, "agent", c->ident.sub, NULL, NULL);
    gw_reply_ok(c, x->req, json_pack("{s:s, s:s}", "conv", x->conv, "state", "assigned"));
    const char *users[64];
    users[0] = customer;
    users[1] = c->ident.sub;
    size_t n = 2 + gw_members(r, 3, NULL, users + 2, 62);
    gw_route_push(json_pack("{s:s, s:s, s:s, s:s, s:s}", "type", "conv.state", "conv", x->conv,
                            "state", "assigned", "agent", c->ident.sub, "agent_name", c->ident.name),
                  users, n, c);
    gw_ctx_free(x);
}

static void h_conv_accept(gw_conn *c, json_t *msg) {
    req_ctx *x;
    if (gw_get_conv(c, msg, &x) < 0) return;
    char meta[KF_KEY_MAX], now[24];
    kf_key_conv_meta(meta, x->conv);
    snprintf(now, sizeof(now), "%lld", (long long)gw_now_ms());
    const char *argv[] = {c->ident.sub, c->ident.name, now};
    gw_conv_script(x, "conv_accept", meta, on_accepted, 3, argv, NULL);
}

/* conv.close runs the close script and reads the survey settings at once; the answer waits
 * for both. */
struct close_args {
    req_ctx *x;
    int pending;
    int closed;            /* the close script succeeded */
    char prev[16];
    char customer[KF_SUB_MAX + 1];
    char agent[KF_SUB_MAX + 1];
    const char **users;    /* participants, pushes go to them */
    size_t nusers;
    char resolution[24];
    char category[16];
    long long rate_window_ms;
    int survey;
};

static void close_finish(struct close_args *ca) {
    req_ctx *x = ca->x;
    gw_conn *c = x->c;
    if (!ca->closed) {
        gw_reply_failure(x);
        goto out;
    }
    if (ca->agent[0]) gw_agent_release(ca->agent, x->conv);
    gw_lifecycle("closed", x->conv, c, "resolution", ca->resolution, "agent", ca->agent);
    gw_reply_ok(c, x->req, json_pack("{s:s, s:s}", "conv", x->conv, "state", "closed"));
    json_t *push = json_pack("{s:s, s:s, s:s, s:s, s:s}", "type", "conv.state", "conv", x->conv,
                             "state", "closed", "resolution", ca->resolution, "closed_by",
                             c->ident.sub);
    if (ca->category[0]) json_object_set_new(push, "category", json_string(ca->category));
    gw_route_push(push, ca->users, ca->nusers, c);
    /* a customer who left the queue was served by nobody: nothing to rate */
    if (ca->survey && ca->customer[0] && strcmp(ca->resolution, "abandoned") != 0) {
        const char *u[1] = {ca->customer};
        gw_route_push(json_pack("{s:s, s:s, s:I, s:I, s:I}", "type", "survey.request", "conv",
                                x->conv, "min", (json_int_t)1, "max", (json_int_t)5, "expires_at",
                                (json_int_t)(gw_now_ms() + ca->rate_window_ms)),
                      u, 1, NULL);
    }
out:
    for (size_t i = 0; i < ca->nusers; i++) kf_free((char *)ca->users[i]);
    kf_free(ca->users);
    gw_ctx_free(x);
    kf_free(ca);
}

static void on_closed(const redisReply *r, const char *err, void *priv) {
    struct close_args *ca = priv;
    req_ctx *x = ca->x;
    /* {'S', prev state, customer, agent, group, resolution, sup...} */
    if (gw_script_result(x, r, err, 6) == 0) {
        ca->closed = 1;
        const char *prev = r->element[1]->str, *group = r->element[4]->str;
        snprintf(ca->prev, sizeof(ca->prev), "%s", prev);
        snprintf(ca->customer, sizeof(ca->customer), "%s", r->element[2]->str);
        snprintf(ca->agent, sizeof(ca->agent), "%s", r->element[3]->str);
        snprintf(ca->resolution, sizeof(ca->resolution), "%s", r->element[5]->str);
        char key[KF_KEY_MAX];
        if (!strcmp(prev, "waiting")) {
            kf_key_queue(key, group);
            gw_redis_kept_member(key, "ZREM", x->conv);
        }
        const char *users[64];
        size_t n = gw_members(r, 2, NULL, users, 2);
        n += gw_members(r, 6, NULL, users + n, 62);
        ca->users = kf_calloc(n ? n : 1, sizeof(char *));
        for (size_t i = 0; i < n; i++) {
            kf_key_user_convs(key, users[i]);
            gw_redis_kept_member(key, "SREM", x->conv);
            ca->users[i] = kf_strdup(users[i]);
        }
        ca->nusers = n;
    }
    if (--ca->pending == 0) close_finish(ca);
}

static void on_close_config(const redisReply *r, const char *err, void *priv) {
    struct close_args *ca = priv;
    if (!err && r->type == REDIS_REPLY_ARRAY && r->elements == 2) {
        if (r->element[0]->type == REDIS_REPLY_STRING) ca->rate_window_ms = atoll(r->element[0]->str);
        if (r->element[1]->type == REDIS_REPLY_STRING) ca->survey = strcmp(r->element[1]->str, "0") != 0;
    }
    if (--ca->pending == 0) close_finish(ca);
}

static void h_conv_close(gw_conn *c, json_t *msg) {
    static const char *const categories[] = {"consultation", "complaint", "suggestion", "fault"};
    const char *resolution, *category;
    if (gw_get_str(c, msg, "resolution", 0, 32, &resolution) < 0) return;
    if (gw_get_str(c, msg, "category", 0, 32, &category) < 0) return;
    if (c->ident.role == KF_ROLE_CUSTOMER && (resolution || category)) {
        gw_reply_error(c, json_object_get(msg, "req"), "bad_request",
                       "resolution and category are set by staff; a customer closes with conv alone");
        return;
    }
    if (!resolution) resolution = "resolved";
    if (strcmp(resolution, "resolved") && strcmp(resolution, "unresolved")) {
        gw_reply_error(c, json_object_get(msg, "req"), "bad_request",
                       "field 'resolution' must be resolved or unresolved");
        return;
    }
    if (category) {
        int ok = 0;
        for (size_t i = 0; i < 4; i++) ok |= !strcmp(category, categories[i]);
        if (!ok) {
            gw_reply_error(c, json_object_get(msg, "req"), "bad_request",
                           "field 'category' must be consultation, complaint, suggestion or fault");
            return;
        }
    }
    req_ctx *x;
    if (gw_get_conv(c, msg, &x) < 0) return;
    struct close_args *ca = kf_calloc(1, sizeof(*ca));
    ca->x = x;
    ca->pending = 2;
    ca->survey = 1;
    ca->rate_window_ms = 86400000;
    snprintf(ca->resolution, sizeof(ca->resolution), "%s", resolution);
    snprintf(ca->category, sizeof(ca->category), "%s", category ? category : "");
    char meta[KF_KEY_MAX], log[KF_KEY_MAX], now[24];
    kf_key_conv_meta(meta, x->conv);
    kf_key_conv_log(log, x->conv);
    snprintf(now, sizeof(now), "%lld", (long long)gw_now_ms());
    const char *argv[] = {meta, log, c->ident.sub, kf_role_name((kf_role)c->ident.role),
                          resolution, now, ca->category};
    kf_redis_script(gw->redis, kf_redis_slot(gw->redis, meta), "conv_close", on_closed, ca, 2, 7,
                    argv, NULL);
    kf_redis_cmd(gw->redis, kf_redis_slot(gw->redis, KF_KEY_STAFF_CONFIG), on_close_config, ca,
                 "HMGET %s rate_window_ms survey", KF_KEY_STAFF_CONFIG);
}

static void on_joined(const redisReply *r, const char *err, void *priv) {
    req_ctx *x = priv;
    gw_conn *c = x->c;
    if (gw_script_result(x, r, err, 2) < 0) { /* {'S', state, ...} */
        gw_reply_failure(x);
        gw_ctx_free(x);
        return;
    }
    char key[KF_KEY_MAX];
    kf_key_user_convs(key, c->ident.sub);
    if (strcmp(r->element[1]->str, "closed") != 0) gw_redis_kept_member(key, "SADD", x->conv);
    gw_lifecycle("joined", x->conv, c, NULL, NULL, NULL, NULL);
    gw_reply_ok(c, x->req, json_pack("{s:s, s:s}", "conv", x->conv, "state", r->element[1]->str));
    gw_ctx_free(x);
}

static void h_conv_join(gw_conn *c, json_t *msg) {
    req_ctx *x;
    if (gw_get_conv(c, msg, &x) < 0) return;
    char meta[KF_KEY_MAX];
    kf_key_conv_meta(meta, x->conv);
    const char *argv[] = {c->ident.sub};
    gw_conv_script(x, "conv_join", meta, on_joined, 1, argv, NULL);
}

/* ---- dispatch ---- */

const gw_handler gw_handlers_core[] = {
    {"conv.list", R_ANY, h_conv_list},     {"history", R_ANY, h_history},
    {"msg.send", R_ANY, h_msg_send},       {"typing", R_ANY, h_typing},
    {"read", R_ANY, h_read},               {"conv.open", R_CUST, h_conv_open},
    {"queue.list", R_STAFF, h_queue_list}, {"conv.accept", R_STAFF, h_conv_accept},
    {"conv.close", R_CUST | R_STAFF, h_conv_close}, {"conv.join", R_SUP | R_ADMIN, h_conv_join},
    {NULL, 0, NULL},
};

/* Every module's request table; a type is looked up in order. */
static const gw_handler *const handler_tables[] = {gw_handlers_core, gw_handlers_agent,
                                                     gw_handlers_stats, gw_handlers_qa,
                                                     gw_handlers_callback, gw_handlers_alerts,
                                                     NULL};

void gw_handle_frame(gw_conn *c, json_t *msg) {
    json_t *type = json_object_get(msg, "type");
    json_t *req = json_object_get(msg, "req");
    if (req && !json_is_string(req) && !json_is_integer(req)) {
        gw_reply_error(c, NULL, "bad_request", "field 'req' must be a string or an integer");
        goto out;
    }
    if (req && json_is_string(req) && json_string_length(req) > 64) {
        gw_reply_error(c, NULL, "bad_request", "field 'req' is longer than 64 bytes");
        goto out;
    }
    if (!type || !json_is_string(type)) {
        gw_reply_error(c, req, "bad_request", "missing string field 'type'");
        goto out;
    }
    const char *t = json_string_value(type);
    if (!strcmp(t, "ping")) {
        h_ping(c, msg);
        goto out;
    }
    if (!strcmp(t, "hello")) {
        gw_auth_hello(c, msg);
        goto out;
    }
    if (gw_conn_authenticating(c)) {
        /* A client whose very first frame is a request never meant to authenticate. */
        gw_reply_error(c, req, "unauthorized", "authenticate first: send hello with a token");
        if (c->state == CONN_NEW) gw_conn_close(c, CLOSE_HELLO_EXPECTED, 4400, "hello expected");
        goto out;
    }
    if (!gw_conn_alive(c)) goto out;
    if (gw_token_expired(c)) {
        gw_reply_error(c, req, "unauthorized", "token expired: send hello with a fresh token");
        goto out;
    }
    for (const gw_handler *const *tab = handler_tables; *tab; tab++)
    for (const gw_handler *h = *tab; h->type; h++) {
        if (strcmp(h->type, t) != 0) continue;
        if (!(h->roles & (1u << c->ident.role))) {
            char m[96];
            snprintf(m, sizeof(m), "a %s may not %s", kf_role_name((kf_role)c->ident.role), t);
            gw_reply_error(c, req, "forbidden", m);
        } else {
            h->fn(c, msg);
        }
        goto out;
    }
    gw_reply_error(c, req, "bad_request", "unknown type");
out:
    /* a frame was handled: a request without hello is answered from now on, no longer closed */
    if (c->state == CONN_NEW) gw_conn_set_state(c, CONN_AUTHENTICATING);
    json_decref(msg);
}
