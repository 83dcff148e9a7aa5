/* Customers who left mid-conversation (DOMAIN.md, sensitive issues): when a customer's last
 * connection on a gateway closes, that gateway writes a `customer_left` lifecycle event. Its
 * worker schedules a check callback_grace_ms later in the sorted set kefu:{cb}:checks (member:
 * the customer, so leaving again pushes the one check later: ZADD GT). Any worker may run a due
 * check: lease_claim.lua hands each to one of them under a lease (sla_lease_ms), as SLA
 * deadlines are. The check looks at the customer's presence on every node: connected again
 * anywhere, nothing happens. Otherwise, for each of their conversations still waiting or
 * assigned, callback_check.lua records `customer_left` in the record (once per check), and
 * callback_task.lua creates the call-back task `<conv>-<due>` (once: created again it answers
 * "existed"); the assigned agent, the joined supervisors and the monitoring supervisors get an
 * `alert` of kind `customer_left` when the task is new. A worker that dies midway leaves the
 * check in the firing set; its lease runs out and another finishes it without doubling the
 * record or the task. */
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kefu/alloc.h"
#include "kefu/keys.h"
#include "kefu/log.h"
#include "kefu/service.h"
#include "kefu/token.h"
#include "wk.h"

#define CLAIM_MAX 100
#define POLL_MS 250 /* the grace is seconds long: a quarter second late is nothing */

static struct {
    unsigned slot;
    int claiming;
    int again;
    int64_t exact_at;
    struct event *poll_ev, *exact_ev;
} cb;

static void claim(void);

static void arm_exact(int64_t due) {
    int64_t now = wk_now_ms();
    if (due - now >= POLL_MS) return; /* the poll gets there first */
    if (cb.exact_at && cb.exact_at <= due) return;
    int64_t d = due > now ? due - now : 0;
    struct timeval tv = {(time_t)(d / 1000), (suseconds_t)((d % 1000) * 1000)};
    event_add(cb.exact_ev, &tv);
    cb.exact_at = due;
}

static void on_scheduled(const redisReply *r, const char *err, void *priv) {
    if (!err && r->type == REDIS_REPLY_INTEGER && r->integer > 0) wk.stats.callback_checks++;
    wk_job_cb(r, err, priv);
}

void wk_callback_left(wk_job *j, const char *customer, long long left_ms) {
    if (!*customer || strlen(customer) > KF_SUB_MAX || left_ms <= 0) return;
    long long due = left_ms + wk.opt.callback_grace_ms;
    char score[24];
    snprintf(score, sizeof(score), "%lld", due);
    /* GT: the latest departure decides; CH: counted when it added or moved the check */
    const char *argv[] = {"ZADD", KF_KEY_CB_CHECKS, "GT", "CH", score, customer};
    kf_redis_argv(wk.redis, cb.slot, on_scheduled, wk_job_ref(j), 6, argv, NULL);
    arm_exact(due);
}

/* ---- running a check ---- */

struct check {
    char member[KF_SUB_MAX + 32]; /* "<customer>|<due>" in the firing set */
    char customer[KF_SUB_MAX + 1];
    char due[24];
    int pending; /* commands still unanswered */
    int failed;  /* one failed: leave it to the lease */
    int present; /* the customer is connected somewhere */
};

struct conv_check {
    struct check *k;
    char conv[72];
    char task[96];
    json_t *info; /* callback_check.lua's answer */
};

static void check_unref(struct check *k, int failed) {
    k->failed |= failed;
    if (--k->pending > 0) return;
    if (!k->failed && !wk.stopping) {
        const char *argv[] = {"ZREM", KF_KEY_CB_FIRING, k->member};
        kf_redis_argv(wk.redis, cb.slot, NULL, NULL, 3, argv, NULL);
    }
    kf_free(k);
}

static void alert(const struct conv_check *cc, const json_t *task) {
    const json_t *in = cc->info;
    const char *agent = json_string_value(json_object_get(in, "agent"));
    json_t *a = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:O, s:O, s:O, s:s}",
                          "type", "alert", "kind", "customer_left", "conv", cc->conv, "customer",
                          cc->k->customer, "ticket", json_string_value(json_object_get(in, "ticket")),
                          "group", json_string_value(json_object_get(in, "group")), "state",
                          json_string_value(json_object_get(in, "state")), "agent", agent ? agent : "",
                          "priority", json_string_value(json_object_get(in, "priority")),
                          "complaint", json_object_get(in, "complaint"), "sensitive",
                          json_object_get(in, "sensitive"), "deadline",
                          json_object_get(task, "deadline"), "reason",
                          json_string_value(json_object_get(in, "reason")));
    if (!a) return;
    json_object_set_new(a, "task", json_string(cc->task));
    json_object_set_new(a, "left_at",
                        json_integer(atoll(cc->k->due) - wk.opt.callback_grace_ms));
    /* the agent and the supervisors who joined the conversation; then whoever monitors */
    const char *users[65];
    size_t n = 0;
    if (agent && *agent) users[n++] = agent;
    n += kf_json_strings(json_object_get(in, "sups"), users + n, 64);
    if (n) wk_push(json_incref(a), users, n);
    wk_push_monitors(a, NULL);
    wk.stats.callback_alerts++;
    kf_info("alert customer_left (%s) for conversation %s",
            json_string_value(json_object_get(in, "priority")), cc->conv);
}

static void on_task(const redisReply *r, const char *err, void *priv) {
    struct conv_check *cc = priv;
    kf_script_ans a;
    int failed = 1;
    if (kf_script_parse(r, err, 3, &a) && !wk.stopping) {
        failed = 0;
        if (!strcmp(r->element[1]->str, "1")) {
            wk.stats.callback_tasks++;
            json_t *task = json_loadb(r->element[2]->str, r->element[2]->len, 0, NULL);
            alert(cc, task);
            if (task) json_decref(task);
        }
    } else if (a.kind == KF_SCRIPT_BROKEN && a.detail) {
        kf_error("callback_task: %s", a.detail);
    }
    check_unref(cc->k, failed);
    json_decref(cc->info);
    kf_free(cc);
}

static void on_conv_checked(const redisReply *r, const char *err, void *priv) {
    struct conv_check *cc = priv;
    json_t *js;
    char code = wk_script_json(r, err, &js);
    if (code != 'S' || !js || wk.stopping) {
        if (js) json_decref(js);
        check_unref(cc->k, code == 0);
        kf_free(cc);
        return;
    }
    cc->info = js;
    char now[24], deadline[24];
    long long t = (long long)wk_now_ms();
    snprintf(now, sizeof(now), "%lld", t);
    snprintf(deadline, sizeof(deadline), "%lld", t + wk.opt.callback_deadline_ms);
    const char *agent = json_string_value(json_object_get(js, "agent"));
    const char *argv[] = {
        KF_KEY_CB_OPEN, "create", cc->task, now, cc->conv, cc->k->customer,
        json_string_value(json_object_get(js, "ticket")),
        json_string_value(json_object_get(js, "group")), agent ? agent : "",
        json_string_value(json_object_get(js, "state")),
        json_string_value(json_object_get(js, "reason")),
        json_string_value(json_object_get(js, "priority")),
        json_is_true(json_object_get(js, "complaint")) ? "1" : "0",
        json_is_true(json_object_get(js, "sensitive")) ? "1" : "0", deadline};
    for (size_t i = 0; i < sizeof(argv) / sizeof(argv[0]); i++)
        if (!argv[i]) argv[i] = "";
    kf_redis_script(wk.redis, cb.slot, "callback_task", on_task, cc, 1,
                    (int)(sizeof(argv) / sizeof(argv[0])), argv, NULL);
}

static void on_presence(const redisReply *r, const char *err, void *priv) {
    struct check *k = priv;
    if (err || r->type != REDIS_REPLY_INTEGER) {
        k->failed = 1;
        return; /* the SMEMBERS answer that follows ends it */
    }
    k->present = r->integer > 0;
}

static void on_convs(const redisReply *r, const char *err, void *priv) {
    struct check *k = priv;
    if (err || r->type != REDIS_REPLY_ARRAY || k->failed || wk.stopping) {
        check_unref(k, 1);
        return;
    }
    if (k->present || r->elements == 0) {
        /* back on some node, or nothing open: the check ends here */
        wk.stats.callback_cancelled++;
        check_unref(k, 0);
        return;
    }
    char now[24];
    snprintf(now, sizeof(now), "%lld", (long long)wk_now_ms());
    for (size_t i = 0; i < r->elements; i++) {
        const redisReply *e = r->element[i];
        if (e->type != REDIS_REPLY_STRING || e->len == 0 || e->len > 64) continue;
        struct conv_check *cc = kf_calloc(1, sizeof(*cc));
        cc->k = k;
        snprintf(cc->conv, sizeof(cc->conv), "%s", e->str);
        snprintf(cc->task, sizeof(cc->task), "%s-%s", cc->conv, k->due);
        k->pending++;
        const char *argv[] = {k->customer, k->due, now, cc->task};
        wk_conv_script(cc->conv, "callback_check", on_conv_checked, cc, 4, argv);
    }
    check_unref(k, 0);
}

static void run_check(const char *member) {
    const char *bar = strrchr(member, '|');
    if (!bar || bar == member || (size_t)(bar - member) > KF_SUB_MAX || strlen(bar + 1) >= 24) {
        kf_warn("malformed customer-left check dropped");
        const char *argv[] = {"ZREM", KF_KEY_CB_FIRING, member};
        kf_redis_argv(wk.redis, cb.slot, NULL, NULL, 3, argv, NULL);
        return;
    }
    struct check *k = kf_calloc(1, sizeof(*k));
    snprintf(k->member, sizeof(k->member), "%s", member);
    memcpy(k->customer, member, (size_t)(bar - member));
    snprintf(k->due, sizeof(k->due), "%s", bar + 1);
    k->pending = 1;
    char nodes[KF_KEY_MAX], convs[KF_KEY_MAX], now[24];
    kf_key_user_nodes(nodes, k->customer);
    kf_key_user_convs(convs, k->customer);
    snprintf(now, sizeof(now), "%lld", (long long)wk_now_ms());
    /* one slot, one connection: the presence is answered before the conversations */
    kf_redis_cmd_key(wk.redis, nodes, on_presence, k, "ZCOUNT %s %s +inf", nodes, now);
    kf_redis_cmd_key(wk.redis, convs, on_convs, k, "SMEMBERS %s", convs);
}

static void on_claimed(const redisReply *r, const char *err, void *priv) {
    (void)priv;
    cb.claiming = 0;
    if (wk.stopping || err || r->type != REDIS_REPLY_ARRAY || r->elements < 1) {
        if (!err && r && r->type == REDIS_REPLY_ERROR) kf_error("lease_claim (customer-left checks): %s", r->str);
        return;
    }
    for (size_t i = 1; i < r->elements; i++)
        if (r->element[i]->type == REDIS_REPLY_STRING) run_check(r->element[i]->str);
    if (r->element[0]->type == REDIS_REPLY_STRING && r->element[0]->len)
        arm_exact(atoll(r->element[0]->str));
    if (r->elements - 1 >= CLAIM_MAX || cb.again) {
        cb.again = 0;
        claim();
    }
}

static void claim(void) {
    if (wk.stopping || wk.draining) return;
    if (cb.claiming) {
        cb.again = 1;
        return;
    }
    if (!kf_redis_is_up(wk.redis, cb.slot)) return;
    cb.claiming = 1;
    char now[24], max[16], lease[24];
    snprintf(now, sizeof(now), "%lld", (long long)wk_now_ms());
    snprintf(max, sizeof(max), "%d", CLAIM_MAX);
    snprintf(lease, sizeof(lease), "%lld", wk.opt.sla_lease_ms);
    const char *argv[] = {KF_KEY_CB_CHECKS, KF_KEY_CB_FIRING, now, max, lease, "due"};
    kf_redis_script(wk.redis, cb.slot, "lease_claim", on_claimed, NULL, 2, 6, argv, NULL);
}

static void on_poll(evutil_socket_t fd, short what, void *arg) {
    (void)fd, (void)what, (void)arg;
    claim();
}

static void on_exact(evutil_socket_t fd, short what, void *arg) {
    (void)fd, (void)what, (void)arg;
    cb.exact_at = 0;
    claim();
}

void wk_callback_start(void) {
    cb.slot = kf_redis_slot(wk.redis, KF_KEY_CB_CHECKS);
    cb.poll_ev = wk_timer_every(POLL_MS, on_poll, NULL);
    cb.exact_ev = evtimer_new(wk.base, on_exact, NULL);
}

void wk_callback_stop(void) {
    event_free(cb.poll_ev);
    event_free(cb.exact_ev);
}
