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
#include "kefu/tz.h"
#include "wk.h"

wk_worker wk;


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
    kf_tz tz;
    char e2[200];
    if (kf_tz_load(&tz, o->stats_timezone, e2, sizeof(e2)) < 0) {
        snprintf(err, errlen, "stats_timezone: %s", e2);
        return -1;
    }
    kf_tz_free(&tz);
    if (!kf_staff_domains_valid(o->staff_domains, e, sizeof(e))) {
        snprintf(err, errlen, "staff_domains: %s", e);
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
        /* assign_reserve.lua picks from both groups in one script: one slot, one domain */
        char da[KF_GROUP_MAX + 1], db[KF_GROUP_MAX + 1];
        kf_staff_domain_of(o->staff_domains, a, da, sizeof(da));
        kf_staff_domain_of(o->staff_domains, b, db, sizeof(db));
        if (strcmp(da, db) != 0) {
            snprintf(err, errlen,
                     "fallback_groups: %s (staff domain %s) cannot fall back to %s (staff domain %s)",
                     a, da, b, db);
            return -1;
        }
        s = end ? end + 1 : s + len;
    }
    char kws[KF_KEYWORDS_MAX][KF_KEYWORD_MAX + 1];
    if (kf_keywords_parse(o->trend_keywords, kws, KF_KEYWORDS_MAX, e, sizeof(e)) < 0) {
        snprintf(err, errlen, "trend_keywords: %s", e);
        return -1;
    }
    if (wk_archive_check(o, err, errlen) < 0) return -1;
    return wk_qa_check(o, err, errlen);
}

struct event *wk_timer_every(long long ms, event_callback_fn cb, void *arg) {
    struct event *e = event_new(wk.base, -1, EV_PERSIST, cb, arg);
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)((ms % 1000) * 1000)};
    event_add(e, &tv);
    return e;
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
    if (wk_stats_configure(&wk.opt, err, sizeof(err)) < 0) kf_error("SIGHUP: %s", err);
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
 * configuration when it holds a staff domain's copy, and make sure the lifecycle stream's group
 * exists. */
static void on_state(kf_redis *r, int up, void *priv) {
    (void)priv;
    if (!up) return;
    if (wk_config_slot_up()) wk_config_publish();
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
    int printed = kf_config_print_flags(wk_option_table, &wk_config_info, argc, argv);
    if (printed >= 0) return printed;
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
    /* the reader blocks up to 1 s in XREADGROUP: a reply may take that much longer */
    wk.reader = wk.redis ? kf_redis_new(wk.base, wk.opt.redis, (int)wk.opt.redis_timeout_ms + 1000,
                                        err, sizeof(err))
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
    if (wk_stats_configure(&wk.opt, err, sizeof(err)) < 0) {
        fprintf(stderr, "kefu-worker: %s\n", err);
        return 2;
    }
    wk_push_start();
    wk_events_start();
    wk_assign_start();
    wk_sla_start();
    wk_presence_start();
    wk_qa_start();
    wk_callback_start();
    wk_archive_start();
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
    kf_info("worker %s consuming kefu:{ev:*}:lifecycle, %d partitions (redis %s)", wk.consumer,
            KF_PARTS, wk.opt.redis);
    event_base_dispatch(wk.base);
    log_stats();
    /* Pending commands fail while the clients are freed; their callbacks see `stopping`. */
    wk.stopping = 1;
    kf_route_shutdown();
    kf_redis_free(wk.reader);
    kf_redis_free(wk.redis);
    wk_archive_stop();
    wk_qa_stop();
    wk_callback_stop();
    wk_presence_stop();
    wk_sla_stop();
    wk_assign_stop();
    wk_events_stop();
    wk_push_stop();
    wk_stats_stop();
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
