/* Automatic assignment. Per group, one worker at a time (the group lock) runs rounds:
 *
 *   1. the head of the queue, in queue order (ZRANGE of kefu:{q:<group>}:waiting), and the
 *      agent each re-queued conversation should avoid;
 *   2. assign_reserve.lua on the group's staff domain ({staff} or {staff:<domain>}): an agent
 *      per conversation, its capacity reserved;
 *   3. conv_assign.lua on each conversation's slot: commit, unless a manual conv.accept (or
 *      anything else) changed it first; then the reservation is undone (agent_load.lua).
 *
 * until nobody can take more. Capacity is checked and reserved atomically on the domain's slot
 * (an agent's groups are all in one domain, so all of its load is there), and the
 * conversation changes hands atomically on its own slot, so whatever the workers and agents
 * do at the same time, no agent is ever over max_chats and no conversation has two agents.
 * Customers waiting get queue.position pushes, monitors the queue lengths. */
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

struct pos {
    char *conv;
    char *customer; /* NULL while being looked up */
    int position;
};

struct group {
    char name[KF_GROUP_MAX + 1];
    int dirty;          /* run (again) soon */
    int running;        /* a cycle holds or is getting the lock */
    int pos_stale;      /* the queue changed since positions were last pushed */
    int pos_reading;
    int64_t pos_ms;
    long long last_len; /* queue length last told to monitors; -1 unknown */
    struct pos *pos;
    size_t npos;
};

static struct {
    struct group **groups;
    size_t n;
    struct event *run_ev, *tick_ev;
    int run_scheduled;
    int listing;
} as;

static void cycle_start(struct group *g);

static struct group *group_get(const char *name) {
    if (!kf_group_valid(name)) return NULL;
    for (size_t i = 0; i < as.n; i++)
        if (!strcmp(as.groups[i]->name, name)) return as.groups[i];
    struct group *g = kf_calloc(1, sizeof(*g));
    snprintf(g->name, sizeof(g->name), "%s", name);
    g->last_len = -1;
    g->pos_stale = 1;
    as.groups = kf_realloc(as.groups, sizeof(*as.groups) * (as.n + 1));
    as.groups[as.n++] = g;
    return g;
}

static void schedule_run(void) {
    if (as.run_scheduled || wk.stopping || wk.draining) return;
    as.run_scheduled = 1;
    event_active(as.run_ev, EV_TIMEOUT, 0);
}

void wk_assign_kick(const char *group) {
    struct group *g = group_get(group);
    if (!g) return;
    g->dirty = 1;
    g->pos_stale = 1; /* whatever woke the group may have moved its queue */
    schedule_run();
}

void wk_assign_kick_list(const char *groups) {
    if (!groups || !*groups) {
        for (size_t i = 0; i < as.n; i++) as.groups[i]->dirty = 1;
        schedule_run();
        return;
    }
    char buf[512];
    snprintf(buf, sizeof(buf), "%s", groups);
    char *save = NULL;
    for (char *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) wk_assign_kick(t);
}

static void pos_free(struct pos *p, size_t n) {
    for (size_t i = 0; i < n; i++) {
        kf_free(p[i].conv);
        kf_free(p[i].customer);
    }
    kf_free(p);
}

void wk_assign_forget(const char *conv) {
    for (size_t i = 0; i < as.n; i++) {
        struct group *g = as.groups[i];
        for (size_t k = 0; k < g->npos; k++)
            if (!strcmp(g->pos[k].conv, conv)) {
                g->pos_stale = 1;
                break;
            }
    }
}

static void on_run(evutil_socket_t fd, short what, void *arg) {
    (void)fd, (void)what, (void)arg;
    as.run_scheduled = 0;
    for (size_t i = 0; i < as.n; i++) {
        struct group *g = as.groups[i];
        if (g->dirty && !g->running) cycle_start(g);
    }
}

/* ---- queue positions ---- */

struct pos_lookup {
    struct group *g;
    char conv[72];
    long long total;
};

static void push_position(struct group *g, const char *conv, const char *customer, int position,
                          long long total) {
    const char *u[1] = {customer};
    wk_push(json_pack("{s:s, s:s, s:i, s:I, s:s}", "type", "queue.position", "conv", conv,
                      "position", position, "waiting", (json_int_t)total, "group", g->name),
            u, 1);
    wk.stats.positions_pushed++;
}

static void on_pos_customer(const redisReply *r, const char *err, void *priv) {
    struct pos_lookup *pl = priv;
    struct group *g = pl->g;
    if (!err && !wk.stopping && r->type == REDIS_REPLY_STRING) {
        for (size_t k = 0; k < g->npos; k++) {
            struct pos *p = &g->pos[k];
            if (strcmp(p->conv, pl->conv) != 0 || p->customer) continue;
            p->customer = kf_strdup(r->str);
            push_position(g, p->conv, p->customer, p->position, pl->total);
        }
    }
    kf_free(pl);
}

static void on_positions(const redisReply *r, const char *err, void *priv) {
    struct group *g = priv;
    g->pos_reading = 0;
    if (err || wk.stopping || r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
        r->element[0]->type != REDIS_REPLY_ARRAY || r->element[1]->type != REDIS_REPLY_INTEGER)
        return;
    const redisReply *ids = r->element[0];
    long long total = r->element[1]->integer;
    struct pos *np = kf_calloc(ids->elements + 1, sizeof(*np));
    size_t nn = 0;
    for (size_t i = 0; i < ids->elements; i++) {
        if (ids->element[i]->type != REDIS_REPLY_STRING) continue;
        struct pos *p = &np[nn++];
        p->conv = kf_strdup(ids->element[i]->str);
        p->position = (int)i + 1;
        const struct pos *old = NULL;
        for (size_t k = 0; k < g->npos && !old; k++)
            if (!strcmp(g->pos[k].conv, p->conv)) old = &g->pos[k];
        if (old && old->customer) {
            p->customer = kf_strdup(old->customer);
            if (old->position != p->position) push_position(g, p->conv, p->customer, p->position, total);
        } else {
            struct pos_lookup *pl = kf_calloc(1, sizeof(*pl));
            pl->g = g;
            pl->total = total;
            snprintf(pl->conv, sizeof(pl->conv), "%s", p->conv);
            char meta[KF_KEY_MAX];
            kf_key_conv_meta(meta, p->conv);
            kf_redis_cmd_key(wk.redis, meta, on_pos_customer, pl, "HGET %s customer", meta);
        }
    }
    pos_free(g->pos, g->npos);
    g->pos = np;
    g->npos = nn;
    if (total != g->last_len) {
        g->last_len = total;
        wk_push_monitors(json_pack("{s:s, s:s, s:s, s:I}", "type", "monitor", "kind", "queue",
                                   "group", g->name, "waiting", (json_int_t)total),
                         NULL);
    }
}

/* Pushes changed positions, at most every position_interval_ms per group. */
static void positions_update(struct group *g) {
    int64_t now = wk_now_ms();
    if (!g->pos_stale || g->pos_reading || now - g->pos_ms < wk.opt.position_interval_ms) return;
    g->pos_stale = 0;
    g->pos_reading = 1;
    g->pos_ms = now;
    char key[KF_KEY_MAX];
    kf_key_queue(key, g->name);
    long long last = wk.opt.position_max > 0 ? wk.opt.position_max - 1 : -1;
    /* Both on one connection, one MULTI so the list and the length agree. */
    unsigned slot = kf_redis_slot(wk.redis, key);
    kf_redis_cmd(wk.redis, slot, NULL, NULL, "MULTI");
    kf_redis_cmd(wk.redis, slot, NULL, NULL, "ZRANGE %s 0 %lld", key, last);
    kf_redis_cmd(wk.redis, slot, NULL, NULL, "ZCARD %s", key);
    kf_redis_cmd(wk.redis, slot, on_positions, g, "EXEC");
}

/* ---- one cycle: lock, rounds, release ---- */

struct round {
    struct group *g;
    size_t n;
    char **convs;
    long long *scores;
    int pending; /* commits outstanding */
    int assigned;
};

static void round_free(struct round *rd) {
    for (size_t i = 0; i < rd->n; i++) kf_free(rd->convs[i]);
    kf_free(rd->convs);
    kf_free(rd->scores);
    kf_free(rd);
}

static void lock_op(struct group *g, const char *op, kf_redis_cb *cb) {
    char lock[KF_KEY_MAX], dirty[KF_KEY_MAX], ttl[24];
    kf_key_queue_lock(lock, g->name);
    kf_key_queue_dirty(dirty, g->name);
    /* Long enough for a slow round; a dead holder delays its group this long at most. */
    snprintf(ttl, sizeof(ttl), "%lld", wk.opt.redis_timeout_ms + 1000);
    const char *argv[] = {lock, dirty, op, wk.consumer, ttl};
    kf_redis_script(wk.redis, kf_redis_slot(wk.redis, lock), "group_lock", cb, g, 2, 5, argv,
                    NULL);
}

static void cycle_end(struct group *g) {
    g->running = 0;
    if (g->dirty) schedule_run();
}

static void on_released(const redisReply *r, const char *err, void *priv);
static void round_start(struct group *g);

static void cycle_finish(struct group *g) {
    if (wk.stopping) {
        g->running = 0;
        return;
    }
    positions_update(g);
    lock_op(g, "release", on_released);
}

static void on_released(const redisReply *r, const char *err, void *priv) {
    struct group *g = priv;
    if (!err && !wk.stopping && r->type == REDIS_REPLY_STRING && !strcmp(r->str, "again")) {
        round_start(g);
        return;
    }
    cycle_end(g);
}

static const char *fallback_of(const char *group, char *out, size_t outlen) {
    size_t gl = strlen(group);
    for (const char *s = wk.opt.fallback_groups; *s;) {
        const char *end = strchr(s, ',');
        size_t len = end ? (size_t)(end - s) : strlen(s);
        const char *eq = memchr(s, '=', len);
        if (eq && (size_t)(eq - s) == gl && !memcmp(s, group, gl)) {
            snprintf(out, outlen, "%.*s", (int)(len - gl - 1), eq + 1);
            return out;
        }
        s = end ? end + 1 : s + len;
    }
    return "";
}

struct commit {
    struct round *rd;
    char conv[72];
    char agent[KF_SUB_MAX + 1];
    char name[KF_NAME_MAX + 1];
};

static void on_undone(const redisReply *r, const char *err, void *priv) {
    (void)priv;
    json_t *js;
    if (wk_script_json(r, err, &js) && js && !wk.stopping) {
        json_t *self = json_object_get(js, "self");
        if (json_integer_value(json_object_get(js, "changed")) > 0)
            wk_push_monitors(kf_push_agent_monitor(self), json_object_get(js, "monitors"));
    }
    if (js) json_decref(js);
}

static void undo_reservation(const char *group, const char *agent, const char *conv) {
    char now[24];
    snprintf(now, sizeof(now), "%lld", (long long)wk_now_ms());
    const char *argv[] = {"remove", agent, conv, now};
    wk_staff_script_for(group, "agent_load", on_undone, NULL, 4, argv);
    wk.stats.reservations_undone++;
}

static void queue_drop(const char *group, const char *conv) {
    char key[KF_KEY_MAX];
    kf_key_queue(key, group);
    unsigned slot = kf_redis_slot(wk.redis, key);
    kf_redis_cmd(wk.redis, slot, NULL, NULL, "ZREM %s %s", key, conv);
    kf_key_queue_exclude(key, group);
    kf_redis_cmd(wk.redis, slot, NULL, NULL, "HDEL %s %s", key, conv);
}

static void committed(struct round *rd, const char *conv, const char *agent, const char *name,
                      json_t *view) {
    struct group *g = rd->g;
    queue_drop(g->name, conv);
    char key[KF_KEY_MAX];
    kf_key_user_convs(key, agent);
    kf_redis_cmd_key(wk.redis, key, NULL, NULL, "SADD %s %s", key, conv);
    const char *u[1] = {agent};
    wk_push(kf_push_conv_assigned(conv, view), u, 1);
    const char *users[64];
    size_t n = 0;
    users[n++] = json_string_value(json_object_get(view, "customer"));
    if (!users[0]) n = 0;
    n += kf_json_strings(json_object_get(view, "sups"), users + n, 63);
    wk_push(json_pack("{s:s, s:s, s:s, s:s, s:s}", "type", "conv.state", "conv", conv, "state",
                      "assigned", "agent", agent, "agent_name", name),
            users, n);
    const char *channel = json_string_value(json_object_get(view, "channel"));
    wk_sla_assigned(NULL, conv, channel ? channel : "",
                    (long long)json_integer_value(json_object_get(view, "seq")),
                    (long long)json_integer_value(json_object_get(view, "assigned_at")));
    rd->assigned++;
    g->pos_stale = 1;
    wk.stats.assigned++;
}

static void on_committed(const redisReply *r, const char *err, void *priv) {
    struct commit *cm = priv;
    struct round *rd = cm->rd;
    if (!wk.stopping) {
        json_t *view;
        char code = wk_script_json(r, err, &view);
        if (code == 'S' && view) {
            committed(rd, cm->conv, cm->agent, cm->name, view);
        } else if (err) {
            /* It may have been committed before the link failed: keep the reservation (the
             * load repair in presence.c removes it if the conversation never became ours). */
            kf_warn("assignment commit of a conversation failed: %s", err);
        } else if (r->type == REDIS_REPLY_ERROR) {
            undo_reservation(rd->g->name, cm->agent, cm->conv);
        } else {
            const char *state = r->type == REDIS_REPLY_ARRAY && r->elements >= 3 &&
                                        r->element[2]->type == REDIS_REPLY_STRING
                                    ? r->element[2]->str
                                    : "";
            const char *holder = r->type == REDIS_REPLY_ARRAY && r->elements >= 4 &&
                                         r->element[3]->type == REDIS_REPLY_STRING
                                     ? r->element[3]->str
                                     : "";
            wk.stats.assign_conflicts++;
            /* Accepted by the very agent we reserved: its load is right as it is. */
            if (!(strcmp(state, "assigned") == 0 && strcmp(holder, cm->agent) == 0))
                undo_reservation(rd->g->name, cm->agent, cm->conv);
            /* Not waiting in this group any more (accepted, closed, moved): a stale entry. */
            queue_drop(rd->g->name, cm->conv);
            rd->g->pos_stale = 1;
        }
        if (view) json_decref(view);
    }
    kf_free(cm);
    if (--rd->pending > 0) return;
    struct group *g = rd->g;
    int more = rd->assigned > 0;
    round_free(rd);
    if (wk.stopping) {
        g->running = 0;
        return;
    }
    if (more)
        round_start(g); /* someone may still have room */
    else
        cycle_finish(g);
}

static void on_reserved(const redisReply *r, const char *err, void *priv) {
    struct round *rd = priv;
    struct group *g = rd->g;
    json_t *js;
    char code = wk_script_json(r, err, &js);
    json_t *pairs = js ? json_object_get(js, "a") : NULL;
    size_t np = json_is_array(pairs) ? json_array_size(pairs) : 0;
    if (wk.stopping || !code || np == 0) {
        if (js) json_decref(js);
        round_free(rd);
        cycle_finish(g); /* which only stops the group when the worker is stopping */
        return;
    }
    json_t *monitors = json_object_get(js, "monitors");
    char now[24], hist[16];
    snprintf(now, sizeof(now), "%lld", (long long)wk_now_ms());
    snprintf(hist, sizeof(hist), "%lld", wk.opt.history_on_assign);
    rd->pending = (int)np;
    for (size_t i = 0; i < np; i++) {
        json_t *pair = json_array_get(pairs, i);
        const char *conv = json_string_value(json_array_get(pair, 0));
        json_t *state = json_array_get(pair, 1);
        const char *agent = json_string_value(json_object_get(state, "agent"));
        const char *name = json_string_value(json_object_get(state, "name"));
        struct commit *cm = kf_calloc(1, sizeof(*cm));
        cm->rd = rd;
        snprintf(cm->conv, sizeof(cm->conv), "%s", conv ? conv : "");
        snprintf(cm->agent, sizeof(cm->agent), "%s", agent ? agent : "");
        snprintf(cm->name, sizeof(cm->name), "%s", name ? name : cm->agent);
        wk_push_monitors(kf_push_agent_monitor(state), monitors);
        const char *argv[] = {cm->agent, cm->name, now, g->name, hist, "worker"};
        wk_conv_script(cm->conv, "conv_assign", on_committed, cm, 6, argv);
    }
    json_decref(js);
}

static void on_exclude(const redisReply *r, const char *err, void *priv) {
    struct round *rd = priv;
    struct group *g = rd->g;
    if (wk.stopping || err || r->type != REDIS_REPLY_ARRAY || r->elements != rd->n) {
        round_free(rd);
        cycle_finish(g); /* which only stops the group when the worker is stopping */
        return;
    }
    /* One line per conversation: id, how long it has waited, the agent to avoid. */
    size_t cap = 64, len = 0;
    char *batch = kf_malloc(cap);
    long long now = wk_now_ms();
    for (size_t i = 0; i < rd->n; i++) {
        const char *avoid = r->element[i]->type == REDIS_REPLY_STRING ? r->element[i]->str : "";
        long long waited = now - kf_queue_score_time_us(rd->scores[i]) / 1000;
        size_t need = strlen(rd->convs[i]) + strlen(avoid) + 32;
        while (len + need >= cap) {
            cap *= 2;
            batch = kf_realloc(batch, cap);
        }
        len += (size_t)snprintf(batch + len, cap - len, "%s\t%lld\t%s\n", rd->convs[i],
                                waited < 0 ? 0 : waited, avoid);
    }
    char fb[KF_GROUP_MAX + 1], relax[24], now_s[24], defmax[24];
    snprintf(relax, sizeof(relax), "%lld", wk.opt.relax_after_ms);
    snprintf(now_s, sizeof(now_s), "%lld", now);
    snprintf(defmax, sizeof(defmax), "%lld", wk.opt.default_max_chats);
    const char *argv[] = {g->name, fallback_of(g->name, fb, sizeof(fb)), relax, now_s, batch,
                          defmax};
    /* the group's staff domain: its fallback is in the same one (wk_options_check) */
    wk_staff_script_for(g->name, "assign_reserve", on_reserved, rd, 6, argv);
    kf_free(batch);
}

static void on_head(const redisReply *r, const char *err, void *priv) {
    struct group *g = priv;
    if (wk.stopping) {
        g->running = 0;
        return;
    }
    if (err || r->type != REDIS_REPLY_ARRAY || r->elements < 2) {
        cycle_finish(g);
        return;
    }
    struct round *rd = kf_calloc(1, sizeof(*rd));
    rd->g = g;
    rd->n = r->elements / 2;
    rd->convs = kf_calloc(rd->n, sizeof(char *));
    rd->scores = kf_calloc(rd->n, sizeof(long long));
    for (size_t i = 0; i < rd->n; i++) {
        const redisReply *c = r->element[2 * i], *s = r->element[2 * i + 1];
        rd->convs[i] = kf_strdup(c->type == REDIS_REPLY_STRING ? c->str : "-");
        rd->scores[i] = s->type == REDIS_REPLY_STRING ? atoll(s->str) : 0;
    }
    char key[KF_KEY_MAX];
    kf_key_queue_exclude(key, g->name);
    const char *argv[2 + 500];
    argv[0] = "HMGET";
    argv[1] = key;
    for (size_t i = 0; i < rd->n; i++) argv[2 + i] = rd->convs[i];
    kf_redis_argv(wk.redis, kf_redis_slot(wk.redis, key), on_exclude, rd, (int)(2 + rd->n), argv,
                  NULL);
}

static void on_lock(const redisReply *r, const char *err, void *priv) {
    struct group *g = priv;
    if (wk.stopping) {
        g->running = 0;
        return;
    }
    if (err || r->type != REDIS_REPLY_INTEGER || r->integer != 1) {
        /* Held by another worker, which saw our flag and runs again; or Redis trouble, and the
         * periodic tick tries again. */
        g->running = 0;
        return;
    }
    char key[KF_KEY_MAX];
    kf_key_queue(key, g->name);
    kf_redis_cmd_key(wk.redis, key, on_head, g, "ZRANGE %s 0 %lld WITHSCORES", key,
                     wk.opt.assign_batch - 1);
}

/* Each round re-takes the lock, which extends it and clears the run-again flag: what the flag
 * announced is in the queue this round reads. */
static void round_start(struct group *g) { lock_op(g, "acquire", on_lock); }

static void cycle_start(struct group *g) {
    g->running = 1;
    g->dirty = 0;
    round_start(g);
}

/* ---- periodic: every known group, even without events ---- */

/* Each staff domain lists its own groups: a domain whose master is down hides only its own. */
static void on_groups(const redisReply *r, const char *err, void *priv) {
    (void)priv;
    if (!err && !wk.stopping && r->type == REDIS_REPLY_ARRAY)
        for (size_t i = 0; i < r->elements; i++)
            if (r->element[i]->type == REDIS_REPLY_STRING) wk_assign_kick(r->element[i]->str);
    if (--as.listing > 0 || wk.stopping) return;
    for (size_t i = 0; i < as.n; i++) as.groups[i]->dirty = 1;
    schedule_run();
}

static void on_tick(evutil_socket_t fd, short what, void *arg) {
    (void)fd, (void)what, (void)arg;
    if (as.listing || wk.draining) return;
    char doms[KF_STAFF_DOMAINS_MAX][KF_GROUP_MAX + 1], key[KF_KEY_MAX];
    size_t nd = kf_staff_domain_list(wk.opt.staff_domains, doms, KF_STAFF_DOMAINS_MAX);
    as.listing = (int)nd;
    for (size_t i = 0; i < nd; i++) {
        kf_key_staff_in(key, doms[i], "groups");
        kf_redis_cmd(wk.redis, kf_redis_slot(wk.redis, key), on_groups, NULL, "SMEMBERS %s", key);
    }
}

void wk_assign_start(void) {
    as.run_ev = event_new(wk.base, -1, 0, on_run, NULL);
    as.tick_ev = wk_timer_every(wk.opt.assign_interval_ms, on_tick, NULL);
}

void wk_assign_stop(void) {
    event_free(as.run_ev);
    event_free(as.tick_ev);
    for (size_t i = 0; i < as.n; i++) {
        pos_free(as.groups[i]->pos, as.groups[i]->npos);
        kf_free(as.groups[i]);
    }
    kf_free(as.groups);
    as.groups = NULL;
    as.n = 0;
}
