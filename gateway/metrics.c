/* Metrics in memory shared by all gateway processes, so any process can answer /metrics. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "gateway.h"
#include "kefu/alloc.h"
#include "kefu/redis.h"

const char *const gw_error_codes[ERR__COUNT] = {"bad_request", "unauthorized", "forbidden",
                                                "not_found",   "conflict",     "too_large",
                                                "rate_limited", "unavailable", "internal",
                                                "overloaded"};

static gw_metrics *slots;
static int nslots;
static gw_metrics local_slot; /* before gw_metrics_init (tools, tests) */
static gw_metrics *self = &local_slot;
static volatile int *host_stop; /* shared: set by the master when the whole host drains */

int gw_metrics_init(int nprocs) {
    void *p = mmap(NULL, sizeof(gw_metrics) * (size_t)nprocs, PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return -1;
    slots = p;
    nslots = nprocs;
    memset(slots, 0, sizeof(gw_metrics) * (size_t)nprocs);
    void *h = mmap(NULL, sizeof(int), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (h == MAP_FAILED) return -1;
    host_stop = h;
    *host_stop = 0;
    return 0;
}

void gw_metrics_host_stop(void) {
    if (host_stop) *host_stop = 1;
}

int gw_metrics_host_stopping(void) { return host_stop ? *host_stop : 0; }

void gw_metrics_bind(int proc_index) {
    if (slots && proc_index < nslots) {
        self = &slots[proc_index];
        memset(self, 0, sizeof(*self));
        self->pid = getpid();
        self->node_index = proc_index;
    }
}

gw_metrics *gw_metrics_self(void) { return self; }

int gw_metrics_all_ready(void) {
    if (!slots) return (int)self->ready;
    for (int i = 0; i < nslots; i++)
        if (!slots[i].ready) return 0;
    return 1;
}

void gw_metrics_readiness(gw_readiness *out) {
    memset(out, 0, sizeof(*out));
    const gw_metrics *all = slots ? slots : self;
    int n = slots ? nslots : 1, first = 1;
    for (int i = 0; i < n; i++) {
        const gw_metrics *m = &all[i];
        out->procs++;
        out->ready += m->ready != 0;
        out->draining += m->draining != 0;
        if (first || (unsigned)m->redis_slots_up < out->slots_up) {
            first = 0;
            out->slots_up = (unsigned)m->redis_slots_up;
            out->masters_up = (unsigned)m->redis_masters_up;
            out->masters = (unsigned)m->redis_masters;
        }
    }
}

int gw_metrics_error_index(const char *code) {
    for (int i = 0; i < ERR__COUNT; i++)
        if (strcmp(gw_error_codes[i], code) == 0) return i;
    return ERR_INTERNAL;
}

typedef struct {
    char *buf;
    size_t len, cap;
} sbuf;

static void sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf *b, const char *fmt, ...) {
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->buf + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n >= 0 && (size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        b->cap = b->cap * 2 + (size_t)(n > 0 ? n : 0);
        b->buf = kf_realloc(b->buf, b->cap);
    }
}

static const char *const role_labels[5] = {"unauthenticated", "customer", "agent", "supervisor",
                                           "admin"};

char *gw_metrics_render(size_t headroom, size_t *len) {
    sbuf b = {kf_malloc(headroom + 16384), headroom, headroom + 16384};
    gw_metrics *all = slots ? slots : self;
    int n = slots ? nslots : 1;
#define EACH for (int i = 0; i < n; i++)
#define P(lbl) "process=\"%d\"" lbl
    sb_printf(&b, "# HELP kefu_up Gateway process is running and ready (1) or not (0).\n# TYPE kefu_up gauge\n");
    EACH sb_printf(&b, "kefu_up{" P("") "} %d\n", i, all[i].pid && all[i].ready ? 1 : 0);
    sb_printf(&b, "# HELP kefu_connections Open WebSocket connections by role.\n# TYPE kefu_connections gauge\n");
    for (int r = 0; r < 5; r++) {
        int64_t sum = 0;
        EACH sum += all[i].conns_by_role[r];
        sb_printf(&b, "kefu_connections{role=\"%s\"} %lld\n", role_labels[r], (long long)sum);
    }
    sb_printf(&b, "# HELP kefu_process_connections Open connections per process.\n# TYPE kefu_process_connections gauge\n");
    EACH {
        int64_t sum = 0;
        for (int r = 0; r < 5; r++) sum += all[i].conns_by_role[r];
        sb_printf(&b, "kefu_process_connections{" P("") "} %lld\n", i, (long long)sum);
    }
#define COUNTER(name, help, field)                                                          \
    do {                                                                                    \
        uint64_t sum = 0;                                                                   \
        EACH sum += all[i].field;                                                           \
        sb_printf(&b, "# HELP " name " " help "\n# TYPE " name " counter\n" name " %llu\n", \
                  (unsigned long long)sum);                                                 \
    } while (0)
    COUNTER("kefu_frames_in_total", "WebSocket messages received.", frames_in);
    COUNTER("kefu_frames_out_total", "WebSocket messages sent.", frames_out);
    COUNTER("kefu_bytes_in_total", "WebSocket payload bytes received.", bytes_in);
    COUNTER("kefu_bytes_out_total", "WebSocket payload bytes queued for sending.", bytes_out);
    COUNTER("kefu_messages_stored_total", "Chat messages stored (msg.send, not counting duplicates).", messages_stored);
    COUNTER("kefu_inbox_entries_total", "Entries read from this node's inbox streams.", inbox_entries);
    COUNTER("kefu_inbox_deliveries_total", "Pushes queued to local connections from inboxes.", inbox_deliveries);
    COUNTER("kefu_accept_rejected_total", "Connections closed at accept (max_connections, or libwebsockets did not adopt them).", accept_rejected);
    COUNTER("kefu_accept_errors_total", "accept() failures (e.g. out of file descriptors).", accept_errors);
    COUNTER("kefu_slow_consumer_drops_total", "Frames refused because an output queue was full (connection then closed).", outq_dropped);
    COUNTER("kefu_presence_cache_hits_total", "Routing presence lookups answered from the local cache.", presence_cache_hits);
    COUNTER("kefu_redis_commands_total", "Redis commands answered.", redis_commands);
    COUNTER("kefu_redis_failures_total", "Redis commands failed: unavailable (no server for the slot, connection lost, redirected too often, slot unserved for redis_timeout_ms), timeout, or unreplicated (ack_replicas).", redis_failures);
    COUNTER("kefu_push_retries_total", "Routes whose failed presence lookups were tried again.", push_retries);
    COUNTER("kefu_resync_sent_total", "Resync notices sent (a conversation's users told to fetch its history).", resync_sent);
    COUNTER("kefu_presence_cache_drops_total", "Cached presence copies dropped because a node (this one or another) registered that user.", presence_drops);
    COUNTER("kefu_welcome_resync_total", "Users of this node scheduled a presence resync because a node could still route them from a lookup cached before their registration.", welcome_resync);
    COUNTER("kefu_rx_pauses_total", "Times a connection stopped being read because Redis work was over redis_inflight_max.", rx_pauses);
    sb_printf(&b, "# HELP kefu_push_lost_total Pushes not delivered live, by cause; their users got a resync notice.\n# TYPE kefu_push_lost_total counter\n");
    static const char *const lost_causes[3] = {"presence", "inbox", "overflow"};
    for (int k = 0; k < 3; k++) {
        uint64_t sum = 0;
        EACH sum += all[i].push_lost[k];
        sb_printf(&b, "kefu_push_lost_total{cause=\"%s\"} %llu\n", lost_causes[k], (unsigned long long)sum);
    }
#define GAUGE(name, help, field)                                                          \
    do {                                                                                  \
        sb_printf(&b, "# HELP " name " " help "\n# TYPE " name " gauge\n");                \
        EACH sb_printf(&b, name "{" P("") "} %lld\n", i, (long long)all[i].field);         \
    } while (0)
    GAUGE("kefu_route_queue", "Pushes waiting for presence lookups or for the pushes before them.", route_queue);
    GAUGE("kefu_resync_pending", "Resync notices waiting for Redis to be healthy.", resync_pending);
    GAUGE("kefu_rx_paused", "Connections not being read (backpressure).", rx_paused);
    sb_printf(&b, "# HELP kefu_errors_total Error answers by code.\n# TYPE kefu_errors_total counter\n");
    for (int e = 0; e < ERR__COUNT; e++) {
        uint64_t sum = 0;
        EACH sum += all[i].errors[e];
        sb_printf(&b, "kefu_errors_total{code=\"%s\"} %llu\n", gw_error_codes[e], (unsigned long long)sum);
    }
    sb_printf(&b, "# HELP kefu_closes_total Connections closed, by reason.\n# TYPE kefu_closes_total counter\n");
    for (int c = 1; c < CLOSE__COUNT; c++) {
        uint64_t sum = 0;
        EACH sum += all[i].closes[c];
        sb_printf(&b, "kefu_closes_total{reason=\"%s\"} %llu\n", gw_close_reason_names[c], (unsigned long long)sum);
    }
    sb_printf(&b, "# HELP kefu_redis_slots_up Redis Cluster slots (of 16384) whose master this process reaches; 16384 for a reachable stand-alone server.\n# TYPE kefu_redis_slots_up gauge\n");
    EACH sb_printf(&b, "kefu_redis_slots_up{" P("") "} %lld\n", i, (long long)all[i].redis_slots_up);
    sb_printf(&b, "# HELP kefu_redis_masters Redis servers that serve slots (1 for a stand-alone server).\n# TYPE kefu_redis_masters gauge\n");
    EACH sb_printf(&b, "kefu_redis_masters{" P("") "} %lld\n", i, (long long)all[i].redis_masters);
    sb_printf(&b, "# HELP kefu_redis_masters_up Of those, the ones this process is connected to.\n# TYPE kefu_redis_masters_up gauge\n");
    EACH sb_printf(&b, "kefu_redis_masters_up{" P("") "} %lld\n", i, (long long)all[i].redis_masters_up);
    sb_printf(&b, "# HELP kefu_redis_redirects_total Redis Cluster redirections followed, by kind (moved, ask, retry: TRYAGAIN or CLUSTERDOWN).\n# TYPE kefu_redis_redirects_total counter\n");
    {
        uint64_t mv = 0, ak = 0, rt = 0;
        EACH mv += all[i].redis_moved, ak += all[i].redis_ask, rt += all[i].redis_retried;
        sb_printf(&b, "kefu_redis_redirects_total{kind=\"moved\"} %llu\nkefu_redis_redirects_total{kind=\"ask\"} %llu\nkefu_redis_redirects_total{kind=\"retry\"} %llu\n",
                  (unsigned long long)mv, (unsigned long long)ak, (unsigned long long)rt);
    }
    COUNTER("kefu_redis_map_refreshes_total", "Redis Cluster slot maps read (every 5 s, after a MOVED or a lost connection, and every 250 ms while a slot has no reachable master).", redis_map_refreshes);
    sb_printf(&b, "# HELP kefu_redis_kept Follow-up writes of answered requests (lifecycle events for the worker, transferred conversations' queue entries) waiting for their Redis server, tried again every 500 ms.\n# TYPE kefu_redis_kept gauge\n");
    EACH sb_printf(&b, "kefu_redis_kept{" P("") "} %lld\n", i, (long long)all[i].redis_kept);
    COUNTER("kefu_redis_kept_dropped_total", "Follow-up writes dropped because 100000 were already waiting.", redis_kept_dropped);
    COUNTER("kefu_redis_unreplicated_total", "WAITs (one per server and loop iteration, covering every msg.send batch sent there) whose replicas did not confirm within ack_timeout_ms; their messages are stored and were answered unavailable.", redis_unreplicated);
    sb_printf(&b, "# HELP kefu_redis_command_seconds Redis command round-trip time.\n# TYPE kefu_redis_command_seconds histogram\n");
    uint64_t cum = 0, cnt = 0, sumus = 0;
    EACH cnt += all[i].redis_commands, sumus += all[i].redis_latency_us_sum;
    for (int k = 0; k < 12; k++) {
        EACH cum += all[i].redis_latency_bucket[k];
        if (k < 11)
            sb_printf(&b, "kefu_redis_command_seconds_bucket{le=\"%g\"} %llu\n", kf_redis_latency_bounds_s[k], (unsigned long long)cum);
        else
            sb_printf(&b, "kefu_redis_command_seconds_bucket{le=\"+Inf\"} %llu\n", (unsigned long long)cum);
    }
    sb_printf(&b, "kefu_redis_command_seconds_sum %.6f\nkefu_redis_command_seconds_count %llu\n",
              (double)sumus / 1e6, (unsigned long long)cnt);
    sb_printf(&b, "# HELP kefu_inbox_lag_ms Age of the newest inbox entry when it was read.\n# TYPE kefu_inbox_lag_ms gauge\n");
    EACH sb_printf(&b, "kefu_inbox_lag_ms{" P("") "} %lld\n", i, (long long)all[i].inbox_lag_ms);
    /* bots (gateway/bot.c) */
    COUNTER("kefu_bot_runs_total", "Bot rule events run.", bot_runs);
    COUNTER("kefu_bot_errors_total", "Bot rule events that failed (error, budget or memory); the conversation went to a human.", bot_errors);
    COUNTER("kefu_bot_budget_kills_total", "Bot rule events stopped by the instruction budget.", bot_budget_kills);
    COUNTER("kefu_bot_memory_kills_total", "Bot rule events stopped by the memory cap.", bot_memory_kills);
    COUNTER("kefu_bot_replies_total", "Bot replies stored and pushed.", bot_replies);
    COUNTER("kefu_bot_handoffs_total", "Conversations the bot handed to a human queue.", bot_handoffs);
    COUNTER("kefu_bot_finishes_total", "Conversations the bot closed without a human.", bot_finishes);
    COUNTER("kefu_bot_alerts_total", "Sensitive-issue alerts sent to supervisors.", bot_alerts);
    COUNTER("kefu_bot_reloads_total", "Bot rule sets loaded (start and reloads).", bot_reloads);
    COUNTER("kefu_bot_reload_failures_total", "Bot rule sets that failed to load (the previous one kept running).", bot_reload_failures);
    COUNTER("kefu_bot_conflicts_total", "Bot events run again because another node changed the conversation first.", bot_conflicts);
    COUNTER("kefu_bot_dropped_total", "Bot events dropped (storage failures, too many queued).", bot_dropped);
    sb_printf(&b, "# HELP kefu_bot_rules_loaded A bot rule set is loaded (1) or not (0).\n# TYPE kefu_bot_rules_loaded gauge\n");
    EACH sb_printf(&b, "kefu_bot_rules_loaded{" P("") "} %lld\n", i, (long long)all[i].bot_rules_loaded);
    sb_printf(&b, "# HELP kefu_bot_memory_bytes Heap of the bot rule set's Lua state.\n# TYPE kefu_bot_memory_bytes gauge\n");
    EACH sb_printf(&b, "kefu_bot_memory_bytes{" P("") "} %lld\n", i, (long long)all[i].bot_memory_bytes);
    /* customers who left mid-conversation, call-back tasks (router.c, callback.c) */
    COUNTER("kefu_customer_left_total", "Customers whose last connection to this gateway closed (a customer_left lifecycle event each).", customer_left);
    COUNTER("kefu_callback_assigned_total", "Call-back tasks assigned (callback.assign).", callback_assigned);
    COUNTER("kefu_callback_done_total", "Call-back tasks completed (callback.done).", callback_done);
    *len = b.len - headroom;
    return b.buf;
}
