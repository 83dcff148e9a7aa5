/* kefu-worker: consumes the conversation lifecycle stream in a consumer group. Assignment and
 * SLA timers build on this loop (see the worker issue); today it acknowledges and counts. */
#include <event2/event.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kefu/config.h"
#include "kefu/keys.h"
#include "kefu/log.h"
#include "kefu/redis.h"

typedef struct wk_options {
    char *redis;
    char *consumer;
    char *log_level;
    long long batch;
    long long redis_timeout_ms;
} wk_options;

#define O(f) offsetof(wk_options, f)
static const kf_option wk_option_table[] = {
    {"redis", KF_OPT_STR, O(redis), "127.0.0.1:6379", 0, 0, 0, "Redis shards, comma-separated host:port (same list as the gateways)"},
    {"consumer", KF_OPT_STR, O(consumer), "", 0, 0, 0, "consumer name in the group, stable across restarts (default: host name)"},
    {"log_level", KF_OPT_STR, O(log_level), "info", 0, 0, 0, "debug, info, warn, error or off"},
    {"batch", KF_OPT_INT, O(batch), "100", 1, 10000, 0, "events read per XREADGROUP"},
    {"redis_timeout_ms", KF_OPT_INT, O(redis_timeout_ms), "5000", 1100, 600000, 0, "Redis command timeout (above the 1 s block)"},
    {NULL, 0, 0, NULL, 0, 0, 0, NULL},
};

static struct {
    wk_options opt;
    struct event_base *base;
    kf_redis *redis;
    unsigned shard;
    int reading;
    unsigned long long events;
    char consumer[128];
} wk;

static void read_events(void);

static void on_events(const redisReply *r, const char *err, void *priv) {
    (void)priv;
    wk.reading = 0;
    if (err || r->type == REDIS_REPLY_ERROR) {
        if (!err && strstr(r->str, "NOGROUP"))
            kf_redis_cmd(wk.redis, wk.shard, NULL, NULL, "XGROUP CREATE %s workers 0 MKSTREAM",
                         KF_KEY_LIFECYCLE);
        return; /* the tick retries */
    }
    if (r->type == REDIS_REPLY_ARRAY && r->elements == 1) {
        const redisReply *entries = r->element[0]->element[1];
        for (size_t i = 0; i < entries->elements; i++) {
            const redisReply *e = entries->element[i];
            const redisReply *kv = e->element[1];
            const char *ev = "?", *conv = "?";
            for (size_t k = 0; k + 1 < kv->elements; k += 2) {
                if (!strcmp(kv->element[k]->str, "ev")) ev = kv->element[k + 1]->str;
                if (!strcmp(kv->element[k]->str, "conv")) conv = kv->element[k + 1]->str;
            }
            wk.events++;
            kf_debug("event %s %s conv=%s", e->element[0]->str, ev, conv);
            kf_redis_cmd(wk.redis, wk.shard, NULL, NULL, "XACK %s workers %s", KF_KEY_LIFECYCLE,
                         e->element[0]->str);
        }
    }
    read_events();
}

static void read_events(void) {
    if (wk.reading || !kf_redis_is_up(wk.redis, wk.shard)) return;
    wk.reading = 1;
    kf_redis_cmd(wk.redis, wk.shard, on_events, NULL,
                 "XREADGROUP GROUP workers %s COUNT %lld BLOCK 1000 STREAMS %s >", wk.consumer,
                 wk.opt.batch, KF_KEY_LIFECYCLE);
}

static void on_state(kf_redis *r, unsigned shard, int up, void *priv) {
    (void)r, (void)priv;
    if (up && shard == wk.shard) {
        kf_redis_cmd(wk.redis, wk.shard, NULL, NULL, "XGROUP CREATE %s workers 0 MKSTREAM",
                     KF_KEY_LIFECYCLE);
        read_events();
    }
}

static void on_tick(evutil_socket_t fd, short what, void *arg) {
    (void)fd, (void)what, (void)arg;
    read_events();
}

static void on_signal(evutil_socket_t sig, short what, void *arg) {
    (void)what, (void)arg;
    if (sig == SIGHUP) {
        kf_info("SIGHUP: nothing to reload yet");
        return;
    }
    kf_info("stopping after %llu events", wk.events);
    event_base_loopbreak(wk.base);
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--help")) {
            kf_config_usage(wk_option_table, "kefu-worker");
            return 0;
        }
    static const char *const passthru[] = {"config", NULL};
    char err[512];
    if (kf_config_load(wk_option_table, &wk.opt, kf_config_file_arg(argc, argv), argc, argv,
                       passthru, 0, err, sizeof(err)) < 0) {
        fprintf(stderr, "kefu-worker: %s\n", err);
        return 2;
    }
    int lvl = kf_log_parse_level(wk.opt.log_level);
    if (lvl >= 0) kf_log_level = lvl;
    if (wk.opt.consumer[0]) {
        snprintf(wk.consumer, sizeof(wk.consumer), "%s", wk.opt.consumer);
    } else {
        char host[64] = "worker";
        gethostname(host, sizeof(host) - 1);
        snprintf(wk.consumer, sizeof(wk.consumer), "%s", host);
    }
    kf_log_set_ident(wk.consumer);
    signal(SIGPIPE, SIG_IGN);
    wk.base = event_base_new();
    wk.redis = kf_redis_new(wk.base, wk.opt.redis, (int)wk.opt.redis_timeout_ms, err, sizeof(err));
    if (!wk.redis) {
        fprintf(stderr, "kefu-worker: %s\n", err);
        return 2;
    }
    wk.shard = kf_redis_shard(wk.redis, KF_KEY_LIFECYCLE);
    kf_redis_on_state(wk.redis, on_state, NULL);
    struct event *tick = event_new(wk.base, -1, EV_PERSIST, on_tick, NULL);
    struct timeval sec = {1, 0};
    event_add(tick, &sec);
    struct event *term = evsignal_new(wk.base, SIGTERM, on_signal, NULL);
    struct event *intr = evsignal_new(wk.base, SIGINT, on_signal, NULL);
    struct event *hup = evsignal_new(wk.base, SIGHUP, on_signal, NULL);
    event_add(term, NULL);
    event_add(intr, NULL);
    event_add(hup, NULL);
    kf_info("worker %s consuming %s", wk.consumer, KF_KEY_LIFECYCLE);
    event_base_dispatch(wk.base);
    event_free(tick);
    event_free(term);
    event_free(intr);
    event_free(hup);
    kf_redis_free(wk.redis);
    event_base_free(wk.base);
    kf_config_free(wk_option_table, &wk.opt);
    return 0;
}
