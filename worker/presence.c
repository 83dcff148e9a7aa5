/* Agent presence and load repair, per staff domain, done by one worker at a time (a lease on
 * the domain's slot: kefu:{staff}:sweeper, kefu:{staff:<domain>}:sweeper). Domains are swept
 * independently, so a domain whose master is down holds up nobody else's.
 *
 * Presence: every presence_check_ms, each agent that is not offline has its presence sorted set
 * (kefu:{u:<agent>}:nodes, kept by the gateways) looked at; agent_presence.lua marks an agent
 * none of whose devices is connected as gone (no new conversations) and, after
 * offline_grace_ms, offline; one that came back is unmarked.
 *
 * Load repair: an agent's load set can keep a conversation it does not hold after rare races
 * (a close processed before the accept it follows, a commit whose answer was lost). Every 30 s
 * each member is checked: closed or deleted conversations are removed at once, ones held by
 * someone else or waiting are removed when found so twice in a row. */
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

#define REPAIR_EVERY_MS 30000
/* One staff domain's sweep. */
struct sweep {
    char dom[KF_GROUP_MAX + 1];
    int running;
    int64_t repair_ms;
    /* a sweep in progress */
    char **agents;
    int *connected;
    size_t n;
    int pending;
    /* load repair: "<agent>\t<conv>" found suspicious by the previous pass */
    char **suspects, **next_suspects;
    size_t nsuspects, nnext;
    int repair_pending;
};

static struct {
    struct event *ev;
    struct sweep *d;
    size_t nd;
} sw;

static void staff_script(struct sweep *pr, const char *name, kf_redis_cb *cb, void *priv,
                         int argc, const char **argv) {
    kf_staff_script_in(wk.redis, pr->dom, name, cb, priv, argc, argv);
}

static void sweep_end(struct sweep *pr) {
    for (size_t i = 0; i < pr->n; i++) kf_free(pr->agents[i]);
    kf_free(pr->agents);
    kf_free(pr->connected);
    pr->agents = NULL;
    pr->connected = NULL;
    pr->n = 0;
    pr->running = 0;
}

static void on_applied(const redisReply *r, const char *err, void *priv) {
    struct sweep *pr = priv;
    json_t *js;
    if (wk_script_json(r, err, &js) && js && !wk.stopping) {
        json_t *mon = json_object_get(js, "monitors");
        size_t i;
        json_t *st;
        json_array_foreach(json_object_get(js, "changed"), i, st) {
            const char *status = json_string_value(json_object_get(st, "status"));
            if (status && !strcmp(status, "offline")) {
                wk.stats.agents_offline++;
                kf_info("an agent went offline: no device connected for %lld ms",
                        wk.opt.offline_grace_ms);
            }
            if (json_is_true(json_object_get(st, "connected"))) {
                size_t k;
                json_t *g;
                json_array_foreach(json_object_get(st, "groups"), k, g)
                    wk_assign_kick(json_string_value(g));
            }
            wk_push_monitors(kf_push_agent_monitor(st), mon);
        }
    }
    if (js) json_decref(js);
    sweep_end(pr);
}

static void apply(struct sweep *pr) {
    size_t cap = 64, len = 0;
    char *lines = kf_malloc(cap);
    lines[0] = '\0';
    for (size_t i = 0; i < pr->n; i++) {
        if (pr->connected[i] < 0) continue; /* lookup failed: decide nothing */
        size_t need = strlen(pr->agents[i]) + 4;
        while (len + need >= cap) lines = kf_realloc(lines, cap *= 2);
        len += (size_t)snprintf(lines + len, cap - len, "%s\t%d\n", pr->agents[i], pr->connected[i]);
    }
    char now[24], grace[24];
    snprintf(now, sizeof(now), "%lld", (long long)wk_now_ms());
    snprintf(grace, sizeof(grace), "%lld", wk.opt.offline_grace_ms);
    const char *argv[] = {"apply", now, grace, lines};
    staff_script(pr, "agent_presence", on_applied, pr, 4, argv);
    kf_free(lines);
}

struct lookup {
    struct sweep *pr;
    size_t index;
};

static void on_nodes(const redisReply *r, const char *err, void *priv) {
    struct lookup *l = priv;
    struct sweep *pr = l->pr;
    if (!wk.stopping)
        pr->connected[l->index] = err || r->type != REDIS_REPLY_INTEGER ? -1 : r->integer > 0;
    kf_free(l);
    if (--pr->pending > 0) return;
    if (wk.stopping) {
        sweep_end(pr);
        return;
    }
    apply(pr);
}

static void on_list(const redisReply *r, const char *err, void *priv) {
    struct sweep *pr = priv;
    if (wk.stopping || err || r->type != REDIS_REPLY_ARRAY || r->elements == 0) {
        sweep_end(pr);
        return;
    }
    pr->n = r->elements;
    pr->agents = kf_calloc(pr->n, sizeof(char *));
    pr->connected = kf_calloc(pr->n, sizeof(int));
    pr->pending = (int)pr->n;
    char now[24];
    snprintf(now, sizeof(now), "%lld", (long long)wk_now_ms());
    for (size_t i = 0; i < pr->n; i++) {
        pr->agents[i] = kf_strdup(r->element[i]->type == REDIS_REPLY_STRING ? r->element[i]->str : "");
        struct lookup *l = kf_malloc(sizeof(*l));
        l->pr = pr;
        l->index = i;
        char key[KF_KEY_MAX];
        kf_key_user_nodes(key, pr->agents[i]);
        kf_redis_cmd_key(wk.redis, key, on_nodes, l, "ZCOUNT %s %s +inf", key, now);
    }
}

/* ---- load repair ---- */

static int suspect_was(const struct sweep *pr, const char *s) {
    for (size_t i = 0; i < pr->nsuspects; i++)
        if (!strcmp(pr->suspects[i], s)) return 1;
    return 0;
}

static void repair_done_one(struct sweep *pr) {
    if (--pr->repair_pending > 0) return;
    for (size_t i = 0; i < pr->nsuspects; i++) kf_free(pr->suspects[i]);
    kf_free(pr->suspects);
    pr->suspects = pr->next_suspects;
    pr->nsuspects = pr->nnext;
    pr->next_suspects = NULL;
    pr->nnext = 0;
}

struct member {
    struct sweep *pr;
    char agent[KF_SUB_MAX + 1];
    char conv[72];
};

static void remove_member(const struct member *m) {
    char now[24];
    snprintf(now, sizeof(now), "%lld", (long long)wk_now_ms());
    const char *argv[] = {"remove", m->agent, m->conv, now};
    staff_script(m->pr, "agent_load", NULL, NULL, 4, argv);
    kf_info("load repair: dropped a conversation its agent does not hold");
}

static void on_member_meta(const redisReply *r, const char *err, void *priv) {
    struct member *m = priv;
    struct sweep *pr = m->pr;
    if (!err && !wk.stopping && r->type == REDIS_REPLY_ARRAY && r->elements == 2) {
        const redisReply *st = r->element[0], *ag = r->element[1];
        int final = st->type != REDIS_REPLY_STRING || !strcmp(st->str, "closed");
        int foreign = !final && (strcmp(st->str, "assigned") != 0 ||
                                 ag->type != REDIS_REPLY_STRING || strcmp(ag->str, m->agent) != 0);
        char key[KF_SUB_MAX + 80];
        snprintf(key, sizeof(key), "%s\t%s", m->agent, m->conv);
        if (final || (foreign && suspect_was(pr, key))) {
            remove_member(m);
        } else if (foreign) {
            pr->next_suspects = kf_realloc(pr->next_suspects, sizeof(char *) * (pr->nnext + 1));
            pr->next_suspects[pr->nnext++] = kf_strdup(key);
        }
    }
    kf_free(m);
    repair_done_one(pr);
}

struct agent_ref {
    struct sweep *pr;
    char agent[KF_SUB_MAX + 1];
};

static void on_load_members(const redisReply *r, const char *err, void *priv) {
    struct agent_ref *a = priv;
    struct sweep *pr = a->pr;
    if (!err && !wk.stopping && r->type == REDIS_REPLY_ARRAY) {
        for (size_t i = 0; i < r->elements; i++) {
            if (r->element[i]->type != REDIS_REPLY_STRING || r->element[i]->len > 64) continue;
            struct member *m = kf_calloc(1, sizeof(*m));
            m->pr = pr;
            snprintf(m->agent, sizeof(m->agent), "%s", a->agent);
            snprintf(m->conv, sizeof(m->conv), "%s", r->element[i]->str);
            char meta[KF_KEY_MAX];
            kf_key_conv_meta(meta, m->conv);
            pr->repair_pending++;
            kf_redis_cmd_key(wk.redis, meta, on_member_meta, m, "HMGET %s state agent", meta);
        }
    }
    kf_free(a);
    repair_done_one(pr);
}

static void on_all_agents(const redisReply *r, const char *err, void *priv) {
    struct sweep *pr = priv;
    if (!err && !wk.stopping && r->type == REDIS_REPLY_ARRAY) {
        for (size_t i = 0; i < r->elements; i++) {
            if (r->element[i]->type != REDIS_REPLY_STRING) continue;
            struct agent_ref *a = kf_calloc(1, sizeof(*a));
            a->pr = pr;
            snprintf(a->agent, sizeof(a->agent), "%s", r->element[i]->str);
            char key[KF_KEY_MAX];
            kf_key_staff_load_in(key, pr->dom, a->agent);
            pr->repair_pending++;
            kf_redis_cmd_key(wk.redis, key, on_load_members, a, "SMEMBERS %s", key);
        }
    }
    repair_done_one(pr);
}

static void repair(struct sweep *pr) {
    if (pr->repair_pending) return;
    pr->repair_pending = 1;
    char key[KF_KEY_MAX];
    kf_key_staff_in(key, pr->dom, "agents");
    kf_redis_cmd(wk.redis, kf_redis_slot(wk.redis, key), on_all_agents, pr, "SMEMBERS %s", key);
}

/* ---- the lease and the tick ---- */

static void on_lease(const redisReply *r, const char *err, void *priv) {
    struct sweep *pr = priv;
    if (wk.stopping || err || r->type != REDIS_REPLY_INTEGER || r->integer != 1) {
        pr->running = 0;
        return;
    }
    int64_t now = wk_now_ms();
    if (now - pr->repair_ms >= REPAIR_EVERY_MS) {
        pr->repair_ms = now;
        repair(pr);
    }
    const char *argv[] = {"list"};
    staff_script(pr, "agent_presence", on_list, pr, 1, argv);
}

static void on_tick(evutil_socket_t fd, short what, void *arg) {
    (void)fd, (void)what, (void)arg;
    if (wk.stopping || wk.draining) return;
    char ttl[24];
    snprintf(ttl, sizeof(ttl), "%lld", wk.opt.presence_check_ms * 4 + 1000);
    for (size_t i = 0; i < sw.nd; i++) {
        struct sweep *pr = &sw.d[i];
        if (pr->running) continue;
        pr->running = 1;
        char lease[KF_KEY_MAX], flag[KF_KEY_MAX];
        kf_key_staff_in(lease, pr->dom, "sweeper");
        kf_key_staff_in(flag, pr->dom, "sweeper:again");
        const char *argv[] = {lease, flag, "acquire", wk.consumer, ttl};
        kf_redis_script(wk.redis, kf_redis_slot(wk.redis, lease), "group_lock", on_lease, pr, 2,
                        5, argv, NULL);
    }
}

void wk_presence_start(void) {
    char doms[KF_STAFF_DOMAINS_MAX][KF_GROUP_MAX + 1];
    sw.nd = kf_staff_domain_list(wk.opt.staff_domains, doms, KF_STAFF_DOMAINS_MAX);
    sw.d = kf_calloc(sw.nd, sizeof(*sw.d));
    for (size_t i = 0; i < sw.nd; i++) {
        snprintf(sw.d[i].dom, sizeof(sw.d[i].dom), "%.32s", doms[i]);
        sw.d[i].repair_ms = wk_now_ms();
    }
    sw.ev = wk_timer_every(wk.opt.presence_check_ms, on_tick, NULL);
}

void wk_presence_stop(void) {
    event_free(sw.ev);
    for (size_t d = 0; d < sw.nd; d++) {
        struct sweep *pr = &sw.d[d];
        sweep_end(pr);
        for (size_t i = 0; i < pr->nsuspects; i++) kf_free(pr->suspects[i]);
        kf_free(pr->suspects);
        for (size_t i = 0; i < pr->nnext; i++) kf_free(pr->next_suspects[i]);
        kf_free(pr->next_suspects);
    }
    kf_free(sw.d);
    sw.d = NULL;
    sw.nd = 0;
}
