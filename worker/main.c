/* kefu-worker: automatic assignment, agent presence, SLA timers and queue positions, driven by
 * the conversation lifecycle stream (consumer group `workers`) and by timers. Several workers
 * run at once: every decision is a Redis script, so any of them may act on anything. */
#include <event2/event.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "kefu/alloc.h"
#include "kefu/config.h"
#include "kefu/keys.h"
#include "kefu/log.h"
#include "kefu/redis.h"
#include "kefu/route.h"
#include "kefu/service.h"
#include "wk.h"

wk_worker wk;

#define O(f) offsetof(wk_options, f)
#define BIG 1000000000000LL
const kf_option wk_option_table[] = {
    {"redis", KF_OPT_STR, O(redis), "127.0.0.1:6379", 0, 0, 0, "Redis: one stand-alone server host:port, or seed nodes of a Redis Cluster (comma-separated host:port), as for the gateways"},
    {"consumer", KF_OPT_STR, O(consumer), "", 0, 0, 0, "consumer name in the group, unique per worker and stable across restarts (default: host name-pid)"},
    {"log_level", KF_OPT_STR, O(log_level), "info", 0, 0, 1, "debug, info, warn, error or off"},
    {"batch", KF_OPT_INT, O(batch), "100", 1, 10000, 0, "events read per XREADGROUP"},
    {"redis_timeout_ms", KF_OPT_INT, O(redis_timeout_ms), "5000", 1100, 600000, 0, "Redis command timeout (above the 1 s block)"},
    {"inbox_maxlen", KF_OPT_INT, O(inbox_maxlen), "100000", 100, BIG, 1, "entries kept per node inbox stream (as the gateways' option)"},
    {"claim_idle_ms", KF_OPT_INT, O(claim_idle_ms), "5000", 100, 3600000, 1, "an event unacknowledged this long (its worker died) is taken over (XAUTOCLAIM)"},
    {"claim_interval_ms", KF_OPT_INT, O(claim_interval_ms), "1000", 50, 600000, 1, "how often to look for such events"},
    {"routes", KF_OPT_STR, O(routes), "", 0, 0, 1, "conversation routing, published to the gateways: 'channel:<c>=group[/priority], topic:<keyword>=group[/priority], *=group'; first match wins"},
    {"default_group", KF_OPT_STR, O(default_group), "default", 0, 0, 1, "group of conversations no route matches, and of agents whose token has no skills"},
    {"default_priority", KF_OPT_STR, O(default_priority), "medium", 0, 0, 1, "priority of conversations no route gives one: high, medium or low"},
    {"fallback_groups", KF_OPT_STR, O(fallback_groups), "", 0, 0, 1, "skill relaxation: 'group=fallback,...'; after relax_after_ms of waiting the fallback's agents are eligible too"},
    {"relax_after_ms", KF_OPT_INT, O(relax_after_ms), "60000", 0, BIG, 1, "waiting time before a conversation may go to its group's fallback"},
    {"default_max_chats", KF_OPT_INT, O(default_max_chats), "5", 1, 1000, 1, "capacity of an agent whose token has no max_chats"},
    {"assign_batch", KF_OPT_INT, O(assign_batch), "50", 1, 500, 1, "waiting conversations considered per assignment round"},
    {"assign_interval_ms", KF_OPT_INT, O(assign_interval_ms), "1000", 50, 600000, 1, "every group is looked at this often even without an event"},
    {"history_on_assign", KF_OPT_INT, O(history_on_assign), "20", 0, 200, 1, "recent messages sent with conv.assigned"},
    {"position_max", KF_OPT_INT, O(position_max), "100", 0, 10000, 1, "queue.position pushes go to the first this many waiting customers of a group"},
    {"position_interval_ms", KF_OPT_INT, O(position_interval_ms), "1000", 100, 600000, 1, "least time between position updates of one group"},
    {"break_policy", KF_OPT_STR, O(break_policy), "queue", 0, 0, 1, "a break its rule does not allow: queue (pending, approved by a supervisor or granted once it fits) or refuse"},
    {"break_meal_pct", KF_OPT_INT, O(break_meal_pct), "70", 0, 100, 1, "meal: this share of each of the agent's groups must stay available"},
    {"break_restroom_pct", KF_OPT_INT, O(break_restroom_pct), "80", 0, 100, 1, "restroom: share that must stay available"},
    {"break_handover_pct", KF_OPT_INT, O(break_handover_pct), "50", 0, 100, 1, "shift handover: share that must stay available"},
    {"break_other_max", KF_OPT_INT, O(break_other_max), "1", 0, 1000, 1, "other: agents per group away for it at once"},
    {"offline_grace_ms", KF_OPT_INT, O(offline_grace_ms), "30000", 0, BIG, 1, "an agent with no connected device is offline after this"},
    {"presence_check_ms", KF_OPT_INT, O(presence_check_ms), "500", 50, 600000, 1, "how often agents' connections are checked"},
    {"sla_first_response_ms", KF_OPT_STR, O(sla_first_response_ms), "web=15000,app=20000,*=30000", 0, 0, 1, "first-response deadline per channel (0 = none)"},
    {"sla_first_response_from", KF_OPT_STR, O(sla_first_response_from), "assigned", 0, 0, 1, "first-response clock starts when the conversation is assigned or queued"},
    {"sla_alert_after_ms", KF_OPT_INT, O(sla_alert_after_ms), "10000", 0, BIG, 1, "after a first-response breach warned the agent, alert supervisors this much later"},
    {"sla_reassign_after_ms", KF_OPT_INT, O(sla_reassign_after_ms), "0", 0, BIG, 1, "reassign when the assigned agent has not answered this long after assignment (0 = never)"},
    {"sla_respond_ms", KF_OPT_STR, O(sla_respond_ms), "high=1800000,medium=7200000,low=86400000", 0, 0, 1, "response deadline per priority, from opening"},
    {"sla_resolve_ms", KF_OPT_STR, O(sla_resolve_ms), "high=86400000,medium=172800000,low=259200000", 0, 0, 1, "resolution deadline per priority, from opening"},
    {"timer_poll_ms", KF_OPT_INT, O(timer_poll_ms), "20", 5, 1000, 1, "how often due deadlines are claimed"},
    {"sla_lease_ms", KF_OPT_INT, O(sla_lease_ms), "2000", 100, 600000, 1, "a claimed deadline not done within this (its worker died) is handed out again"},
    {"rate_window_ms", KF_OPT_INT, O(rate_window_ms), "86400000", 1000, BIG, 1, "how long after closing a customer may rate"},
    {"survey", KF_OPT_BOOL, O(survey), "yes", 0, 0, 1, "send survey.request to the customer on close"},
    {"monitor_ttl_ms", KF_OPT_INT, O(monitor_ttl_ms), "600000", 1000, BIG, 1, "a monitor.subscribe lasts this long"},
    {"stats_interval_s", KF_OPT_INT, O(stats_interval_s), "60", 0, 86400, 1, "log a statistics line this often (0 = never)"},
    {"http_bind", KF_OPT_STR, O(http_bind), "127.0.0.1", 0, 0, 0, "address of the /healthz, /readyz and /metrics listener"},
    {"http_port", KF_OPT_INT, O(http_port), "9091", 0, 65535, 0, "port of that listener (0 = none)"},
    {NULL, 0, 0, NULL, 0, 0, 0, NULL},
};

int wk_options_check(const wk_options *o, char *err, size_t errlen) {
    char g[KF_GROUP_MAX + 1], e[200];
    int p;
    if (kf_route_match(o->routes, "web", "", g, sizeof(g), &p, e, sizeof(e)) < 0) {
        snprintf(err, errlen, "routes: %s", e);
        return -1;
    }
    if (!kf_group_valid(o->default_group)) {
        snprintf(err, errlen, "default_group must match [a-z0-9_-]{1,32}");
        return -1;
    }
    if (kf_priority_parse(o->default_priority) < 0) {
        snprintf(err, errlen, "default_priority must be high, medium or low");
        return -1;
    }
    if (strcmp(o->break_policy, "queue") && strcmp(o->break_policy, "refuse")) {
        snprintf(err, errlen, "break_policy must be queue or refuse");
        return -1;
    }
    if (strcmp(o->sla_first_response_from, "assigned") &&
        strcmp(o->sla_first_response_from, "queued")) {
        snprintf(err, errlen, "sla_first_response_from must be assigned or queued");
        return -1;
    }
    const char *specs[3] = {o->sla_first_response_ms, o->sla_respond_ms, o->sla_resolve_ms};
    const char *names[3] = {"sla_first_response_ms", "sla_respond_ms", "sla_resolve_ms"};
    for (int i = 0; i < 3; i++)
        if (!kf_spec_valid(specs[i])) {
            snprintf(err, errlen, "%s must look like 'key=ms,key=ms,*=ms'", names[i]);
            return -1;
        }
    /* fallback_groups: group=group pairs */
    for (const char *s = o->fallback_groups; *s;) {
        const char *end = strchr(s, ',');
        size_t len = end ? (size_t)(end - s) : strlen(s);
        const char *eq = memchr(s, '=', len);
        char a[64] = "", b[64] = "";
        if (eq && (size_t)(eq - s) < sizeof(a) && len - (size_t)(eq - s) - 1 < sizeof(b)) {
            memcpy(a, s, (size_t)(eq - s));
            memcpy(b, eq + 1, len - (size_t)(eq - s) - 1);
        }
        if (!kf_group_valid(a) || !kf_group_valid(b)) {
            snprintf(err, errlen, "fallback_groups must look like 'group=fallback,...'");
            return -1;
        }
        s = end ? end + 1 : s + len;
    }
    return 0;
}

int64_t wk_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- signals, statistics ---- */

static void log_stats(void) {
    const wk_stats *s = &wk.stats;
    const kf_route_stats *rs = kf_route_get_stats();
    kf_info("stats: events %llu (claimed %llu, failed %llu), assigned %llu, conflicts %llu, "
            "undone %llu, reassigned %llu, timers fired %llu (cancelled %llu, stale %llu, "
            "reclaimed %llu, latest %lld ms late), breaches %llu, positions %llu, offline %llu, "
            "pushes %llu (no recipient %llu)",
            (unsigned long long)s->events, (unsigned long long)s->events_claimed,
            (unsigned long long)s->events_failed, (unsigned long long)s->assigned,
            (unsigned long long)s->assign_conflicts, (unsigned long long)s->reservations_undone,
            (unsigned long long)s->reassigned, (unsigned long long)s->timers_fired,
            (unsigned long long)s->timers_cancelled, (unsigned long long)s->timers_stale,
            (unsigned long long)s->timers_reclaimed, (long long)s->timer_late_max_ms,
            (unsigned long long)s->breaches, (unsigned long long)s->positions_pushed,
            (unsigned long long)s->agents_offline, (unsigned long long)rs->pushes,
            (unsigned long long)rs->no_recipient);
    wk.stats.timer_late_max_ms = 0;
}

static void on_stats(evutil_socket_t fd, short what, void *arg) {
    (void)fd, (void)what, (void)arg;
    log_stats();
}

static void reload(void) {
    wk_options fresh = wk.opt;
    /* Reloadable strings are re-read; the others keep pointing at the running values. */
    for (const kf_option *o = wk_option_table; o->name; o++)
        if (o->type == KF_OPT_STR && o->reloadable) *(char **)((char *)&fresh + o->offset) = NULL;
    char err[512];
    static const char *const passthru[] = {"config", NULL};
    if (kf_config_load(wk_option_table, &fresh, wk.config_file, wk.argc, wk.argv, passthru, 1,
                       err, sizeof(err)) < 0 ||
        wk_options_check(&fresh, err, sizeof(err)) < 0) {
        for (const kf_option *o = wk_option_table; o->name; o++)
            if (o->type == KF_OPT_STR && o->reloadable)
                kf_free(*(char **)((char *)&fresh + o->offset));
        kf_error("SIGHUP: configuration not reloaded: %s", err);
        return;
    }
    for (const kf_option *o = wk_option_table; o->name; o++)
        if (o->type == KF_OPT_STR && o->reloadable) kf_free(*(char **)((char *)&wk.opt + o->offset));
    wk.opt = fresh;
    int lvl = kf_log_parse_level(wk.opt.log_level);
    if (lvl >= 0) kf_log_level = lvl;
    wk_config_publish();
    wk_assign_kick_list("");
    kf_info("SIGHUP: configuration reloaded and published");
}

/* ---- stopping: finish what was started, then exit ---- */

#define DRAIN_MAX_MS 2000

static struct event *drain_ev;
static int64_t drain_until;

/* While draining nothing new is started (no stream read, claim, assignment cycle, SLA claim or
 * presence check); the commands already sent are answered, so the events being handled are
 * acknowledged and assignment cycles release their locks instead of leaving them to expire. */
static void on_drain(evutil_socket_t fd, short what, void *arg) {
    (void)fd, (void)what, (void)arg;
    size_t pending = kf_redis_pending(wk.redis);
    /* with no Redis reachable at all nothing would be answered: no use waiting */
    if (pending == 0 || kf_redis_slots_up(wk.redis) == 0 || wk_now_ms() >= drain_until) {
        if (pending) kf_warn("stopping with %zu Redis commands unanswered", pending);
        event_base_loopbreak(wk.base);
    }
}

static void on_signal(evutil_socket_t sig, short what, void *arg) {
    (void)what, (void)arg;
    if (sig == SIGHUP) {
        reload();
        return;
    }
    if (wk.draining) { /* a second signal: at once */
        event_base_loopbreak(wk.base);
        return;
    }
    kf_info("stopping");
    wk.draining = 1;
    drain_until = wk_now_ms() + DRAIN_MAX_MS;
    drain_ev = event_new(wk.base, -1, EV_PERSIST, on_drain, NULL);
    struct timeval tv = {0, 10000};
    event_add(drain_ev, &tv);
}

/* A Redis server became usable (first connect, reconnect, a replica took over): publish the
 * configuration when it is the {staff} one, and make sure the lifecycle stream's group exists. */
static void on_state(kf_redis *r, int up, void *priv) {
    (void)priv;
    if (!up) return;
    if (kf_redis_is_up(r, kf_redis_slot(r, KF_KEY_STAFF_CONFIG))) wk_config_publish();
    wk_events_redis_up();
}

/* --wait-ready[=SECONDS] (or --wait-ready SECONDS): the time to wait, -1 when absent. */
static double wait_ready_arg(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        if (!strncmp(argv[i], "--wait-ready=", 13)) return atof(argv[i] + 13);
        if (!strcmp(argv[i], "--wait-ready"))
            return i + 1 < argc && strncmp(argv[i + 1], "--", 2) ? atof(argv[i + 1]) : 30;
    }
    return -1;
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            kf_config_usage(wk_option_table, "kefu-worker");
            printf("  %-26s instead of running, wait until the worker configured like this\n"
                   "  %-26s answers /readyz with 200 (exit 0) or SECONDS passed (exit 1; default 30)\n",
                   "--wait-ready[=SECONDS]", "");
            return 0;
        }
    static const char *const passthru[] = {"config", "wait-ready", NULL};
    char err[512];
    wk.argc = argc;
    wk.argv = argv;
    wk.config_file = kf_config_file_arg(argc, argv);
    if (kf_config_load(wk_option_table, &wk.opt, wk.config_file, argc, argv, passthru, 0, err,
                       sizeof(err)) < 0 ||
        wk_options_check(&wk.opt, err, sizeof(err)) < 0) {
        fprintf(stderr, "kefu-worker: %s\n", err);
        return 2;
    }
    int lvl = kf_log_parse_level(wk.opt.log_level);
    if (lvl < 0) {
        fprintf(stderr, "kefu-worker: log_level must be debug, info, warn, error or off\n");
        return 2;
    }
    kf_log_level = lvl;
    double wait_s = wait_ready_arg(argc, argv);
    if (wait_s >= 0) {
        int rc = 2;
        if (wk.opt.http_port == 0)
            fprintf(stderr, "kefu-worker: --wait-ready needs http_port (it is 0)\n");
        else
            rc = wk_http_wait_ready(wk.opt.http_bind, (int)wk.opt.http_port, wait_s);
        kf_config_free(wk_option_table, &wk.opt);
        return rc;
    }
    if (wk.opt.consumer[0]) {
        snprintf(wk.consumer, sizeof(wk.consumer), "%s", wk.opt.consumer);
    } else {
        char host[64] = "worker";
        gethostname(host, sizeof(host) - 1);
        snprintf(wk.consumer, sizeof(wk.consumer), "%s-%d", host, (int)getpid());
    }
    kf_log_set_ident(wk.consumer);
    signal(SIGPIPE, SIG_IGN);
    wk.base = event_base_new();
    wk.redis = kf_redis_new(wk.base, wk.opt.redis, (int)wk.opt.redis_timeout_ms, err, sizeof(err));
    wk.reader = wk.redis ? kf_redis_new(wk.base, wk.opt.redis, (int)wk.opt.redis_timeout_ms, err,
                                        sizeof(err))
                         : NULL;
    if (!wk.reader) {
        fprintf(stderr, "kefu-worker: %s\n", err);
        return 2;
    }
    if (wk_http_start(err, sizeof(err)) < 0) {
        fprintf(stderr, "kefu-worker: %s\n", err);
        return 2;
    }
    kf_redis_on_state(wk.redis, on_state, NULL);
    wk_push_start();
    wk_events_start();
    wk_assign_start();
    wk_sla_start();
    wk_presence_start();
    struct event *stats = NULL;
    if (wk.opt.stats_interval_s > 0) {
        stats = event_new(wk.base, -1, EV_PERSIST, on_stats, NULL);
        struct timeval tv = {(time_t)wk.opt.stats_interval_s, 0};
        event_add(stats, &tv);
    }
    struct event *term = evsignal_new(wk.base, SIGTERM, on_signal, NULL);
    struct event *intr = evsignal_new(wk.base, SIGINT, on_signal, NULL);
    struct event *hup = evsignal_new(wk.base, SIGHUP, on_signal, NULL);
    event_add(term, NULL);
    event_add(intr, NULL);
    event_add(hup, NULL);
    kf_info("worker %s consuming %s (redis %s)", wk.consumer, KF_KEY_LIFECYCLE, wk.opt.redis);
    event_base_dispatch(wk.base);
    log_stats();
    /* Pending commands fail while the clients are freed; their callbacks see `stopping`. */
    wk.stopping = 1;
    kf_route_shutdown();
    kf_redis_free(wk.reader);
    kf_redis_free(wk.redis);
    wk_presence_stop();
    wk_sla_stop();
    wk_assign_stop();
    wk_events_stop();
    wk_push_stop();
    wk_http_stop();
    if (drain_ev) event_free(drain_ev);
    if (stats) event_free(stats);
    event_free(term);
    event_free(intr);
    event_free(hup);
    event_base_free(wk.base);
    kf_config_free(wk_option_table, &wk.opt);
    return 0;
}
