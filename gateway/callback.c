/* Call-back task requests: callback.list (supervisors and admins see every task, agents the
 * ones assigned to them), callback.assign (supervisors and admins) and callback.done (the
 * assignee, or a supervisor or admin). Tasks live under kefu:{cb}: and change only through
 * lua/redis/callback_task.lua, which answers not_found, conflict and forbidden itself; every
 * change then joins the conversation's record as a kept write (the request was answered). */
#include "callback.h"

#include <stdio.h>
#include <string.h>

#include "agent.h"
#include "gateway.h"
#include "kefu/alloc.h"
#include "kefu/keys.h"
#include "kefu/log.h"
#include "kefu/redis.h"
#include "kefu/token.h"

#define TASK_MAX 96
#define NOTE_MAX 1024
#define LIST_MAX 500
#define DONE_KEEP_MS (30LL * 86400000) /* done tasks are listed this long */

struct cb_req {
    req_ctx *x;
    char task[TASK_MAX + 1];
    char agent[KF_SUB_MAX + 1];
    char *note;
    int pending, known, failed; /* callback.assign: staff domains asked, saying yes, failing */
};

static void cb_req_free(struct cb_req *q) {
    gw_ctx_free(q->x);
    kf_free(q->note);
    kf_free(q);
}

static void task_script(int argc, const char **argv, kf_redis_cb *cb, void *priv) {
    const char *av[12];
    av[0] = KF_KEY_CB_OPEN;
    for (int i = 0; i < argc; i++) av[1 + i] = argv[i];
    kf_redis_script(gw->redis, kf_redis_slot(gw->redis, KF_KEY_CB_OPEN), "callback_task", cb,
                    priv, 1, argc + 1, av, NULL);
}

/* The script's JSON answer in element 1, or NULL after answering the failure. */
static json_t *task_answer(req_ctx *x, const redisReply *r, const char *err) {
    kf_script_ans a;
    if (!kf_script_parse(r, err, 2, &a)) {
        if (a.kind == KF_SCRIPT_UNAVAILABLE)
            gw_reply_error(x->c, x->req, "unavailable", "storage unavailable, retry later");
        else if (a.kind == KF_SCRIPT_REFUSED)
            gw_reply_error(x->c, x->req, a.code, a.message ? a.message : a.code);
        else {
            if (a.detail) kf_error("callback_task: %s", a.detail);
            gw_reply_error(x->c, x->req, "internal", "internal error");
        }
        return NULL;
    }
    json_t *j = json_loadb(r->element[1]->str, r->element[1]->len, 0, NULL);
    if (!j) gw_reply_error(x->c, x->req, "internal", "internal error");
    return j;
}

/* A change of a task joins its conversation's record. */
static void record(const json_t *task, const char *ev, const gw_conn *c, const char *k,
                   const char *v) {
    const char *conv = json_string_value(json_object_get(task, "conv"));
    const char *id = json_string_value(json_object_get(task, "id"));
    if (!conv || !*conv || !id) return;
    char log[KF_KEY_MAX], ts[24];
    kf_key_conv_log(log, conv);
    snprintf(ts, sizeof(ts), "%lld", (long long)gw_now_ms());
    const char *argv[] = {"XADD", log, "*", "ev", ev, "by", c->ident.sub, "ts", ts, "task", id,
                          k, v};
    gw_redis_kept(log, 13, argv);
}

static int get_task(gw_conn *c, const json_t *msg, struct cb_req **qp) {
    const char *task;
    if (gw_get_str(c, msg, "task", 1, TASK_MAX, &task) < 0) return -1;
    if (!gw_id_chars_ok(task)) {
        gw_reply_error(c, json_object_get(msg, "req"), "bad_request", "field 'task' is not a task id");
        return -1;
    }
    struct cb_req *q = kf_calloc(1, sizeof(*q));
    q->x = gw_ctx_new(c, json_object_get(msg, "req"));
    snprintf(q->task, sizeof(q->task), "%s", task);
    *qp = q;
    return 0;
}

/* ---- callback.list ---- */

static void on_list(const redisReply *r, const char *err, void *priv) {
    req_ctx *x = priv;
    json_t *tasks = task_answer(x, r, err);
    if (tasks) {
        if (!json_is_array(tasks)) { /* an empty Lua table arrives as {} */
            json_decref(tasks);
            tasks = json_array();
        }
        gw_reply_ok(x->c, x->req, json_pack("{s:s, s:o}", "state", x->group, "tasks", tasks));
    }
    gw_ctx_free(x);
}

static void h_callback_list(gw_conn *c, json_t *msg) {
    static const char *const states[] = {"pending", "open", "assigned", "done", "all"};
    const char *state;
    long long limit;
    if (gw_get_str(c, msg, "state", 0, 16, &state) < 0) return;
    if (gw_get_int(c, msg, "limit", 100, 1, LIST_MAX, &limit) < 0) return;
    if (!state) state = "pending";
    int ok = 0;
    for (size_t i = 0; i < sizeof(states) / sizeof(states[0]); i++) ok |= !strcmp(state, states[i]);
    if (!ok) {
        gw_reply_error(c, json_object_get(msg, "req"), "bad_request",
                       "field 'state' must be pending, open, assigned, done or all");
        return;
    }
    req_ctx *x = gw_ctx_new(c, json_object_get(msg, "req"));
    snprintf(x->group, sizeof(x->group), "%s", state);
    char now[24], lim[24];
    snprintf(now, sizeof(now), "%lld", (long long)gw_now_ms());
    snprintf(lim, sizeof(lim), "%lld", limit);
    const char *argv[] = {"list", c->ident.sub, kf_role_name((kf_role)c->ident.role), state, now,
                          lim};
    task_script(6, argv, on_list, x);
}

/* ---- callback.assign ---- */

static void on_assigned(const redisReply *r, const char *err, void *priv) {
    struct cb_req *q = priv;
    json_t *task = task_answer(q->x, r, err);
    if (task) {
        GW_M->callback_assigned++;
        record(task, "callback_assigned", q->x->c, "agent", q->agent);
        const char *u[1] = {q->agent};
        gw_route_push(json_pack("{s:s, s:O}", "type", "callback.assigned", "task", task), u, 1,
                      NULL);
        gw_reply_ok(q->x->c, q->x->req, json_pack("{s:o}", "task", task));
    }
    cb_req_free(q);
}

/* One staff domain's answer; the agent is known when any domain registered it. */
static void on_agent_known(const redisReply *r, const char *err, void *priv) {
    struct cb_req *q = priv;
    if (err || r->type != REDIS_REPLY_INTEGER)
        q->failed = 1;
    else if (r->integer == 1)
        q->known = 1;
    if (--q->pending > 0) return;
    if (!q->known && q->failed) {
        gw_reply_error(q->x->c, q->x->req, "unavailable", "storage unavailable, retry later");
        cb_req_free(q);
        return;
    }
    if (!q->known) {
        gw_reply_error(q->x->c, q->x->req, "not_found", "no such agent");
        cb_req_free(q);
        return;
    }
    char now[24];
    snprintf(now, sizeof(now), "%lld", (long long)gw_now_ms());
    const char *argv[] = {"assign", q->task, q->x->c->ident.sub, q->agent, now};
    task_script(5, argv, on_assigned, q);
}

static void h_callback_assign(gw_conn *c, json_t *msg) {
    const char *agent;
    if (gw_get_str(c, msg, "agent", 1, KF_SUB_MAX, &agent) < 0) return;
    struct cb_req *q;
    if (get_task(c, msg, &q) < 0) return;
    snprintf(q->agent, sizeof(q->agent), "%s", agent);
    /* only a registered agent (one who ever set a status) can call back: in any staff domain */
    char doms[KF_STAFF_DOMAINS_MAX][KF_GROUP_MAX + 1], key[KF_KEY_MAX];
    size_t nd = gw_staff_domain_list(doms, KF_STAFF_DOMAINS_MAX);
    q->pending = (int)nd;
    for (size_t i = 0; i < nd; i++) {
        kf_key_staff_in(key, doms[i], "agents");
        kf_redis_cmd_key(gw->redis, key, on_agent_known, q, "SISMEMBER %s %s", key, q->agent);
    }
}

/* ---- callback.done ---- */

static void on_done(const redisReply *r, const char *err, void *priv) {
    struct cb_req *q = priv;
    json_t *task = task_answer(q->x, r, err);
    if (task) {
        GW_M->callback_done++;
        record(task, "callback_done", q->x->c, "note", q->note);
        gw_reply_ok(q->x->c, q->x->req, json_pack("{s:o}", "task", task));
    }
    cb_req_free(q);
}

static void h_callback_done(gw_conn *c, json_t *msg) {
    const char *note;
    if (gw_get_str(c, msg, "note", 0, NOTE_MAX, &note) < 0) return;
    struct cb_req *q;
    if (get_task(c, msg, &q) < 0) return;
    q->note = kf_strdup(note ? note : "");
    char now[24], keep[24];
    snprintf(now, sizeof(now), "%lld", (long long)gw_now_ms());
    snprintf(keep, sizeof(keep), "%lld", DONE_KEEP_MS);
    const char *argv[] = {"done", q->task, c->ident.sub, kf_role_name((kf_role)c->ident.role),
                          q->note, now, keep};
    task_script(7, argv, on_done, q);
}

const gw_handler gw_handlers_callback[] = {
    {"callback.list", R_STAFF, h_callback_list},
    {"callback.assign", R_SUP | R_ADMIN, h_callback_assign},
    {"callback.done", R_STAFF, h_callback_done},
    {NULL, 0, NULL},
};
