/* Agent-side requests: agent status and breaks (agent.status, break.approve, break.deny),
 * transfers (conv.transfer, group.transfers), ratings (conv.rate), a conversation's record
 * (conv.record) and supervisor monitoring (monitor.subscribe, monitor.unsubscribe).
 *
 * Agent state is decided by scripts on the {staff} slot (lua/redis/agent_*.lua, ...), a
 * conversation's by scripts in its own slot. A transfer spans both: check on the conversation,
 * reserve on {staff}, commit on the conversation, and undo the reservation when the commit
 * loses. The worker learns about changes from the lifecycle stream. */
#include "agent.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gateway.h"
#include "request.h"
#include "kefu/alloc.h"
#include "kefu/keys.h"
#include "kefu/log.h"
#include "kefu/redis.h"
#include "kefu/service.h"

#define NOTE_MAX 512
#define COMMENT_MAX 1024
#define HISTORY_ON_TRANSFER 20

/* ---- helpers ---- */

static unsigned staff_slot(void) { return kf_redis_slot(gw->redis, KF_KEY_STAFF_CONFIG); }

static void staff_script(const char *name, kf_redis_cb *cb, void *priv, int argc,
                         const char **argv) {
    kf_staff_script(gw->redis, name, cb, priv, argc, argv);
}

static void conv_script(const char *conv, const char *name, kf_redis_cb *cb, void *priv,
                        int argc, const char **argv) {
    kf_conv_script(gw->redis, conv, name, cb, priv, argc, argv);
}

static void now_str(char out[24]) { snprintf(out, 24, "%lld", (long long)gw_now_ms()); }

/* Answers a script call that did not give what the request needs: the script's refusal with its
 * own message, a transport failure with unavailable, anything else (a Redis error, a malformed
 * or incomplete answer) with internal. */
static void reply_script_failure(req_ctx *x, const kf_script_ans *a) {
    if (a->kind == KF_SCRIPT_UNAVAILABLE) {
        gw_reply_error(x->c, x->req, "unavailable", "storage unavailable, retry later");
    } else if (a->kind == KF_SCRIPT_REFUSED) {
        gw_reply_error(x->c, x->req, a->code, a->message ? a->message : a->code);
    } else {
        if (a->kind == KF_SCRIPT_BROKEN && a->detail) kf_error("redis script error: %s", a->detail);
        gw_reply_error(x->c, x->req, "internal", "internal error");
    }
}

/* The JSON document in element i of a script answer; NULL when absent or empty. */
static json_t *script_json(const redisReply *r, size_t i) {
    if (r->elements <= i || r->element[i]->type != REDIS_REPLY_STRING || r->element[i]->len == 0)
        return NULL;
    json_t *j = json_loadb(r->element[i]->str, r->element[i]->len, 0, NULL);
    if (!j) kf_error("script answer is not JSON");
    return j;
}

void gw_monitor_push(json_t *payload, const json_t *monitors) {
    const char *users[256];
    size_t n = kf_json_strings(monitors, users, 256);
    if (n == 0) {
        json_decref(payload);
        return;
    }
    gw_route_push(payload, users, n, NULL);
}

/* {"type":"agent.state", ...state} */
static json_t *agent_state_push(const json_t *state) {
    json_t *p = kf_push_agent_monitor(state);
    json_object_del(p, "kind");
    json_object_set_new(p, "type", json_string("agent.state"));
    return p;
}

/* Pushes an agent's new state to the agent (its connections but skip) and to monitors. */
static void announce_agent(const json_t *state, const json_t *monitors, const gw_conn *skip) {
    const char *agent = json_string_value(json_object_get(state, "agent"));
    if (!agent) return;
    const char *u[1] = {agent};
    gw_route_push(agent_state_push(state), u, 1, skip);
    gw_monitor_push(kf_push_agent_monitor(state), monitors);
}

static void on_released(const redisReply *r, const char *err, void *priv) {
    (void)priv;
    kf_script_ans a;
    if (!kf_script_parse(r, err, 1, &a)) return;
    json_t *j = script_json(r, 1);
    if (!j) return;
    if (json_integer_value(json_object_get(j, "changed")) > 0)
        gw_monitor_push(kf_push_agent_monitor(json_object_get(j, "self")),
                        json_object_get(j, "monitors"));
    json_decref(j);
}

void gw_agent_release(const char *agent, const char *conv) {
    if (!agent || !*agent) return;
    char now[24];
    now_str(now);
    const char *argv[] = {"remove", agent, conv, now};
    staff_script("agent_load", on_released, NULL, 4, argv);
}

/* ---- agent.status ---- */

static int one_of(const char *s, const char *const *set) {
    for (; *set; set++)
        if (!strcmp(s, *set)) return 1;
    return 0;
}

static const char *const statuses[] = {"available", "away", "offline", NULL};
static const char *const reasons[] = {"meal", "restroom", "other", "handover", NULL};

static void on_status(const redisReply *r, const char *err, void *priv) {
    req_ctx *x = priv;
    kf_script_ans a;
    char code = kf_script_parse(r, err, 1, &a);
    json_t *j = code ? script_json(r, 1) : NULL;
    if (!j) {
        reply_script_failure(x, &a);
        gw_ctx_free(x);
        return;
    }
    json_t *self = json_object_get(j, "self"), *mon = json_object_get(j, "monitors");
    json_t *ans = json_pack("{s:O, s:O, s:O, s:O, s:O}", "status", json_object_get(self, "status"),
                            "reason", json_object_get(self, "reason"), "pending",
                            json_object_get(self, "pending"), "load", json_object_get(self, "load"),
                            "max", json_object_get(self, "max"));
    if (code == 'Q') {
        json_object_set(ans, "message", json_object_get(j, "message"));
        gw_monitor_push(json_pack("{s:s, s:s, s:s, s:s, s:O, s:O}", "type", "monitor", "kind",
                                  "break", "state", "pending", "agent", x->c->ident.sub, "reason",
                                  json_object_get(self, "pending"), "message",
                                  json_object_get(j, "message")),
                        mon);
    }
    gw_reply_ok(x->c, x->req, ans);
    announce_agent(self, mon, x->c);
    size_t i;
    json_t *g;
    json_array_foreach(json_object_get(j, "granted"), i, g) {
        announce_agent(g, mon, NULL);
        gw_monitor_push(json_pack("{s:s, s:s, s:s, s:O, s:O}", "type", "monitor", "kind", "break",
                                  "state", "granted", "agent", json_object_get(g, "agent"),
                                  "reason", json_object_get(g, "reason")),
                        mon);
    }
    /* The worker assigns to agents that became available. */
    const char *st = json_string_value(json_object_get(self, "status"));
    gw_lifecycle("agent", "", x->c, "status", st ? st : "", "groups",
                 x->c->ident.skills ? x->c->ident.skills : "");
    json_decref(j);
    gw_ctx_free(x);
}

static void h_agent_status(gw_conn *c, json_t *msg) {
    json_t *req = json_object_get(msg, "req");
    const char *status, *reason;
    if (gw_get_str(c, msg, "status", 1, 16, &status) < 0) return;
    if (gw_get_str(c, msg, "reason", 0, 16, &reason) < 0) return;
    if (!one_of(status, statuses)) {
        gw_reply_error(c, req, "bad_request", "field 'status' must be available, away or offline");
        return;
    }
    if (!strcmp(status, "away")) {
        if (!reason || !one_of(reason, reasons)) {
            gw_reply_error(c, req, "bad_request",
                           "away needs a 'reason': meal, restroom, other or handover");
            return;
        }
    } else if (reason) {
        gw_reply_error(c, req, "bad_request", "field 'reason' goes with status away only");
        return;
    }
    req_ctx *x = gw_ctx_new(c, req);
    char now[24], max[16];
    now_str(now);
    snprintf(max, sizeof(max), "%u", (unsigned)c->ident.max_chats);
    const char *argv[] = {c->ident.sub, c->ident.name, c->ident.skills ? c->ident.skills : "", max,
                          status, reason ? reason : "", now,
                          kf_role_name((kf_role)c->ident.role)};
    staff_script("agent_status", on_status, x, 8, argv);
}

/* ---- break.approve / break.deny ---- */

struct decide {
    req_ctx *x;
    int approve;
    char agent[KF_SUB_MAX + 1];
    char *note;
};

static void on_decided(const redisReply *r, const char *err, void *priv) {
    struct decide *d = priv;
    req_ctx *x = d->x;
    kf_script_ans a;
    json_t *j = kf_script_parse(r, err, 1, &a) ? script_json(r, 1) : NULL;
    if (!j) {
        reply_script_failure(x, &a);
        goto out;
    }
    json_t *self = json_object_get(j, "self"), *mon = json_object_get(j, "monitors");
    const char *decision = d->approve ? "approved" : "denied";
    gw_reply_ok(x->c, x->req, json_pack("{s:s, s:O, s:s}", "agent", d->agent, "reason",
                                        json_object_get(j, "reason"), "decision", decision));
    const char *u[1] = {d->agent};
    json_t *push = json_pack("{s:s, s:O, s:s, s:s}", "type", "break.decision", "reason",
                             json_object_get(j, "reason"), "decision", decision, "by",
                             x->c->ident.sub);
    if (d->note) json_object_set_new(push, "note", json_string(d->note));
    gw_route_push(push, u, 1, NULL);
    if (d->approve) announce_agent(self, mon, NULL);
    gw_monitor_push(json_pack("{s:s, s:s, s:s, s:s, s:O, s:s}", "type", "monitor", "kind", "break",
                              "state", decision, "agent", d->agent, "reason",
                              json_object_get(j, "reason"), "by", x->c->ident.sub),
                    mon);
    json_decref(j);
out:
    gw_ctx_free(x);
    kf_free(d->note);
    kf_free(d);
}

static void decide(gw_conn *c, json_t *msg, int approve) {
    const char *agent, *note = NULL;
    if (gw_get_str(c, msg, "agent", 1, KF_SUB_MAX, &agent) < 0) return;
    if (!approve && gw_get_str(c, msg, "note", 0, NOTE_MAX, &note) < 0) return;
    struct decide *d = kf_calloc(1, sizeof(*d));
    d->x = gw_ctx_new(c, json_object_get(msg, "req"));
    d->approve = approve;
    snprintf(d->agent, sizeof(d->agent), "%s", agent);
    d->note = note ? kf_strdup(note) : NULL;
    char now[24];
    now_str(now);
    const char *argv[] = {agent, approve ? "approve" : "deny", now};
    staff_script("break_decide", on_decided, d, 3, argv);
}

static void h_break_approve(gw_conn *c, json_t *msg) { decide(c, msg, 1); }
static void h_break_deny(gw_conn *c, json_t *msg) { decide(c, msg, 0); }

/* ---- conv.transfer: check (conv) -> reserve (staff) -> commit (conv) [-> undo (staff)] ---- */

struct transfer {
    req_ctx *x;
    char to_agent[KF_SUB_MAX + 1];
    char to_group[KF_GROUP_MAX + 1];
    char from_agent[KF_SUB_MAX + 1];
    char from_group[KF_GROUP_MAX + 1];
    char customer[KF_SUB_MAX + 1];
    char *note;
    json_t *target;   /* reserved agent's state (to an agent) */
    json_t *monitors;
};

static void transfer_free(struct transfer *t) {
    gw_ctx_free(t->x);
    kf_free(t->note);
    if (t->target) json_decref(t->target);
    if (t->monitors) json_decref(t->monitors);
    kf_free(t);
}

static void on_transfer_undone(const redisReply *r, const char *err, void *priv) {
    (void)r, (void)priv;
    if (err) kf_warn("transfer: undoing a reservation failed: %s", err);
}

static void transfer_done_agent(struct transfer *t, json_t *view) {
    req_ctx *x = t->x;
    gw_conn *c = x->c;
    char key[KF_KEY_MAX], seq[24];
    kf_key_user_convs(key, t->from_agent);
    gw_redis_kept_member(key, "SREM", x->conv);
    kf_key_user_convs(key, t->to_agent);
    gw_redis_kept_member(key, "SADD", x->conv);
    gw_agent_release(t->from_agent, x->conv);
    snprintf(seq, sizeof(seq), "%lld", (long long)json_integer_value(json_object_get(view, "seq")));
    gw_lifecycle("transferred", x->conv, c, "agent", t->to_agent, "seq", seq);
    const char *name = json_string_value(json_object_get(t->target, "name"));
    gw_reply_ok(c, x->req, json_pack("{s:s, s:s, s:s}", "conv", x->conv, "state", "assigned",
                                     "agent", t->to_agent));
    json_t *push = kf_push_conv_assigned(x->conv, view);
    if (t->note) json_object_set_new(push, "note", json_string(t->note));
    const char *u[1] = {t->to_agent};
    gw_route_push(push, u, 1, NULL);
    const char *users[64];
    size_t n = 0;
    users[n++] = t->customer;
    users[n++] = t->from_agent;
    n += kf_json_strings(json_object_get(view, "sups"), users + n, 62);
    gw_route_push(json_pack("{s:s, s:s, s:s, s:s, s:s, s:b, s:s}", "type", "conv.state", "conv",
                            x->conv, "state", "assigned", "agent", t->to_agent, "agent_name",
                            name ? name : t->to_agent, "transferred", 1, "from", t->from_agent),
                  users, n, c);
    gw_monitor_push(kf_push_agent_monitor(t->target), t->monitors);
}

static void transfer_done_group(struct transfer *t, json_t *view) {
    req_ctx *x = t->x;
    gw_conn *c = x->c;
    char key[KF_KEY_MAX];
    kf_key_user_convs(key, t->from_agent);
    gw_redis_kept_member(key, "SREM", x->conv);
    gw_agent_release(t->from_agent, x->conv);
    /* Back in the queue with its original waiting time. */
    int prio = kf_priority_parse(json_string_value(json_object_get(view, "priority")));
    const char *qs = json_string_value(json_object_get(view, "queued_us"));
    long long queued = qs ? atoll(qs) : 0;
    if (queued <= 0) queued = (long long)gw_now_ms() * 1000;
    long long score = kf_queue_score(prio < 0 ? KF_PRIO_MEDIUM : (kf_priority)prio,
                                     (int)json_integer_value(json_object_get(view, "level")),
                                     queued);
    kf_key_queue(key, t->to_group);
    char sc[24];
    snprintf(sc, sizeof(sc), "%lld", score);
    const char *zargv[] = {"ZADD", key, sc, x->conv};
    gw_redis_kept(key, 4, zargv); /* answered ok below: must not be lost */
    gw_lifecycle("transferred", x->conv, c, "group", t->to_group, NULL, NULL);
    gw_reply_ok(c, x->req, json_pack("{s:s, s:s, s:s}", "conv", x->conv, "state", "waiting",
                                     "group", t->to_group));
    const char *users[64];
    size_t n = 0;
    users[n++] = t->customer;
    users[n++] = t->from_agent;
    n += kf_json_strings(json_object_get(view, "sups"), users + n, 62);
    const char *ticket = json_string_value(json_object_get(view, "ticket"));
    gw_route_push(json_pack("{s:s, s:s, s:s, s:s, s:s, s:b, s:s}", "type", "conv.state", "conv",
                            x->conv, "state", "waiting", "ticket", ticket ? ticket : "", "group",
                            t->to_group, "transferred", 1, "from", t->from_agent),
                  users, n, c);
}

static void on_transfer_committed(const redisReply *r, const char *err, void *priv) {
    struct transfer *t = priv;
    kf_script_ans a;
    json_t *view = kf_script_parse(r, err, 1, &a) ? script_json(r, 1) : NULL;
    if (!view) {
        if (t->to_agent[0]) {
            char now[24];
            now_str(now);
            const char *argv[] = {"remove", t->to_agent, t->x->conv, now};
            staff_script("agent_load", on_transfer_undone, NULL, 4, argv);
        }
        reply_script_failure(t->x, &a);
        transfer_free(t);
        return;
    }
    if (t->to_agent[0])
        transfer_done_agent(t, view);
    else
        transfer_done_group(t, view);
    json_decref(view);
    transfer_free(t);
}

static void on_transfer_reserved(const redisReply *r, const char *err, void *priv) {
    struct transfer *t = priv;
    kf_script_ans a;
    json_t *j = kf_script_parse(r, err, 1, &a) ? script_json(r, 1) : NULL;
    if (!j) {
        reply_script_failure(t->x, &a);
        transfer_free(t);
        return;
    }
    t->monitors = json_incref(json_object_get(j, "monitors"));
    json_t *target = json_object_get(j, "target");
    if (target) t->target = json_incref(target);
    json_decref(j);
    gw_conn *c = t->x->c;
    char now[24], hist[8];
    now_str(now);
    snprintf(hist, sizeof(hist), "%d", HISTORY_ON_TRANSFER);
    const char *name = t->target ? json_string_value(json_object_get(t->target, "name")) : "";
    const char *argv[] = {t->to_agent[0] ? "agent" : "group",
                          c->ident.sub,
                          kf_role_name((kf_role)c->ident.role),
                          t->from_agent,
                          t->to_agent,
                          name ? name : "",
                          t->to_group,
                          t->note ? t->note : "",
                          now,
                          "",
                          hist};
    conv_script(t->x->conv, "conv_transfer", on_transfer_committed, t, 11, argv);
}

static void on_transfer_checked(const redisReply *r, const char *err, void *priv) {
    struct transfer *t = priv;
    kf_script_ans a;
    if (!kf_script_parse(r, err, 4, &a)) { /* {'S', group, agent, customer} */
        reply_script_failure(t->x, &a);
        transfer_free(t);
        return;
    }
    gw_conn *c = t->x->c;
    snprintf(t->from_group, sizeof(t->from_group), "%s", r->element[1]->str);
    snprintf(t->from_agent, sizeof(t->from_agent), "%s", r->element[2]->str);
    snprintf(t->customer, sizeof(t->customer), "%s", r->element[3]->str);
    if (t->to_group[0] == '\0' && t->to_agent[0] == '\0') {
        gw_reply_error(c, t->x->req, "internal", "internal error");
        transfer_free(t);
        return;
    }
    char now[24];
    now_str(now);
    const char *argv[] = {t->from_group, kf_role_name((kf_role)c->ident.role), t->to_agent,
                          t->to_group, t->x->conv, now, t->from_agent};
    staff_script("transfer_reserve", on_transfer_reserved, t, 7, argv);
}

static void h_conv_transfer(gw_conn *c, json_t *msg) {
    json_t *req = json_object_get(msg, "req");
    const char *to_agent, *to_group, *note;
    if (gw_get_str(c, msg, "to_agent", 0, KF_SUB_MAX, &to_agent) < 0) return;
    if (gw_get_str(c, msg, "to_group", 0, KF_GROUP_MAX, &to_group) < 0) return;
    if (gw_get_str(c, msg, "note", 0, NOTE_MAX, &note) < 0) return;
    if ((to_agent && *to_agent) == (to_group && *to_group)) {
        gw_reply_error(c, req, "bad_request", "give exactly one of 'to_agent' and 'to_group'");
        return;
    }
    if (to_group && !kf_group_valid(to_group)) {
        gw_reply_error(c, req, "bad_request", "field 'to_group' must match [a-z0-9_-]{1,32}");
        return;
    }
    req_ctx *x;
    if (gw_get_conv(c, msg, &x) < 0) return;
    struct transfer *t = kf_calloc(1, sizeof(*t));
    t->x = x;
    if (to_agent) snprintf(t->to_agent, sizeof(t->to_agent), "%s", to_agent);
    if (to_group) snprintf(t->to_group, sizeof(t->to_group), "%s", to_group);
    t->note = note ? kf_strdup(note) : NULL;
    const char *argv[] = {"check", c->ident.sub, kf_role_name((kf_role)c->ident.role), "", "", "",
                          "", "", "0", "", "0"};
    conv_script(x->conv, "conv_transfer", on_transfer_checked, t, 11, argv);
}

/* ---- group.transfers: a supervisor forbids (or allows again) transfers out of a group ---- */

static void on_policy_set(const redisReply *r, const char *err, void *priv) {
    req_ctx *x = priv;
    if (err || r->type == REDIS_REPLY_ERROR)
        gw_reply_error(x->c, x->req, "unavailable", "storage unavailable, retry later");
    else
        gw_reply_ok(x->c, x->req, json_pack("{s:s, s:b}", "group", x->group, "allowed", x->limit));
    gw_ctx_free(x);
}

static void h_group_transfers(gw_conn *c, json_t *msg) {
    json_t *req = json_object_get(msg, "req");
    const char *group, *message;
    json_t *allowed = json_object_get(msg, "allowed");
    if (gw_get_str(c, msg, "group", 1, KF_GROUP_MAX, &group) < 0) return;
    if (gw_get_str(c, msg, "message", 0, NOTE_MAX, &message) < 0) return;
    if (!kf_group_valid(group)) {
        gw_reply_error(c, req, "bad_request", "field 'group' must match [a-z0-9_-]{1,32}");
        return;
    }
    if (!json_is_boolean(allowed)) {
        gw_reply_error(c, req, "bad_request", "field 'allowed' must be true or false");
        return;
    }
    req_ctx *x = gw_ctx_new(c, req);
    snprintf(x->group, sizeof(x->group), "%s", group);
    x->limit = json_is_true(allowed);
    if (x->limit)
        kf_redis_cmd(gw->redis, staff_slot(), on_policy_set, x, "HDEL %s %s",
                     KF_KEY_STAFF_NOTRANSFER, group);
    else
        kf_redis_cmd(gw->redis, staff_slot(), on_policy_set, x, "HSET %s %s %s",
                     KF_KEY_STAFF_NOTRANSFER, group, message ? message : "");
}

/* ---- conv.rate: the window comes from the published configuration ---- */

struct rate {
    req_ctx *x;
    long long stars;
    char *comment;
};

static void on_rated(const redisReply *r, const char *err, void *priv) {
    struct rate *rt = priv;
    req_ctx *x = rt->x;
    kf_script_ans a;
    if (!kf_script_parse(r, err, 1, &a)) {
        reply_script_failure(x, &a);
    } else {
        gw_reply_ok(x->c, x->req, json_pack("{s:s, s:I}", "conv", x->conv, "stars",
                                            (json_int_t)rt->stars));
        const char *users[64];
        size_t n = gw_members(r, 1, NULL, users, 64);
        json_t *p = json_pack("{s:s, s:s, s:I}", "type", "conv.rated", "conv", x->conv, "stars",
                              (json_int_t)rt->stars);
        if (rt->comment) json_object_set_new(p, "comment", json_string(rt->comment));
        gw_route_push(p, users, n, NULL);
        char stars[8];
        snprintf(stars, sizeof(stars), "%lld", rt->stars);
        gw_lifecycle("rated", x->conv, x->c, "stars", stars, NULL, NULL); /* for the worker */
    }
    gw_ctx_free(x);
    kf_free(rt->comment);
    kf_free(rt);
}

static void on_rate_window(const redisReply *r, const char *err, void *priv) {
    struct rate *rt = priv;
    req_ctx *x = rt->x;
    long long window = 86400000;
    if (!err && r->type == REDIS_REPLY_STRING) window = atoll(r->str);
    char stars[8], now[24], win[24];
    snprintf(stars, sizeof(stars), "%lld", rt->stars);
    snprintf(win, sizeof(win), "%lld", window);
    now_str(now);
    char meta[KF_KEY_MAX], log[KF_KEY_MAX];
    kf_key_conv_meta(meta, x->conv);
    kf_key_conv_log(log, x->conv);
    const char *argv[] = {meta, log, x->c->ident.sub, stars, rt->comment ? rt->comment : "", now,
                          win};
    kf_redis_script(gw->redis, kf_redis_slot(gw->redis, meta), "conv_rate", on_rated, rt, 2, 7,
                    argv, NULL);
}

static void h_conv_rate(gw_conn *c, json_t *msg) {
    long long stars;
    const char *comment;
    if (gw_get_int(c, msg, "stars", -1, 1, 5, &stars) < 0) return;
    if (stars < 0) {
        gw_reply_error(c, json_object_get(msg, "req"), "bad_request", "missing field 'stars'");
        return;
    }
    if (gw_get_str(c, msg, "comment", 0, COMMENT_MAX, &comment) < 0) return;
    req_ctx *x;
    if (gw_get_conv(c, msg, &x) < 0) return;
    struct rate *rt = kf_calloc(1, sizeof(*rt));
    rt->x = x;
    rt->stars = stars;
    rt->comment = comment ? kf_strdup(comment) : NULL;
    kf_redis_cmd(gw->redis, staff_slot(), on_rate_window, rt, "HGET %s rate_window_ms",
                 KF_KEY_STAFF_CONFIG);
}

/* ---- conv.record: the conversation's state changes ---- */

static void on_record_access(const redisReply *r, const char *err, void *priv) {
    req_ctx *x = priv;
    kf_script_ans a;
    x->access_ok = kf_script_parse(r, err, 1, &a) != 0;
    if (!x->access_ok) reply_script_failure(x, &a);
}

static void on_record(const redisReply *r, const char *err, void *priv) {
    req_ctx *x = priv;
    if (!x->access_ok) goto out;
    if (err || r->type != REDIS_REPLY_ARRAY) {
        gw_reply_error(x->c, x->req, "unavailable", "storage unavailable, retry later");
        goto out;
    }
    json_t *events = json_array();
    for (size_t i = 0; i < r->elements; i++) {
        const redisReply *e = r->element[i];
        if (e->type != REDIS_REPLY_ARRAY || e->elements != 2) continue;
        json_t *o = json_pack("{s:s}", "id", e->element[0]->str);
        const redisReply *kv = e->element[1];
        for (size_t k = 0; k + 1 < kv->elements; k += 2) {
            const char *f = kv->element[k]->str, *v = kv->element[k + 1]->str;
            if (!strcmp(f, "ts") || !strcmp(f, "seq") || !strcmp(f, "overdue_ms") ||
                !strcmp(f, "stars") || !strcmp(f, "score"))
                json_object_set_new(o, f, json_integer(atoll(v)));
            else
                json_object_set_new(o, f, json_string(v));
        }
        json_array_append_new(events, o);
    }
    gw_reply_ok(x->c, x->req, json_pack("{s:s, s:o}", "conv", x->conv, "events", events));
out:
    gw_ctx_free(x);
}

static void h_conv_record(gw_conn *c, json_t *msg) {
    req_ctx *x;
    if (gw_get_conv(c, msg, &x) < 0) return;
    char meta[KF_KEY_MAX], log[KF_KEY_MAX];
    kf_key_conv_meta(meta, x->conv);
    kf_key_conv_log(log, x->conv);
    const char *argv[] = {c->ident.sub, kf_role_name((kf_role)c->ident.role), "read"};
    /* Same slot, same connection: the access answer comes first. */
    gw_conv_script(x, "conv_access", meta, on_record_access, 3, argv, NULL);
    kf_redis_cmd(gw->redis, kf_redis_slot(gw->redis, meta), on_record, x,
                 "XRANGE %s - + COUNT 1000", log);
}

/* ---- monitor.subscribe / monitor.unsubscribe ---- */

struct snapshot {
    req_ctx *x;
    json_t *snap;
    json_t *groups; /* [{group, waiting, transfers}] */
    int pending;
};

static void snapshot_answer(struct snapshot *s) {
    json_t *a = json_pack("{s:O, s:O, s:O, s:o}", "agents", json_object_get(s->snap, "agents"),
                          "breaks", json_object_get(s->snap, "breaks"), "expires_at",
                          json_object_get(s->snap, "expires_at"), "groups", s->groups);
    json_t *br = json_object_get(a, "breaks");
    if (!json_is_array(br)) json_object_set_new(a, "breaks", json_array());
    if (!json_is_array(json_object_get(a, "agents"))) json_object_set_new(a, "agents", json_array());
    s->groups = NULL;
    gw_reply_ok(s->x->c, s->x->req, a);
    json_decref(s->snap);
    gw_ctx_free(s->x);
    kf_free(s);
}

struct group_len {
    struct snapshot *s;
    size_t index;
};

static void on_group_len(const redisReply *r, const char *err, void *priv) {
    struct group_len *gl = priv;
    struct snapshot *s = gl->s;
    json_t *g = json_array_get(s->groups, gl->index);
    json_object_set_new(g, "waiting",
                        json_integer(!err && r->type == REDIS_REPLY_INTEGER ? r->integer : -1));
    kf_free(gl);
    if (--s->pending == 0) snapshot_answer(s);
}

static void on_snapshot(const redisReply *r, const char *err, void *priv) {
    req_ctx *x = priv;
    kf_script_ans a;
    json_t *j = kf_script_parse(r, err, 1, &a) ? script_json(r, 1) : NULL;
    if (!j) {
        if (a.kind == KF_SCRIPT_OK)
            gw_reply_ok(x->c, x->req, NULL); /* unsubscribed */
        else
            reply_script_failure(x, &a);
        gw_ctx_free(x);
        return;
    }
    struct snapshot *s = kf_calloc(1, sizeof(*s));
    s->x = x;
    s->snap = j;
    s->groups = json_array();
    json_t *nt = json_object_get(j, "notransfer");
    const char *names[256];
    size_t n = kf_json_strings(json_object_get(j, "groups"), names, 256);
    for (size_t i = 0; i < n; i++) {
        json_t *g = json_pack("{s:s, s:I, s:b}", "group", names[i], "waiting", (json_int_t)0,
                              "transfers", json_object_get(nt, names[i]) == NULL);
        json_array_append_new(s->groups, g);
    }
    s->pending = (int)n;
    if (n == 0) {
        snapshot_answer(s);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        struct group_len *gl = kf_malloc(sizeof(*gl));
        gl->s = s;
        gl->index = i;
        char key[KF_KEY_MAX];
        kf_key_queue(key, names[i]);
        kf_redis_cmd_key(gw->redis, key, on_group_len, gl, "ZCARD %s", key);
    }
}

static void monitor(gw_conn *c, json_t *msg, const char *op) {
    req_ctx *x = gw_ctx_new(c, json_object_get(msg, "req"));
    char now[24];
    now_str(now);
    const char *argv[] = {op, c->ident.sub, now};
    staff_script("monitor", on_snapshot, x, 3, argv);
}

static void h_monitor_subscribe(gw_conn *c, json_t *msg) { monitor(c, msg, "subscribe"); }
static void h_monitor_unsubscribe(gw_conn *c, json_t *msg) { monitor(c, msg, "unsubscribe"); }

const gw_handler gw_handlers_agent[] = {
    {"agent.status", R_STAFF, h_agent_status},
    {"break.approve", R_SUP | R_ADMIN, h_break_approve},
    {"break.deny", R_SUP | R_ADMIN, h_break_deny},
    {"conv.transfer", R_STAFF, h_conv_transfer},
    {"group.transfers", R_SUP | R_ADMIN, h_group_transfers},
    {"conv.rate", R_CUST, h_conv_rate},
    {"conv.record", R_STAFF, h_conv_record},
    {"monitor.subscribe", R_SUP | R_ADMIN, h_monitor_subscribe},
    {"monitor.unsubscribe", R_SUP | R_ADMIN, h_monitor_unsubscribe},
    {NULL, 0, NULL},
};
