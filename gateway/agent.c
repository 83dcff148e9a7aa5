/* Agent-side requests: agent status and breaks (agent.status, break.approve, break.deny),
 * transfers (conv.transfer, group.transfers), ratings (conv.rate), a conversation's record
 * (conv.record) and supervisor monitoring (monitor.subscribe, monitor.unsubscribe).
 *
 * Agent state is decided by scripts on the slot of the agent's staff domain ({staff}, or
 * {staff:<domain>} when the worker's staff_domains lists the agent's groups; lua/redis/agent_*.lua,
 * ...), a conversation's by scripts in its own slot. A transfer spans both: check on the
 * conversation, reserve on the domain of its group, commit on the conversation, and undo the
 * reservation when the commit loses. Supervisors' requests that concern every agent (monitoring,
 * break decisions by agent id) go to every domain. The worker learns about changes from the
 * lifecycle stream. */
#include "agent.h"

#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gateway.h"
#include "keywords.h"
#include "request.h"
#include "kefu/alloc.h"
#include "kefu/keys.h"
#include "kefu/log.h"
#include "kefu/redis.h"
#include "kefu/service.h"

#define NOTE_MAX 512
#define COMMENT_MAX 1024
#define HISTORY_ON_TRANSFER 20

#define STAFF_REFRESH_MS 1000

/* ---- staff domains: read from the published configuration, every STAFF_REFRESH_MS ----
 * Requests must not wait for the configuration on every call (its slot may be the one that is
 * down), so the last answer is kept. Every domain holds a copy: when the default one does not
 * answer, the next read asks another domain's. */

static struct {
    char *spec;                 /* staff_domains as published ("" none); NULL: never read */
    char default_group[KF_GROUP_MAX + 1];
    char *routes;               /* routes and default_priority as published, for conv.open */
    char default_priority[8];
    char *canned;               /* canned_replies as published */
    char doms[KF_STAFF_DOMAINS_MAX][KF_GROUP_MAX + 1];
    size_t ndoms;
    size_t ask;                 /* the domain whose copy the next read asks */
    int reading, stopping;
    struct event *ev;
    struct staff_wait *waiting; /* requests that came before the first read answered */
} sd;

/* A request held until the staff domains are known: at a gateway's start, before the first
 * read of the configuration is answered. */
struct staff_wait {
    req_ctx *x;
    json_t *msg;
    void (*handler)(gw_conn *c, json_t *msg);
    struct staff_wait *next;
};

static void staff_read(void);

/* Holds the request when the staff domains were never read: 1 (the handler runs again once the
 * read is answered, or the request gets `unavailable`), else 0. */
static int staff_defer(gw_conn *c, json_t *msg, void (*handler)(gw_conn *, json_t *)) {
    if (sd.spec) return 0;
    struct staff_wait *w = kf_calloc(1, sizeof(*w));
    w->x = gw_ctx_new(c, json_object_get(msg, "req"));
    w->msg = json_incref(msg);
    w->handler = handler;
    w->next = sd.waiting;
    sd.waiting = w;
    staff_read();
    return 1;
}

static void staff_resume(void) {
    struct staff_wait *w = sd.waiting;
    sd.waiting = NULL;
    while (w) {
        struct staff_wait *next = w->next;
        if (sd.stopping || !gw_conn_open(w->x->c))
            ; /* nobody to answer */
        else if (sd.spec)
            w->handler(w->x->c, w->msg);
        else
            gw_reply_error(w->x->c, w->x->req, "unavailable",
                           "staff configuration unavailable, retry later");
        json_decref(w->msg);
        gw_ctx_free(w->x);
        w = next;
    }
}

static void on_staff_config(const redisReply *r, const char *err, void *priv) {
    (void)priv;
    sd.reading = 0;
    if (sd.stopping) {
        staff_resume();
        return;
    }
    if (err || r->type != REDIS_REPLY_ARRAY || r->elements != 6) {
        if (sd.ndoms) sd.ask = (sd.ask + 1) % sd.ndoms;
        kf_debug("staff domains not read (%s); keeping what was read before",
                 err ? err : r->type == REDIS_REPLY_ERROR ? r->str : "bad reply");
        staff_resume();
        return;
    }
    const redisReply *spec = r->element[0], *dg = r->element[1], *routes = r->element[2],
                     *prio = r->element[3], *canned = r->element[4], *kws = r->element[5];
    const char *text = spec->type == REDIS_REPLY_STRING ? spec->str : "";
    char e[160];
    if (!kf_staff_domains_valid(text, e, sizeof(e))) {
        kf_warn("published staff_domains ignored: %s", e);
        text = "";
    }
    if (!sd.spec || strcmp(sd.spec, text) != 0) {
        if (sd.spec) kf_info("staff domains now: %s", *text ? text : "(none)");
        kf_free(sd.spec);
        sd.spec = kf_strdup(text);
        sd.ndoms = kf_staff_domain_list(sd.spec, sd.doms, KF_STAFF_DOMAINS_MAX);
        sd.ask = 0;
    }
    snprintf(sd.default_group, sizeof(sd.default_group), "%s",
             dg->type == REDIS_REPLY_STRING && kf_group_valid(dg->str) ? dg->str : "default");
    kf_free(sd.routes);
    sd.routes = kf_strdup(routes->type == REDIS_REPLY_STRING ? routes->str : "");
    kf_free(sd.canned);
    sd.canned = kf_strdup(canned->type == REDIS_REPLY_STRING ? canned->str : "");
    gw_keywords_set(kws->type == REDIS_REPLY_STRING ? kws->str : "");
    snprintf(sd.default_priority, sizeof(sd.default_priority), "%s",
             prio->type == REDIS_REPLY_STRING && kf_priority_parse(prio->str) >= 0 ? prio->str
                                                                                   : "medium");
    staff_resume();
}

static void staff_read(void) {
    if (sd.reading || sd.stopping) return;
    char key[KF_KEY_MAX];
    kf_key_staff_in(key, sd.ndoms ? sd.doms[sd.ask % sd.ndoms] : NULL, "config");
    sd.reading = 1;
    kf_redis_cmd(gw->redis, kf_redis_slot(gw->redis, key), on_staff_config, NULL,
                 "HMGET %s staff_domains default_group routes default_priority canned_replies "
                 "trend_keywords", key);
}

static void on_staff_tick(evutil_socket_t fd, short what, void *arg) {
    (void)fd, (void)what, (void)arg;
    staff_read();
}

void gw_staff_start(void) {
    memset(&sd, 0, sizeof(sd));
    snprintf(sd.default_group, sizeof(sd.default_group), "default");
    sd.ev = event_new(gw->base, -1, EV_PERSIST, on_staff_tick, NULL);
    struct timeval tv = {STAFF_REFRESH_MS / 1000, (STAFF_REFRESH_MS % 1000) * 1000};
    event_add(sd.ev, &tv);
    staff_read();
}

void gw_staff_stop(void) {
    sd.stopping = 1;
    staff_resume();
    if (sd.ev) event_free(sd.ev);
    sd.ev = NULL;
    kf_free(sd.spec);
    kf_free(sd.routes);
    kf_free(sd.canned);
    sd.spec = sd.routes = sd.canned = NULL;
    gw_keywords_stop();
}

int gw_staff_routing(const char **routes, const char **group, const char **priority) {
    if (!sd.spec) return 0;
    *routes = sd.routes ? sd.routes : "";
    *group = sd.default_group;
    *priority = sd.default_priority;
    return 1;
}

const char *gw_staff_domain(const char *group, char *out) {
    if (!sd.spec) return NULL;
    return kf_staff_domain_of(sd.spec, group && *group ? group : sd.default_group, out,
                              KF_GROUP_MAX + 1);
}

size_t gw_staff_domain_list(char (*out)[KF_GROUP_MAX + 1], size_t max) {
    if (sd.ndoms == 0) return kf_staff_domain_list(NULL, out, max);
    size_t n = sd.ndoms < max ? sd.ndoms : max;
    memcpy(out, sd.doms, n * sizeof(sd.doms[0]));
    return n;
}

/* The domain of a request's group, or an `unavailable` answer while the staff domains were never
 * read (NULL then). */
static const char *domain_or_reply(gw_conn *c, json_t *req, const char *group, char *out) {
    const char *d = gw_staff_domain(group, out);
    if (!d) gw_reply_error(c, req, "unavailable", "staff configuration not read yet, retry later");
    return d;
}

/* ---- helpers ---- */

static void staff_script(const char *domain, const char *name, kf_redis_cb *cb, void *priv,
                         int argc, const char **argv) {
    kf_staff_script_in(gw->redis, domain, name, cb, priv, argc, argv);
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

void gw_agent_release_in(const char *agent, const char *conv, const char *domain) {
    if (!agent || !*agent) return;
    char now[24];
    now_str(now);
    const char *argv[] = {"remove", agent, conv, now};
    staff_script(domain, "agent_load", on_released, NULL, 4, argv);
}

struct release {
    char agent[KF_SUB_MAX + 1];
    char conv[72];
};

static void on_release_group(const redisReply *r, const char *err, void *priv) {
    struct release *rl = priv;
    char dom[KF_GROUP_MAX + 1];
    if (!err && r->type != REDIS_REPLY_ERROR && !sd.stopping &&
        gw_staff_domain(r->type == REDIS_REPLY_STRING ? r->str : NULL, dom))
        gw_agent_release_in(rl->agent, rl->conv, dom);
    /* else the worker releases it when it reads the close (worker/events.c) */
    kf_free(rl);
}

void gw_agent_release(const char *agent, const char *conv) {
    if (!agent || !*agent) return;
    if (!sd.spec || !*sd.spec) {
        gw_agent_release_in(agent, conv, NULL);
        return;
    }
    /* the domain of the conversation's group holds the agent's load */
    struct release *rl = kf_calloc(1, sizeof(*rl));
    snprintf(rl->agent, sizeof(rl->agent), "%s", agent);
    snprintf(rl->conv, sizeof(rl->conv), "%s", conv);
    char meta[KF_KEY_MAX];
    kf_key_conv_meta(meta, conv);
    kf_redis_cmd_key(gw->redis, meta, on_release_group, rl, "HGET %s group", meta);
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
    if (staff_defer(c, msg, h_agent_status)) return;
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
    /* Every group of the agent is in one staff domain, whose slot decides its breaks and holds
     * its load; skills across two would need two slots at once, so they are refused. */
    char dom[KF_GROUP_MAX + 1], other[KF_GROUP_MAX + 1];
    if (!sd.spec) {
        gw_reply_error(c, req, "unavailable", "staff configuration not read yet, retry later");
        return;
    }
    if (kf_staff_domain_of_groups(sd.spec, c->ident.skills, sd.default_group, dom, other,
                                  sizeof(dom)) < 0) {
        char m[160];
        snprintf(m, sizeof(m),
                 "the token's skills span staff domains %s and %s; an agent's groups must all "
                 "be in one staff domain", dom, other);
        gw_reply_error(c, req, "forbidden", m);
        return;
    }
    req_ctx *x = gw_ctx_new(c, req);
    char now[24], max[16];
    now_str(now);
    snprintf(max, sizeof(max), "%u", (unsigned)c->ident.max_chats);
    const char *argv[] = {c->ident.sub, c->ident.name, c->ident.skills ? c->ident.skills : "", max,
                          status, reason ? reason : "", now,
                          kf_role_name((kf_role)c->ident.role)};
    staff_script(dom, "agent_status", on_status, x, 8, argv);
}

/* ---- break.approve / break.deny ----
 * The request names the agent only, so every staff domain is asked: the agent is registered in
 * one, the others answer not_found. */

struct decide {
    req_ctx *x;
    int approve;
    char agent[KF_SUB_MAX + 1];
    char *note;
    int pending;         /* domains not answered yet */
    int unavailable;     /* some domain could not answer */
    int no_break;        /* some domain knows the agent, without a pending request */
    json_t *won;         /* the answer of the domain that decided */
    char *refusal_code, *refusal_msg; /* another refusal than not_found */
};

static void decide_finish(struct decide *d) {
    req_ctx *x = d->x;
    json_t *j = d->won;
    if (!j) {
        if (d->refusal_code)
            gw_reply_error(x->c, x->req, d->refusal_code, d->refusal_msg);
        else if (d->unavailable)
            gw_reply_error(x->c, x->req, "unavailable", "storage unavailable, retry later");
        else
            gw_reply_error(x->c, x->req, "not_found",
                           d->no_break ? "the agent has no pending break request"
                                       : "no such agent");
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
    kf_free(d->refusal_code);
    kf_free(d->refusal_msg);
    kf_free(d);
}

static void on_decided(const redisReply *r, const char *err, void *priv) {
    struct decide *d = priv;
    kf_script_ans a;
    json_t *j = kf_script_parse(r, err, 1, &a) ? script_json(r, 1) : NULL;
    if (j) {
        if (d->won) json_decref(d->won); /* registered in two domains: either answer will do */
        d->won = j;
    } else if (a.kind == KF_SCRIPT_REFUSED && !strcmp(a.code, "not_found")) {
        if (a.message && strstr(a.message, "pending")) d->no_break = 1;
    } else if (a.kind == KF_SCRIPT_REFUSED) {
        kf_free(d->refusal_code);
        kf_free(d->refusal_msg);
        d->refusal_code = kf_strdup(a.code);
        d->refusal_msg = kf_strdup(a.message ? a.message : a.code);
    } else {
        if (a.kind == KF_SCRIPT_BROKEN && a.detail) kf_error("redis script error: %s", a.detail);
        d->unavailable = 1;
    }
    if (--d->pending == 0) decide_finish(d);
}

static void decide(gw_conn *c, json_t *msg, int approve) {
    const char *agent, *note = NULL;
    json_t *req = json_object_get(msg, "req");
    if (gw_get_str(c, msg, "agent", 1, KF_SUB_MAX, &agent) < 0) return;
    if (!approve && gw_get_str(c, msg, "note", 0, NOTE_MAX, &note) < 0) return;
    if (!sd.spec) {
        gw_reply_error(c, req, "unavailable", "staff configuration not read yet, retry later");
        return;
    }
    struct decide *d = kf_calloc(1, sizeof(*d));
    d->x = gw_ctx_new(c, req);
    d->approve = approve;
    snprintf(d->agent, sizeof(d->agent), "%s", agent);
    d->note = note ? kf_strdup(note) : NULL;
    char now[24];
    now_str(now);
    const char *argv[] = {agent, approve ? "approve" : "deny", now};
    size_t n = sd.ndoms ? sd.ndoms : 1;
    d->pending = (int)n;
    for (size_t i = 0; i < n; i++)
        staff_script(sd.ndoms ? sd.doms[i] : NULL, "break_decide", on_decided, d, 3, argv);
}

static void h_break_approve(gw_conn *c, json_t *msg) {
    if (!staff_defer(c, msg, h_break_approve)) decide(c, msg, 1);
}
static void h_break_deny(gw_conn *c, json_t *msg) {
    if (!staff_defer(c, msg, h_break_deny)) decide(c, msg, 0);
}

/* ---- conv.transfer: check (conv) -> reserve (staff) -> commit (conv) [-> undo (staff)] ----
 * The staff steps run in the staff domain of the conversation's group: its agents are the only
 * ones a transfer to an agent may reach. A transfer to a group of another domain only puts the
 * conversation in that group's queue (the queues are per group, in no domain), once that
 * domain says the group exists; that domain's agents then get it like any waiting one. */

struct transfer {
    req_ctx *x;
    char to_agent[KF_SUB_MAX + 1];
    char to_group[KF_GROUP_MAX + 1];
    char from_agent[KF_SUB_MAX + 1];
    char from_group[KF_GROUP_MAX + 1];
    char from_dom[KF_GROUP_MAX + 1]; /* staff domain of from_group */
    char to_dom[KF_GROUP_MAX + 1];   /* staff domain of to_group */
    char customer[KF_SUB_MAX + 1];
    char *note;
    int takeover;     /* a supervisor or admin transfers it to themself */
    json_t *target;   /* reserved agent's state (to an agent; NULL when a supervisor who is
                       * not registered as an agent takes it over) */
    json_t *monitors;
};

static void transfer_free(struct transfer *t) {
    gw_ctx_free(t->x);
    kf_free(t->note);
    if (t->target) json_decref(t->target);
    if (t->monitors) json_decref(t->monitors);
    kf_free(t);
}

/* The new agent's display name: its registration's, or the token's when a supervisor who never
 * registered as an agent takes it over. */
static const char *transfer_name(const struct transfer *t) {
    const char *name = t->target ? json_string_value(json_object_get(t->target, "name")) : NULL;
    if (!name && t->takeover) name = t->x->c->ident.name;
    return name && *name ? name : t->to_agent;
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
    gw_agent_release_in(t->from_agent, x->conv, t->from_dom);
    snprintf(seq, sizeof(seq), "%lld", (long long)json_integer_value(json_object_get(view, "seq")));
    gw_lifecycle("transferred", x->conv, c, "agent", t->to_agent, "seq", seq);
    const char *name = transfer_name(t);
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
                            name, "transferred", 1, "from", t->from_agent),
                  users, n, c);
    if (t->target) gw_monitor_push(kf_push_agent_monitor(t->target), t->monitors);
}

static void transfer_done_group(struct transfer *t, json_t *view) {
    req_ctx *x = t->x;
    gw_conn *c = x->c;
    char key[KF_KEY_MAX];
    kf_key_user_convs(key, t->from_agent);
    gw_redis_kept_member(key, "SREM", x->conv);
    gw_agent_release_in(t->from_agent, x->conv, t->from_dom);
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
            staff_script(t->from_dom, "agent_load", on_transfer_undone, NULL, 4, argv);
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

static void transfer_commit(struct transfer *t);
static void on_transfer_group_known(const redisReply *r, const char *err, void *priv);

static void on_transfer_reserved(const redisReply *r, const char *err, void *priv) {
    struct transfer *t = priv;
    kf_script_ans a;
    json_t *j = kf_script_parse(r, err, 1, &a) ? script_json(r, 1) : NULL;
    if (!j) {
        if (t->to_agent[0] && a.kind == KF_SCRIPT_REFUSED && !strcmp(a.code, "not_found") &&
            sd.ndoms > 1) {
            char m[160];
            snprintf(m, sizeof(m), "no such agent in staff domain %s (the conversation's)",
                     t->from_dom);
            gw_reply_error(t->x->c, t->x->req, "not_found", m);
        } else {
            reply_script_failure(t->x, &a);
        }
        transfer_free(t);
        return;
    }
    t->monitors = json_incref(json_object_get(j, "monitors"));
    json_t *target = json_object_get(j, "target");
    if (target) t->target = json_incref(target);
    json_decref(j);
    if (t->to_group[0] && strcmp(t->from_dom, t->to_dom) != 0) {
        /* another domain's group: it must exist there */
        char key[KF_KEY_MAX];
        kf_key_staff_in(key, t->to_dom, "groups");
        kf_redis_cmd(gw->redis, kf_redis_slot(gw->redis, key), on_transfer_group_known, t,
                     "SISMEMBER %s %s", key, t->to_group);
        return;
    }
    transfer_commit(t);
}

static void on_transfer_group_known(const redisReply *r, const char *err, void *priv) {
    struct transfer *t = priv;
    if (err || r->type != REDIS_REPLY_INTEGER) {
        gw_reply_error(t->x->c, t->x->req, "unavailable", "storage unavailable, retry later");
        transfer_free(t);
    } else if (r->integer == 0) {
        gw_reply_error(t->x->c, t->x->req, "not_found", "no such group");
        transfer_free(t);
    } else {
        transfer_commit(t);
    }
}

static void transfer_commit(struct transfer *t) {
    gw_conn *c = t->x->c;
    char now[24], hist[8];
    now_str(now);
    snprintf(hist, sizeof(hist), "%d", HISTORY_ON_TRANSFER);
    const char *name = t->to_agent[0] ? transfer_name(t) : "";
    const char *argv[] = {t->to_agent[0] ? "agent" : "group",
                          c->ident.sub,
                          kf_role_name((kf_role)c->ident.role),
                          t->from_agent,
                          t->to_agent,
                          name,
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
    if (!gw_staff_domain(t->from_group, t->from_dom) ||
        (t->to_group[0] && !gw_staff_domain(t->to_group, t->to_dom))) {
        gw_reply_error(c, t->x->req, "unavailable", "staff configuration not read yet, retry later");
        transfer_free(t);
        return;
    }
    int other = t->to_group[0] && strcmp(t->from_dom, t->to_dom) != 0;
    char now[24];
    now_str(now);
    const char *argv[] = {t->from_group, kf_role_name((kf_role)c->ident.role), t->to_agent,
                          t->to_group, t->x->conv, now, t->from_agent, other ? "1" : "",
                          t->takeover ? "1" : ""};
    staff_script(t->from_dom, "transfer_reserve", on_transfer_reserved, t, 9, argv);
}

static void h_conv_transfer(gw_conn *c, json_t *msg) {
    json_t *req = json_object_get(msg, "req");
    if (staff_defer(c, msg, h_conv_transfer)) return;
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
    /* To oneself, by a supervisor or admin: taking the conversation over (DOMAIN: a supervisor
     * may join or take over). They need not be available agents; see transfer_reserve.lua. */
    t->takeover = to_agent && !strcmp(to_agent, c->ident.sub) &&
                  (c->ident.role == KF_ROLE_SUPERVISOR || c->ident.role == KF_ROLE_ADMIN);
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
    if (staff_defer(c, msg, h_group_transfers)) return;
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
    /* the wording lives in the group's staff domain, where transfer_reserve.lua reads it */
    char dom[KF_GROUP_MAX + 1], key[KF_KEY_MAX];
    if (!domain_or_reply(c, req, group, dom)) return;
    kf_key_staff_in(key, dom, "notransfer");
    unsigned slot = kf_redis_slot(gw->redis, key);
    req_ctx *x = gw_ctx_new(c, req);
    snprintf(x->group, sizeof(x->group), "%s", group);
    x->limit = json_is_true(allowed);
    if (x->limit)
        kf_redis_cmd(gw->redis, slot, on_policy_set, x, "HDEL %s %s", key, group);
    else
        kf_redis_cmd(gw->redis, slot, on_policy_set, x, "HSET %s %s %s", key, group,
                     message ? message : "");
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
    kf_redis_cmd(gw->redis, kf_redis_slot(gw->redis, KF_KEY_STAFF_CONFIG), on_rate_window, rt,
                 "HGET %s rate_window_ms", KF_KEY_STAFF_CONFIG);
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
    json_t *un = json_object_get(s->snap, "unavailable_domains");
    if (json_array_size(un)) json_object_set(a, "unavailable_domains", un);
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

/* Every staff domain keeps its own list of monitoring supervisors (its scripts read it in their
 * slot), so a subscription is written to each, and the snapshot is the union of theirs. A domain
 * that cannot answer is named in unavailable_domains; its agents' changes reach the supervisor
 * once it is back and the subscription is renewed. */
struct mfan {
    req_ctx *x;
    int pending, answered, unsubscribe;
    json_t *agents, *breaks, *groups, *notransfer, *unavailable;
    json_int_t expires;
    kf_script_ans fail; /* the last failure; its code and message point at the copies below */
    char fail_code[24], fail_msg[160];
};

static int by_agent(const void *a, const void *b) {
    const char *x = json_string_value(json_object_get(*(json_t *const *)a, "agent"));
    const char *y = json_string_value(json_object_get(*(json_t *const *)b, "agent"));
    return strcmp(x ? x : "", y ? y : "");
}

static int by_since(const void *a, const void *b) {
    json_int_t x = json_integer_value(json_object_get(*(json_t *const *)a, "since"));
    json_int_t y = json_integer_value(json_object_get(*(json_t *const *)b, "since"));
    return x < y ? -1 : x > y;
}

static int by_string(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static void snapshot_start(req_ctx *x, json_t *j);

static void mfan_finish(struct mfan *m) {
    req_ctx *x = m->x;
    if (m->answered == 0) {
        m->fail.code = m->fail_code;
        m->fail.message = m->fail_msg;
        reply_script_failure(x, &m->fail);
        gw_ctx_free(x);
    } else if (m->unsubscribe) {
        gw_reply_ok(x->c, x->req, NULL);
        gw_ctx_free(x);
    } else {
        /* agents by id, groups by name, breaks oldest first, as one domain's script has them */
        size_t na = json_array_size(m->agents), ng = json_object_size(m->groups);
        size_t nb = json_array_size(m->breaks);
        json_t **av = kf_calloc(na + 1, sizeof(*av)), **bv = kf_calloc(nb + 1, sizeof(*bv));
        const char **gv = kf_calloc(ng + 1, sizeof(*gv));
        for (size_t i = 0; i < na; i++) av[i] = json_array_get(m->agents, i);
        qsort(av, na, sizeof(*av), by_agent);
        for (size_t i = 0; i < nb; i++) bv[i] = json_array_get(m->breaks, i);
        qsort(bv, nb, sizeof(*bv), by_since);
        size_t k = 0;
        const char *g;
        json_t *v;
        json_object_foreach(m->groups, g, v) gv[k++] = g;
        qsort(gv, ng, sizeof(*gv), by_string);
        json_t *agents = json_array(), *groups = json_array(), *breaks = json_array();
        for (size_t i = 0; i < na; i++) json_array_append(agents, av[i]);
        for (size_t i = 0; i < nb; i++) json_array_append(breaks, bv[i]);
        for (size_t i = 0; i < ng; i++) json_array_append_new(groups, json_string(gv[i]));
        kf_free(av);
        kf_free(bv);
        kf_free(gv);
        json_t *j = json_pack("{s:o, s:o, s:o, s:O, s:I, s:O}", "agents", agents, "breaks",
                              breaks, "groups", groups, "notransfer", m->notransfer,
                              "expires_at", m->expires, "unavailable_domains", m->unavailable);
        snapshot_start(x, j);
    }
    json_decref(m->agents);
    json_decref(m->breaks);
    json_decref(m->groups);
    json_decref(m->notransfer);
    json_decref(m->unavailable);
    kf_free(m);
}

struct mfan_one {
    struct mfan *m;
    char dom[KF_GROUP_MAX + 1];
};

static void on_snapshot(const redisReply *r, const char *err, void *priv) {
    struct mfan_one *o = priv;
    struct mfan *m = o->m;
    kf_script_ans a;
    json_t *j = kf_script_parse(r, err, 1, &a) ? script_json(r, 1) : NULL;
    if (j || a.kind == KF_SCRIPT_OK) {
        m->answered++;
        size_t i;
        json_t *v;
        json_array_foreach(json_object_get(j, "agents"), i, v) json_array_append(m->agents, v);
        json_array_foreach(json_object_get(j, "breaks"), i, v) json_array_append(m->breaks, v);
        json_array_foreach(json_object_get(j, "groups"), i, v)
            if (json_is_string(v)) json_object_set(m->groups, json_string_value(v), json_true());
        json_t *nt = json_object_get(j, "notransfer");
        if (json_is_object(nt)) json_object_update(m->notransfer, nt);
        json_int_t exp = json_integer_value(json_object_get(j, "expires_at"));
        if (exp > m->expires) m->expires = exp;
    } else {
        if (a.kind == KF_SCRIPT_BROKEN && a.detail) kf_error("redis script error: %s", a.detail);
        json_array_append_new(m->unavailable, json_string(o->dom));
        m->fail.kind = a.kind;
        snprintf(m->fail_code, sizeof(m->fail_code), "%s", a.code ? a.code : "internal");
        snprintf(m->fail_msg, sizeof(m->fail_msg), "%s", a.message ? a.message : m->fail_code);
    }
    if (j) json_decref(j);
    kf_free(o);
    if (--m->pending == 0) mfan_finish(m);
}

static void snapshot_start(req_ctx *x, json_t *j) {
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
    json_t *req = json_object_get(msg, "req");
    if (!sd.spec) {
        gw_reply_error(c, req, "unavailable", "staff configuration not read yet, retry later");
        return;
    }
    struct mfan *m = kf_calloc(1, sizeof(*m));
    m->x = gw_ctx_new(c, req);
    m->unsubscribe = !strcmp(op, "unsubscribe");
    m->agents = json_array();
    m->breaks = json_array();
    m->groups = json_object();
    m->notransfer = json_object();
    m->unavailable = json_array();
    char now[24];
    now_str(now);
    const char *argv[] = {op, c->ident.sub, now};
    size_t n = sd.ndoms ? sd.ndoms : 1;
    m->pending = (int)n;
    for (size_t i = 0; i < n; i++) {
        struct mfan_one *o = kf_calloc(1, sizeof(*o));
        o->m = m;
        snprintf(o->dom, sizeof(o->dom), "%s", sd.ndoms ? sd.doms[i] : KF_STAFF_DEFAULT);
        staff_script(o->dom, "monitor", on_snapshot, o, 3, argv);
    }
}

/* canned.list: the worker's canned_replies, "label=text|label=text", as [{label, text}]. Read
 * from the published configuration at each request (they are asked for once per sign-in), so a
 * change shows at once; when that read fails, the copy the last periodic read kept. */
static json_t *canned_parse(const char *p) {
    json_t *list = json_array();
    while (*p) {
        const char *end = strchr(p, '|');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        const char *eq = memchr(p, '=', len);
        size_t ll = eq ? (size_t)(eq - p) : 0;
        const char *text = eq ? eq + 1 : p;
        size_t tl = len - (size_t)(text - p);
        if (tl > 0)
            json_array_append_new(list, json_pack("{s:s%, s:s%}", "label", p, ll, "text", text, tl));
        p = end ? end + 1 : p + len;
    }
    return list;
}

static void on_canned(const redisReply *r, const char *err, void *priv) {
    req_ctx *x = priv;
    if (gw_conn_open(x->c)) {
        const char *text = !err && r->type == REDIS_REPLY_STRING ? r->str
                           : !err && r->type == REDIS_REPLY_NIL  ? ""
                           : sd.canned ? sd.canned : "";
        gw_reply_ok(x->c, x->req, json_pack("{s:o}", "replies", canned_parse(text)));
    }
    gw_ctx_free(x);
}

static void h_canned_list(gw_conn *c, json_t *msg) {
    if (staff_defer(c, msg, h_canned_list)) return;
    char key[KF_KEY_MAX];
    kf_key_staff_in(key, sd.ndoms ? sd.doms[sd.ask % sd.ndoms] : NULL, "config");
    kf_redis_cmd(gw->redis, kf_redis_slot(gw->redis, key), on_canned,
                 gw_ctx_new(c, json_object_get(msg, "req")), "HGET %s canned_replies", key);
}

static void h_monitor_subscribe(gw_conn *c, json_t *msg) {
    if (!staff_defer(c, msg, h_monitor_subscribe)) monitor(c, msg, "subscribe");
}
static void h_monitor_unsubscribe(gw_conn *c, json_t *msg) {
    if (!staff_defer(c, msg, h_monitor_unsubscribe)) monitor(c, msg, "unsubscribe");
}

const gw_handler gw_handlers_agent[] = {
    {"agent.status", R_STAFF, h_agent_status},
    {"break.approve", R_SUP | R_ADMIN, h_break_approve},
    {"break.deny", R_SUP | R_ADMIN, h_break_deny},
    {"conv.transfer", R_STAFF, h_conv_transfer},
    {"group.transfers", R_SUP | R_ADMIN, h_group_transfers},
    {"conv.rate", R_CUST, h_conv_rate},
    {"conv.record", R_STAFF, h_conv_record},
    {"canned.list", R_STAFF, h_canned_list},
    {"monitor.subscribe", R_SUP | R_ADMIN, h_monitor_subscribe},
    {"monitor.unsubscribe", R_SUP | R_ADMIN, h_monitor_unsubscribe},
    {NULL, 0, NULL},
};
