/* SLA deadlines. Each is a member "<conv>|<kind>|<seq>|<step>|<deadline>|<due>" of the sorted
 * set kefu:{sla:<k>-..}:timers of its conversation's partition (include/kefu/keys.h) scored by
 * when it is due (the deadline itself, or later for a step that follows a breach: the alert is
 * due sla_alert_after_ms after the deadline it reports on), so they survive restarts and any
 * worker may fire them. lease_claim.lua moves the due ones of a partition into its
 * kefu:{sla:<k>-..}:firing under a lease: each is handed to one worker. That worker runs
 * sla_fire.lua on the conversation, which decides (answered? reassigned? closed?) and records
 * the breach once (HSETNX), then pushes and removes it from the firing set. A worker that dies
 * in between leaves it there; its lease runs out and another fires it: the record is never
 * doubled, the push may be lost.
 *
 * Claiming: a partition is claimed when its earliest deadline this worker knows of is due
 * (checked every timer_poll_ms, and exactly at a deadline closer than that), and at least every
 * SCAN_MS anyway. The earliest deadline comes from the last claim's answer and from what this
 * worker scheduled since; the scan finds what other workers scheduled (they fire it themselves
 * unless they died) and leases that ran out. A partition whose master is down is skipped: its
 * deadlines fire once the master (or its replica) answers; the others are not held up.
 *
 * The two sets of earlier versions, kefu:{sla}:timers and :firing, are claimed the same way (as
 * one more "partition"): nothing is added to them, so they empty as their deadlines fire.
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
#define SCAN_MS 500
#define NPARTS (KF_PARTS + 1) /* the partitions, then the sets of earlier versions */
#define OLD KF_PARTS
#define NEVER INT64_MAX

struct part {
    char timers[KF_KEY_MAX], firing[KF_KEY_MAX];
    unsigned slot;
    int claiming;
    int again;              /* claim again as soon as the current claim is answered */
    int64_t next_due;       /* the earliest deadline known to this worker; 0: not known yet */
    int64_t sched_min;      /* the earliest scheduled since the claim in flight was sent */
    int64_t last_claim;
};

static struct {
    struct part p[NPARTS];
    int64_t exact_at;       /* when the exact timer is armed for; 0 = not armed */
    struct event *poll_ev, *exact_ev;
} sl;

static void claim(struct part *pt);

static void arm_exact(int64_t deadline) {
    int64_t now = wk_now_ms();
    if (deadline - now >= wk.opt.timer_poll_ms) return; /* the poll gets there first */
    if (sl.exact_at && sl.exact_at <= deadline) return;
    int64_t d = deadline > now ? deadline - now : 0;
    struct timeval tv = {(time_t)(d / 1000), (suseconds_t)((d % 1000) * 1000)};
    event_add(sl.exact_ev, &tv);
    sl.exact_at = deadline;
}

/* A deadline scheduled outside an event (an automatic assignment) has no event to be handled
 * again when its ZADD fails (its partition's master is down): it is kept here and added again
 * once the master answers. Lost only if this worker exits meanwhile. */
#define KEPT_MAX 100000

struct kept {
    struct kept *next;
    struct part *pt;
    char score[24];
    char member[256];
};

static struct kept *kept_head, **kept_tail = &kept_head;

static void kept_send(struct kept *k);

static void on_kept_added(const redisReply *r, const char *err, void *priv) {
    struct kept *k = priv;
    if (wk.stopping || (!err && r->type != REDIS_REPLY_ERROR)) {
        kf_free(k);
        return;
    }
    if (wk.stats.timers_kept >= KEPT_MAX) {
        kf_warn("SLA deadline of %s dropped: %d kept already", k->member, KEPT_MAX);
        kf_free(k);
        return;
    }
    k->next = NULL;
    *kept_tail = k;
    kept_tail = &k->next;
    wk.stats.timers_kept++;
}

static void kept_send(struct kept *k) {
    const char *argv[] = {"ZADD", k->pt->timers, k->score, k->member};
    kf_redis_argv(wk.redis, k->pt->slot, on_kept_added, k, 4, argv, NULL);
}

/* Sends the kept deadlines whose partition's master is up again. */
static void kept_retry(void) {
    struct kept *list = kept_head;
    kept_head = NULL;
    kept_tail = &kept_head;
    while (list) {
        struct kept *k = list;
        list = k->next;
        if (kf_redis_is_up(wk.redis, k->pt->slot)) {
            wk.stats.timers_kept--;
            kept_send(k);
        } else {
            k->next = NULL;
            *kept_tail = k;
            kept_tail = &k->next;
        }
    }
}

static void schedule(wk_job *j, const char *conv, const char *kind, long long seq, int step,
                     long long deadline, long long due) {
    char member[256], score[24];
    snprintf(member, sizeof(member), "%s|%s|%lld|%d|%lld|%lld", conv, kind, seq, step, deadline,
             due);
    snprintf(score, sizeof(score), "%lld", due);
    struct part *pt = &sl.p[kf_part_of(conv)];
    if (j) {
        const char *argv[] = {"ZADD", pt->timers, score, member};
        kf_redis_argv(wk.redis, pt->slot, wk_job_cb, wk_job_ref(j), 4, argv, NULL);
    } else {
        struct kept *k = kf_calloc(1, sizeof(*k));
        k->pt = pt;
        snprintf(k->score, sizeof(k->score), "%s", score);
        snprintf(k->member, sizeof(k->member), "%s", member);
        kept_send(k);
    }
    /* a claim answered after this ZADD was sent may not have seen it: kept in sched_min */
    if (pt->next_due && due < pt->next_due) pt->next_due = due;
    if (pt->claiming && due < pt->sched_min) pt->sched_min = due;
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
    struct part *pt; /* the partition whose firing set holds it */
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
        const char *argv[] = {"ZREM", f->pt->firing, f->member};
        kf_redis_argv(wk.redis, f->pt->slot, NULL, NULL, 3, argv, NULL);
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
    /* the log of the conversation's partition (whichever set the deadline came from) */
    char key[KF_KEY_MAX];
    kf_key_sla(key, kf_part_of(f->conv), "breaches");
    const char *argv[] = {"XADD", key, "MAXLEN", "~", "1000000", "*",
                          "conv", f->conv, "kind", alert_kind(f->kind), "step", step,
                          "agent", agent, "reason", reason, "overdue_ms", od, "ts", ts};
    kf_redis_argv(wk.redis, kf_redis_slot(wk.redis, key), NULL, NULL, 20, argv, NULL);
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

static void fire(struct part *pt, const char *member) {
    struct firing *f = kf_calloc(1, sizeof(*f));
    f->pt = pt;
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
    struct part *pt = priv;
    pt->claiming = 0;
    if (wk.stopping || err || r->type != REDIS_REPLY_ARRAY || r->elements < 1) {
        if (!err && r && r->type == REDIS_REPLY_ERROR) kf_error("lease_claim (SLA deadlines): %s", r->str);
        return;
    }
    int64_t now = wk_now_ms();
    for (size_t i = 1; i < r->elements; i++) {
        if (r->element[i]->type != REDIS_REPLY_STRING) continue;
        /* a deadline long past was held by a worker that died while firing it */
        const char *last = strrchr(r->element[i]->str, '|');
        if (last && now - atoll(last + 1) > wk.opt.sla_lease_ms) wk.stats.timers_reclaimed++;
        fire(pt, r->element[i]->str);
    }
    int64_t next = NEVER;
    if (r->element[0]->type == REDIS_REPLY_STRING && r->element[0]->len)
        next = atoll(r->element[0]->str);
    pt->next_due = next < pt->sched_min ? next : pt->sched_min;
    if (pt->next_due != NEVER) arm_exact(pt->next_due);
    if (r->elements - 1 >= CLAIM_MAX || pt->again) {
        pt->again = 0;
        claim(pt);
    }
}

static void claim(struct part *pt) {
    if (wk.stopping || wk.draining) return;
    if (pt->claiming) {
        pt->again = 1;
        return;
    }
    if (!kf_redis_is_up(wk.redis, pt->slot)) return;
    pt->claiming = 1;
    pt->sched_min = NEVER;
    pt->last_claim = wk_now_ms();
    char now[24], max[16], lease[24];
    snprintf(now, sizeof(now), "%lld", (long long)pt->last_claim);
    snprintf(max, sizeof(max), "%d", CLAIM_MAX);
    snprintf(lease, sizeof(lease), "%lld", wk.opt.sla_lease_ms);
    const char *argv[] = {pt->timers, pt->firing, now, max, lease};
    kf_redis_script(wk.redis, pt->slot, "lease_claim", on_claimed, pt, 2, 5, argv, NULL);
}

/* Claims the partitions with a deadline due, and those not looked at for SCAN_MS. */
static void claim_due(void) {
    int64_t now = wk_now_ms();
    for (unsigned i = 0; i < NPARTS; i++) {
        struct part *pt = &sl.p[i];
        if (pt->claiming) continue;
        if (pt->next_due <= now || now - pt->last_claim >= SCAN_MS) claim(pt);
    }
}

static void on_poll(evutil_socket_t fd, short what, void *arg) {
    (void)fd, (void)what, (void)arg;
    if (kept_head && !wk.draining) kept_retry();
    claim_due();
}

static void on_exact(evutil_socket_t fd, short what, void *arg) {
    (void)fd, (void)what, (void)arg;
    sl.exact_at = 0;
    claim_due();
}

void wk_sla_start(void) {
    for (unsigned i = 0; i < NPARTS; i++) {
        struct part *pt = &sl.p[i];
        if (i < KF_PARTS) {
            kf_key_sla(pt->timers, i, "timers");
            kf_key_sla(pt->firing, i, "firing");
        } else {
            snprintf(pt->timers, sizeof(pt->timers), "%s", KF_KEY_SLA_TIMERS_OLD);
            snprintf(pt->firing, sizeof(pt->firing), "%s", KF_KEY_SLA_FIRING_OLD);
        }
        pt->slot = kf_redis_slot(wk.redis, pt->timers);
        pt->sched_min = NEVER;
    }
    sl.poll_ev = wk_timer_every(wk.opt.timer_poll_ms, on_poll, NULL);
    sl.exact_ev = evtimer_new(wk.base, on_exact, NULL);
}

void wk_sla_stop(void) {
    if (wk.stats.timers_kept)
        kf_warn("%llu SLA deadlines kept (their master was down) not stored before exit",
                (unsigned long long)wk.stats.timers_kept);
    while (kept_head) {
        struct kept *k = kept_head;
        kept_head = k->next;
        kf_free(k);
    }
    event_free(sl.poll_ev);
    event_free(sl.exact_ev);
}
