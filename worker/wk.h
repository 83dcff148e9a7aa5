/* kefu-worker internals shared by its modules: options, the process state, event-completion
 * tracking, pushes, and each module's entry points. */
#ifndef KEFU_WORKER_WK_H
#define KEFU_WORKER_WK_H

#include <stddef.h>
#include <stdint.h>

#include <event2/event.h>
#include <jansson.h>

#include "kefu/config.h"
#include "kefu/redis.h"

struct event_base;

typedef struct wk_options {
    char *redis;
    char *consumer;
    char *log_level;
    long long batch;
    long long redis_timeout_ms;
    long long inbox_maxlen;
    long long claim_idle_ms;
    long long claim_interval_ms;
    /* routing and assignment */
    char *routes;
    char *default_group;
    char *default_priority;
    char *fallback_groups;
    char *staff_domains;
    long long relax_after_ms;
    long long default_max_chats;
    long long assign_batch;
    long long assign_interval_ms;
    long long history_on_assign;
    long long position_max;
    long long position_interval_ms;
    /* breaks and presence */
    char *break_policy;
    long long break_meal_pct;
    long long break_restroom_pct;
    long long break_handover_pct;
    long long break_other_max;
    long long offline_grace_ms;
    long long presence_check_ms;
    /* SLA */
    char *sla_first_response_ms;
    char *sla_first_response_from;
    long long sla_alert_after_ms;
    long long sla_reassign_after_ms;
    char *sla_respond_ms;
    char *sla_resolve_ms;
    long long timer_poll_ms;
    long long sla_lease_ms;
    /* closing, monitoring */
    long long rate_window_ms;
    long long survey;
    long long monitor_ttl_ms;
    long long alert_keep_days;
    long long alert_day_max;
    char *canned_replies;
    /* patterns across conversations */
    long long repeat_threshold;
    long long repeat_window_ms;
    long long trend_threshold;
    long long trend_window_ms;
    char *trend_keywords;
    long long stats_interval_s;
    char *stats_timezone;
    long long stats_days;
    long long fcr_days;
    /* QA sampling (qa.c) */
    char *qa_rate;
    long long qa_min_per_agent;
    char *qa_seed;
    long long qa_delay_s;
    /* customers who left mid-conversation (callback.c) */
    long long callback_grace_ms;
    long long callback_deadline_ms;
    /* the archive (archive.c) */
    char *archive_db;
    long long archive_mask;
    long long archive_delay_s;
    long long archive_trim_s;
    long long archive_batch;
    long long archive_lease_ms;
    long long retention_days;
    /* health, readiness and metrics over HTTP (http.c) */
    char *http_bind;
    long long http_port;
} wk_options;

extern const kf_option wk_option_table[];
extern const kf_config_info wk_config_info;

/** Checks values the option table cannot (rule syntax, names); 0 or -1 with err set. */
int wk_options_check(const wk_options *o, char *err, size_t errlen);

/* SLA firing delay histogram bounds, milliseconds (the last bucket is +Inf). */
#define WK_LATE_BUCKETS 8
extern const int wk_late_bounds_ms[WK_LATE_BUCKETS - 1];

typedef struct wk_stats {
    uint64_t events, events_claimed, events_failed;
    uint64_t events_old; /* of them read from the single stream of earlier versions */
    uint64_t assigned, assign_conflicts, reservations_undone;
    uint64_t timers_fired, timers_cancelled, timers_stale, timers_reclaimed, breaches;
    uint64_t timers_kept; /* deadlines of automatic assignments waiting for their master (sla.c) */
    uint64_t reassigned, positions_pushed;
    uint64_t agents_offline;
    uint64_t pattern_alerts;  /* repeat and trend alerts (patterns.c) */
    uint64_t callback_checks;    /* customer-left checks scheduled (callback.c) */
    uint64_t callback_cancelled; /* ... ended without an alert: back in time, nothing open */
    uint64_t callback_alerts;    /* customer_left alerts sent */
    uint64_t callback_tasks;     /* call-back tasks created */
    uint64_t monitor_pushes;  /* pushes to monitoring supervisors (any list) */
    uint64_t monitor_dropped; /* pushes dropped because the supervisors' list could not be read */
    uint64_t qa_samples;      /* QA samples of a day stored by this worker (qa.c) */
    uint64_t qa_sampled;      /* conversations in them */
    int64_t timer_late_max_ms; /* largest firing delay after the deadline since the last report */
    uint64_t timer_late_bucket[WK_LATE_BUCKETS]; /* firing delays (metrics histogram) */
    uint64_t timer_late_ms_sum;
} wk_stats;

typedef struct wk_worker {
    wk_options opt;
    const char *config_file;
    int argc;
    char **argv;
    struct event_base *base;
    kf_redis *redis;  /* every command */
    kf_redis *reader; /* only the blocking XREADGROUP, which would hold up a shared connection */
    char consumer[128];
    int draining; /* SIGTERM: no new work is started; /readyz answers 503 */
    int stopping; /* set before the Redis clients are freed: callbacks issue nothing more */
    wk_stats stats;
} wk_worker;

extern wk_worker wk;

int64_t wk_now_ms(void);

/** A timer on the worker's loop that calls cb every `ms` milliseconds, from now on. */
struct event *wk_timer_every(long long ms, event_callback_fn cb, void *arg);

/* ---- completion of one lifecycle event: acknowledged when every command it issued succeeded */
typedef struct wk_job wk_job;
/** Takes a reference for one more command of the job (j may be NULL: untracked). */
wk_job *wk_job_ref(wk_job *j);
/** Drops a reference; failed marks the event for a retry (not acknowledged). */
void wk_job_unref(wk_job *j, int failed);
/** A kf_redis_cb that unrefs the wk_job in priv, failing it on a transport or error reply. */
void wk_job_cb(const redisReply *r, const char *err, void *priv);

/* ---- Redis helpers (push.c) ---- */
/** The staff domain of a group (option staff_domains; NULL: the default group's) into out, which
 * holds KF_GROUP_MAX + 1 bytes. Returns out. */
const char *wk_domain_of(const char *group, char *out);
/** The same script on the slot of the staff domain of group (NULL: the default group's). */
void wk_staff_script_for(const char *group, const char *name, kf_redis_cb *cb, void *priv,
                         int argc, const char **argv);
/** agent_load.lua op ("add" | "remove") of conv for agent, in the staff domain of the
 * conversation's group: group when known, else read from the conversation (only when there are
 * staff domains). cb gets the script's answer, or (NULL, err) when the group could not be read. */
void wk_agent_load(const char *op, const char *agent, const char *conv, const char *group,
                   kf_redis_cb *cb, void *priv);
/** EVALSHA of a conversation script with meta, messages and record stream as KEYS. */
void wk_conv_script(const char *conv, const char *name, kf_redis_cb *cb, void *priv, int argc,
                    const char **argv);
/** A script answer {"S"|..., json}: the code letter, or 0 on failure; *json gets element 1
 * parsed (NULL when absent or empty). */
char wk_script_json(const redisReply *r, const char *err, json_t **json);
/** Pushes payload (stolen) to the users' connections through the node inboxes. */
void wk_push(json_t *payload, const char *const *users, size_t n);
/** Pushes payload (stolen) to the monitoring supervisors: those in `monitors` (a JSON array
 * from a {staff} script), or when NULL those subscribed when the push is made (the list is read
 * after this call, so nobody whose subscription was answered before is skipped). */
void wk_push_monitors(json_t *payload, const json_t *monitors);

/* alerts.c: the recent alerts kept for alert.list */
/** Appends the alert (borrowed; its `type` is left out) to the day's stream. */
void wk_alert_record(const json_t *alert);
/** A bot flagged conv as sensitive (event `flagged`): records the alert the gateway pushed. */
void wk_alert_flagged(wk_job *j, const char *conv, const char *reason);

/* patterns.c: repeat and trend alerts, fed by lifecycle events */
void wk_patterns_unsatisfied(wk_job *j, const char *conv, const char *why);
void wk_patterns_opened(wk_job *j, const char *conv);
/** A customer's message in conv contained a configured trend keyword (event `keyword`). */
void wk_patterns_keyword(wk_job *j, const char *conv, const char *customer, const char *keyword);

/* ---- statistics (stats.c) ---- */
/** Loads stats_timezone; at start and on SIGHUP (0, or -1 with a reason). */
int wk_stats_configure(const wk_options *o, char *err, size_t errlen);
void wk_stats_stop(void);
/** The local day of stats_timezone (days since 1970-01-01) of unix time t_s. */
int64_t wk_stats_day(int64_t t_s);
/** That day as YYYYMMDD, the statistics keys' tag. */
void wk_stats_day_str(int64_t day, char out[12]);
/** When the day's statistics keys expire (unix s): stats_days after the day. */
long long wk_stats_expire_at(int64_t day);
void wk_stats_opened(wk_job *j, const char *conv, long long ts);
void wk_stats_closed(wk_job *j, const char *conv, long long ts);
void wk_stats_rated(wk_job *j, const char *conv, long long ts, long long stars);
struct evbuffer;
/** This worker's statistics counters in the Prometheus text format. */
void wk_stats_render(struct evbuffer *o);
/** Publishes the business configuration to every staff domain's copy (kefu:{staff}:config,
 * kefu:{staff:<domain>}:config). */
void wk_config_publish(void);
/** The last publication of the configuration succeeded in every staff domain (0 before the
 * first answers). */
int wk_config_published(void);
/** The master of some staff domain's copy of the configuration is up. */
int wk_config_slot_up(void);
void wk_push_start(void);
void wk_push_stop(void);

/* ---- events.c: the lifecycle stream ---- */
void wk_events_start(void);
void wk_events_stop(void);
void wk_events_redis_up(void);
/** The last read of every partition in the group was answered (the groups exist, this consumer
 * reads them) and their servers are up. */
int wk_events_reading(void);
/** How many of the KF_PARTS partitions that is true of. */
unsigned wk_events_partitions_reading(void);
/** The single stream of earlier versions exists (and is drained), as far as this worker knows. */
int wk_events_old_draining(void);

/* ---- assign.c: queues and automatic assignment ---- */
void wk_assign_start(void);
void wk_assign_stop(void);
/** Marks a group for an assignment run soon (a new conversation, an agent with room). */
void wk_assign_kick(const char *group);
/** Marks every group of a comma-joined list (empty: every known group). */
void wk_assign_kick_list(const char *groups);
/** Conversation `conv` was assigned to `agent` (by anyone): its timers and pushes are done by
 * the caller; this only drops it from the customer position cache. */
void wk_assign_forget(const char *conv);

/* ---- sla.c: deadlines ---- */
void wk_sla_start(void);
void wk_sla_stop(void);
/** Timers of a new conversation (priority tiers; first response when counted from queueing).
 * Tracked by job j (may be NULL). */
void wk_sla_opened(wk_job *j, const char *conv, const char *channel, const char *priority,
                   long long created_ms);
/** Timers of an assignment `seq` made at assigned_ms. */
void wk_sla_assigned(wk_job *j, const char *conv, const char *channel, long long seq,
                     long long assigned_ms);

/* ---- callback.c: customers who left mid-conversation, call-back tasks ---- */
void wk_callback_start(void);
void wk_callback_stop(void);
/** A customer's last connection on a gateway closed at left_ms: checks after callback_grace_ms
 * (tracked by job j). */
void wk_callback_left(wk_job *j, const char *customer, long long left_ms);

/* ---- presence.c: agents whose devices all disconnected; load set repair ---- */
void wk_presence_start(void);
void wk_presence_stop(void);

/* ---- qa.c: the daily QA sample ---- */
/** Checks qa_rate; 0 or -1 with err set. */
int wk_qa_check(const wk_options *o, char *err, size_t errlen);
void wk_qa_start(void);
void wk_qa_stop(void);

/* ---- archive.c: closed conversations into PostgreSQL, trimmed from Redis ---- */
/** Checks archive_db's syntax; 0 or -1 with err set. */
int wk_archive_check(const wk_options *o, char *err, size_t errlen);
void wk_archive_start(void);
void wk_archive_stop(void);
/** A conversation closed at ts: pending for the archive, or its keys' retention set. */
void wk_archive_closed(wk_job *j, const char *conv, long long ts);
/** A conversation rated at ts: archived again (the rating joins the archive). */
void wk_archive_rated(wk_job *j, const char *conv, long long ts);
struct evbuffer;
void wk_archive_render(struct evbuffer *o);

/* ---- http.c: /healthz, /readyz, /metrics ---- */
/** Listens on http_bind:http_port (nothing when the port is 0); -1 with err set. */
int wk_http_start(char *err, size_t errlen);
void wk_http_stop(void);
/** NULL when the worker can do its job, else why not (a static or internal buffer). */
const char *wk_ready_reason(void);
/** --wait-ready: polls /readyz of the worker configured like this one until it answers 200
 * (returns 0) or timeout_s passed (returns 1, the last reason on stderr). */
int wk_http_wait_ready(const char *host, int port, double timeout_s);
/** Appends the Prometheus text exposition of the worker's counters to out. */
struct evbuffer;
void wk_metrics_render(struct evbuffer *out);

#endif
