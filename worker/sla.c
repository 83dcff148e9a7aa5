/* SLA deadlines. Each is a member "<conv>|<kind>|<seq>|<step>|<deadline>|<due>" of the sorted
 * set kefu:{sla}:timers scored by when it is due (the deadline itself, or later for a step that
 * follows a breach: the alert is due sla_alert_after_ms after the deadline it reports on), so
 * they survive restarts and any worker may fire them. Every timer_poll_ms (and exactly at a deadline this worker knows of) sla_claim.lua
 * moves the due ones into kefu:{sla}:firing under a lease: each is handed to one worker. That
 * worker runs sla_fire.lua on the conversation, which decides (answered? reassigned? closed?)
 * and records the breach once (HSETNX), then pushes and removes it from the firing set. A
 * worker that dies in between leaves it there; its lease runs out and another fires it: the
 * record is never doubled, the push may be lost.
 *
 * kinds: fr (first response; steps 0 warn the agent, 1 alert supervisors, 2 reassign),
 *        respond and resolve (priority tiers, from opening; alert supervisors). */
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

#define CLAIM_MAX 200

static struct {
    unsigned slot;
    int claiming;
    int again;              /* claim again as soon as the current claim is answered */
    int64_t exact_at;       /* when the exact timer is armed for; 0 = not armed */
    struct event *poll_ev, *exact_ev;
} sl;

static void claim(void);

static void arm_exact(int64_t deadline) {
    int64_t now = wk_now_ms();
    if (deadline - now >= wk.opt.timer_poll_ms) return; /* the poll gets there first */
    if (sl.exact_at && sl.exact_at <= deadline) return;
    int64_t d = deadline > now ? deadline - now : 0;
    struct timeval tv = {(time_t)(d / 1000), (suseconds_t)((d % 1000) * 1000)};
    event_add(sl.exact_ev, &tv);
    sl.exact_at = deadline;
}

static void schedule(wk_job *j, const char *conv, const char *kind, long long seq, int step,
                     long long deadline, long long due) {
    char member[256], score[24];
    snprintf(member, sizeof(member), "%s|%s|%lld|%d|%lld|%lld", conv, kind, seq, step, deadline,
             due);
    snprintf(score, sizeof(score), "%lld", due);
    const char *argv[] = {"ZADD", KF_KEY_SLA_TIMERS, score, member};
    kf_redis_argv(wk.redis, sl.slot, j ? wk_job_cb : NULL, wk_job_ref(j), 4, argv, NULL);
    arm_exact(due);
}

void wk_sla_opened(wk_job *j, const char *conv, const char *channel, const char *priority,
                   long long created_ms) {
    if (!*conv || created_ms <= 0) return;
    if (priority && *priority) {
        long long respond = kf_spec_value(wk.opt.sla_respond_ms, priority, 0);
        long long resolve = kf_spec_value(wk.opt.sla_resolve_ms, priority, 0);
        if (respond > 0)
            schedule(j, conv, "respond", 0, 0, created_ms + respond, created_ms + respond);
        if (resolve > 0)
            schedule(j, conv, "resolve", 0, 0, created_ms + resolve, created_ms + resolve);
    }
    if (!strcmp(wk.opt.sla_first_response_from, "queued")) {
        long long fr = kf_spec_value(wk.opt.sla_first_response_ms, channel, 0);
        if (fr > 0) {
            schedule(j, conv, "fr", 0, 0, created_ms + fr, created_ms + fr);
            schedule(j, conv, "fr", 0, 1, created_ms + fr,
                     created_ms + fr + wk.opt.sla_alert_after_ms);
        }
    }
}

void wk_sla_assigned(wk_job *j, const char *conv, const char *channel, long long seq,
                     long long assigned_ms) {
    if (!*conv || assigned_ms <= 0 || seq <= 0) return;
    if (!strcmp(wk.opt.sla_first_response_from, "assigned")) {
        long long fr = kf_spec_value(wk.opt.sla_first_response_ms, channel, 0);
        if (fr > 0) {
            schedule(j, conv, "fr", seq, 0, assigned_ms + fr, assigned_ms + fr);
            schedule(j, conv, "fr", seq, 1, assigned_ms + fr,
                     assigned_ms + fr + wk.opt.sla_alert_after_ms);
        }
    }
    if (wk.opt.sla_reassign_after_ms > 0) {
        long long at = assigned_ms + wk.opt.sla_reassign_after_ms;
        schedule(j, conv, "fr", seq, 2, at, at);
    }
}

/* ---- firing ---- */

struct firing {
    char member[256];
    char conv[72];
    char kind[16];
    long long seq;
    int step;
    long long deadline; /* the deadline the step reports on */
    long long due;      /* when it was to fire */
    long long fired_at;
};

static void done(struct firing *f) {
    if (!wk.stopping) {
        const char *argv[] = {"ZREM", KF_KEY_SLA_FIRING, f->member};
        kf_redis_argv(wk.redis, sl.slot, NULL, NULL, 3, argv, NULL);
    }
    kf_free(f);
}

static const char *alert_kind(const char *kind) {
    if (!strcmp(kind, "fr")) return "sla.first_response";
    if (!strcmp(kind, "respond")) return "sla.respond";
    return "sla.resolve";
}

static void record_breach(const struct firing *f, const char *agent, const char *reason,
                          long long overdue) {
    char step[8], od[24], ts[24];
    snprintf(step, sizeof(step), "%d", f->step);
    snprintf(od, sizeof(od), "%lld", overdue);
    snprintf(ts, sizeof(ts), "%lld", f->fired_at);
    const char *argv[] = {"XADD", KF_KEY_SLA_BREACHES, "MAXLEN", "~", "1000000", "*",
                          "conv", f->conv, "kind", alert_kind(f->kind), "step", step,
                          "agent", agent, "reason", reason, "overdue_ms", od, "ts", ts};
    kf_redis_argv(wk.redis, kf_redis_slot(wk.redis, KF_KEY_SLA_BREACHES), NULL, NULL, 20, argv,
                  NULL);
    wk.stats.breaches++;
}

static void reason_of(const struct firing *f, char *out, size_t outlen) {
    if (!strcmp(f->kind, "fr") && f->step == 0)
        snprintf(out, outlen, "no agent reply within the first-response time (%s)",
                 f->seq ? "from assignment" : "from queueing");
    else if (!strcmp(f->kind, "fr") && f->step == 1)
        snprintf(out, outlen, "first response still missing: supervisors alerted");
    else if (!strcmp(f->kind, "fr"))
        snprintf(out, outlen, "no_answer");
    else if (!strcmp(f->kind, "respond"))
        snprintf(out, outlen, "no response within the priority's response time");
    else
        snprintf(out, outlen, "not resolved within the priority's resolution time");
}

/* ---- step 2: reassignment ---- */

struct requeue {
    struct firing *f;
    char agent[KF_SUB_MAX + 1];
};

static void on_released_old(const redisReply *r, const char *err, void *priv) {
    (void)priv;
    json_t *js;
    if (wk_script_json(r, err, &js) && js && !wk.stopping &&
        json_integer_value(json_object_get(js, "changed")) > 0)
        wk_push_monitors(kf_push_agent_monitor(json_object_get(js, "self")),
                         json_object_get(js, "monitors"));
    if (js) json_decref(js);
}

static void on_requeued(const redisReply *r, const char *err, void *priv) {
    struct requeue *rq = priv;
    struct firing *f = rq->f;
    json_t *js;
    char code = wk_script_json(r, err, &js);
    if (wk.stopping) {
        if (js) json_decref(js);
        kf_free(f);
        kf_free(rq);
        return;
    }
    if (err) { /* the lease hands it out again */
        kf_free(f);
        kf_free(rq);
        return;
    }
    if (code == 'S' && js) {
        const char *group = json_string_value(json_object_get(js, "group"));
        const char *customer = json_string_value(json_object_get(js, "customer"));
        const char *ticket = json_string_value(json_object_get(js, "ticket"));
        const char *qs = json_string_value(json_object_get(js, "queued_us"));
        int prio = kf_priority_parse(json_string_value(json_object_get(js, "priority")));
        long long queued = qs ? atoll(qs) : 0;
        if (queued <= 0) queued = f->fired_at * 1000;
        if (!group) group = wk.opt.default_group;
        char now[24], key[KF_KEY_MAX];
        snprintf(now, sizeof(now), "%lld", f->fired_at);
        wk_agent_load("remove", rq->agent, f->conv, group, on_released_old, NULL);
        kf_key_user_convs(key, rq->agent);
        kf_redis_cmd_key(wk.redis, key, NULL, NULL, "SREM %s %s", key, f->conv);
        /* The exclusion first: both on the queue's slot, so a round never sees one without
         * the other. */
        kf_key_queue_exclude(key, group);
        kf_redis_cmd_key(wk.redis, key, NULL, NULL, "HSET %s %s %s", key, f->conv, rq->agent);
        kf_key_queue(key, group);
        long long score = kf_queue_score(prio < 0 ? KF_PRIO_MEDIUM : (kf_priority)prio,
                                         (int)json_integer_value(json_object_get(js, "level")),
                                         queued);
        kf_redis_cmd_key(wk.redis, key, NULL, NULL, "ZADD %s %lld %s", key, score, f->conv);
        const char *u[1] = {rq->agent};
        wk_push(json_pack("{s:s, s:s, s:s}", "type", "conv.revoked", "conv", f->conv, "reason",
                          "no_answer"),
                u, 1);
        const char *users[64];
        size_t n = 0;
        if (customer) users[n++] = customer;
        n += kf_json_strings(json_object_get(js, "sups"), users + n, 63);
        wk_push(json_pack("{s:s, s:s, s:s, s:s, s:s, s:b}", "type", "conv.state", "conv", f->conv,
                          "state", "waiting", "ticket", ticket ? ticket : "", "group", group,
                          "reassigned", 1),
                users, n);
        wk_assign_kick(group);
        wk.stats.reassigned++;
        kf_info("conversation reassigned: its agent did not answer in time");
    }
    if (js) json_decref(js);
    kf_free(rq);
    done(f);
}

static void requeue(struct firing *f, const char *agent) {
    struct requeue *rq = kf_calloc(1, sizeof(*rq));
    rq->f = f;
    snprintf(rq->agent, sizeof(rq->agent), "%s", agent);
    char now[24], seq[24];
    snprintf(now, sizeof(now), "%lld", f->fired_at);
    snprintf(seq, sizeof(seq), "%lld", f->seq);
    const char *argv[] = {"requeue", "worker", "worker", agent, "", "", "", "no_answer", now, seq,
                          "0"};
    wk_conv_script(f->conv, "conv_transfer", on_requeued, rq, 11, argv);
}

static const char *el(const redisReply *r, size_t i) {
    return i < r->elements && r->element[i]->type == REDIS_REPLY_STRING ? r->element[i]->str : "";
}

static void on_fired(const redisReply *r, const char *err, void *priv) {
    struct firing *f = priv;
    if (wk.stopping || err) { /* transport trouble: the lease hands it out again */
        kf_free(f);
        return;
    }
    if (r->type == REDIS_REPLY_ERROR || r->type != REDIS_REPLY_ARRAY || r->elements < 1) {
        kf_error("sla_fire failed: %s", r->type == REDIS_REPLY_ERROR ? r->str : "bad reply");
        done(f);
        return;
    }
    char code = el(r, 0)[0];
    if (code == 'C') {
        wk.stats.timers_cancelled++;
        done(f);
        return;
    }
    if (code != 'F' && code != 'R') {
        wk.stats.timers_stale++;
        done(f);
        return;
    }
    wk.stats.timers_fired++;
    long long late = f->fired_at - f->due;
    if (late > wk.stats.timer_late_max_ms) wk.stats.timer_late_max_ms = late;
    if (late < 0) late = 0;
    int b = 0;
    while (b < WK_LATE_BUCKETS - 1 && late > wk_late_bounds_ms[b]) b++;
    wk.stats.timer_late_bucket[b]++;
    wk.stats.timer_late_ms_sum += (uint64_t)late;
    const char *agent = el(r, 1), *ticket = el(r, 3), *group = el(r, 4), *priority = el(r, 5);
    long long overdue = atoll(el(r, 8));
    if (code == 'R') {
        if (*agent)
            requeue(f, agent);
        else
            done(f);
        return;
    }
    char reason[128];
    reason_of(f, reason, sizeof(reason));
    if (!strcmp(f->kind, "fr") && f->step == 0) {
        record_breach(f, agent, reason, overdue);
        if (*agent) {
            const char *u[1] = {agent};
            wk_push(json_pack("{s:s, s:s, s:s, s:I, s:I, s:I, s:s}", "type", "sla.warning", "conv",
                              f->conv, "kind", "first_response", "deadline",
                              (json_int_t)f->deadline, "fired_at", (json_int_t)f->fired_at,
                              "overdue_ms", (json_int_t)overdue, "ticket", ticket),
                    u, 1);
        }
    } else {
        if (strcmp(f->kind, "fr") != 0) record_breach(f, agent, reason, overdue);
        json_t *alert = json_pack("{s:s, s:s, s:s, s:s, s:I, s:I, s:I, s:s, s:s, s:s}", "type",
                                  "alert", "kind", alert_kind(f->kind), "conv", f->conv, "agent",
                                  agent, "overdue_ms", (json_int_t)overdue, "deadline",
                                  (json_int_t)f->deadline, "fired_at", (json_int_t)f->fired_at,
                                  "ticket", ticket, "group", group, "priority", priority);
        /* Supervisors who joined the conversation get it too. */
        char sups[1024];
        snprintf(sups, sizeof(sups), "%s", el(r, 7));
        const char *u[64];
        size_t n = 0;
        char *save = NULL;
        for (char *t = strtok_r(sups, ",", &save); t && n < 64; t = strtok_r(NULL, ",", &save))
            u[n++] = t;
        if (n) wk_push(json_incref(alert), u, n);
        wk_push_monitors(alert, NULL);
    }
    done(f);
}

static void fire(const char *member) {
    struct firing *f = kf_calloc(1, sizeof(*f));
    snprintf(f->member, sizeof(f->member), "%s", member);
    char buf[256];
    snprintf(buf, sizeof(buf), "%s", member);
    char *save = NULL, *conv = strtok_r(buf, "|", &save), *kind = strtok_r(NULL, "|", &save),
         *seq = strtok_r(NULL, "|", &save), *step = strtok_r(NULL, "|", &save),
         *deadline = strtok_r(NULL, "|", &save), *due = strtok_r(NULL, "|", &save);
    if (!due) {
        kf_warn("malformed SLA timer dropped");
        done(f);
        return;
    }
    snprintf(f->conv, sizeof(f->conv), "%s", conv);
    snprintf(f->kind, sizeof(f->kind), "%s", kind);
    f->seq = atoll(seq);
    f->step = atoi(step);
    f->deadline = atoll(deadline);
    f->due = atoll(due);
    f->fired_at = wk_now_ms();
    char reason[128], seqs[24], steps[8], now[24], dl[24];
    reason_of(f, reason, sizeof(reason));
    snprintf(seqs, sizeof(seqs), "%lld", f->seq);
    snprintf(steps, sizeof(steps), "%d", f->step);
    snprintf(now, sizeof(now), "%lld", f->fired_at);
    snprintf(dl, sizeof(dl), "%lld", f->deadline);
    const char *argv[] = {f->kind, seqs, steps, now, dl, reason};
    wk_conv_script(f->conv, "sla_fire", on_fired, f, 6, argv);
}

static void on_claimed(const redisReply *r, const char *err, void *priv) {
    (void)priv;
    sl.claiming = 0;
    if (wk.stopping || err || r->type != REDIS_REPLY_ARRAY || r->elements < 1) {
        if (!err && r && r->type == REDIS_REPLY_ERROR) kf_error("sla_claim: %s", r->str);
        return;
    }
    int64_t now = wk_now_ms();
    for (size_t i = 1; i < r->elements; i++) {
        if (r->element[i]->type != REDIS_REPLY_STRING) continue;
        /* a deadline long past was held by a worker that died while firing it */
        const char *last = strrchr(r->element[i]->str, '|');
        if (last && now - atoll(last + 1) > wk.opt.sla_lease_ms) wk.stats.timers_reclaimed++;
        fire(r->element[i]->str);
    }
    if (r->element[0]->type == REDIS_REPLY_STRING && r->element[0]->len)
        arm_exact(atoll(r->element[0]->str));
    if (r->elements - 1 >= CLAIM_MAX || sl.again) {
        sl.again = 0;
        claim();
    }
}

static void claim(void) {
    if (wk.stopping || wk.draining) return;
    if (sl.claiming) {
        sl.again = 1;
        return;
    }
    if (!kf_redis_is_up(wk.redis, sl.slot)) return;
    sl.claiming = 1;
    char now[24], max[16], lease[24];
    snprintf(now, sizeof(now), "%lld", (long long)wk_now_ms());
    snprintf(max, sizeof(max), "%d", CLAIM_MAX);
    snprintf(lease, sizeof(lease), "%lld", wk.opt.sla_lease_ms);
    const char *argv[] = {KF_KEY_SLA_TIMERS, KF_KEY_SLA_FIRING, now, max, lease};
    kf_redis_script(wk.redis, sl.slot, "sla_claim", on_claimed, NULL, 2, 5, argv, NULL);
}

static void on_poll(evutil_socket_t fd, short what, void *arg) {
    (void)fd, (void)what, (void)arg;
    claim();
}

static void on_exact(evutil_socket_t fd, short what, void *arg) {
    (void)fd, (void)what, (void)arg;
    sl.exact_at = 0;
    claim();
}

void wk_sla_start(void) {
    sl.slot = kf_redis_slot(wk.redis, KF_KEY_SLA_TIMERS);
    sl.poll_ev = wk_timer_every(wk.opt.timer_poll_ms, on_poll, NULL);
    sl.exact_ev = evtimer_new(wk.base, on_exact, NULL);
}

void wk_sla_stop(void) {
    event_free(sl.poll_ev);
    event_free(sl.exact_ev);
}
