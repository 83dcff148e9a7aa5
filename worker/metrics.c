/* The worker's counters in the Prometheus text format (GET /metrics): what its statistics log
 * line reports, plus its readiness and the state of its two Redis clients. */
#include <event2/buffer.h>
#include <stdio.h>

#include "kefu/redis.h"
#include "kefu/route.h"
#include "wk.h"

const int wk_late_bounds_ms[WK_LATE_BUCKETS - 1] = {5, 10, 25, 50, 100, 250, 1000};

static void help(struct evbuffer *o, const char *name, const char *type, const char *text) {
    evbuffer_add_printf(o, "# HELP %s %s\n# TYPE %s %s\n", name, text, name, type);
}

static void counter(struct evbuffer *o, const char *name, const char *text, uint64_t v) {
    help(o, name, "counter", text);
    evbuffer_add_printf(o, "%s %llu\n", name, (unsigned long long)v);
}

static void gauge(struct evbuffer *o, const char *name, const char *text, long long v) {
    help(o, name, "gauge", text);
    evbuffer_add_printf(o, "%s %lld\n", name, v);
}

void wk_metrics_render(struct evbuffer *o) {
    const wk_stats *s = &wk.stats;
    const kf_route_stats *rs = kf_route_get_stats();
    gauge(o, "kefu_worker_ready", "The worker can do its job (/readyz answers 200) (1) or not (0).",
          wk_ready_reason() == NULL);
    gauge(o, "kefu_worker_consumer_group_reading", "The last read of every partition of the lifecycle stream in the consumer group was answered (1) or not (0).",
          wk_events_reading());
    gauge(o, "kefu_worker_event_partitions_reading", "Partitions of the lifecycle stream (of 16) whose last read was answered and whose Redis server is up.",
          wk_events_partitions_reading());
    gauge(o, "kefu_worker_old_stream_draining", "The single lifecycle stream of earlier versions exists and is drained (1) or not (0).",
          wk_events_old_draining());
    gauge(o, "kefu_worker_config_published", "The last publication of the configuration to the gateways succeeded (1) or not (0).",
          wk_config_published());
    counter(o, "kefu_worker_events_total", "Lifecycle events handled (read or taken over).", s->events);
    counter(o, "kefu_worker_events_claimed_total", "Lifecycle events taken over from a stopped worker or read back after a restart.", s->events_claimed);
    counter(o, "kefu_worker_events_old_total", "Lifecycle events read from the single stream of earlier versions (a rolling upgrade).", s->events_old);
    counter(o, "kefu_worker_events_failed_total", "Lifecycle events not completed (left pending for a retry).", s->events_failed);
    counter(o, "kefu_worker_assigned_total", "Conversations assigned automatically.", s->assigned);
    counter(o, "kefu_worker_assign_conflicts_total", "Assignments given up because the conversation or the agent changed first.", s->assign_conflicts);
    counter(o, "kefu_worker_reservations_undone_total", "Agent reservations released because their assignment did not happen.", s->reservations_undone);
    counter(o, "kefu_worker_reassigned_total", "Conversations taken from an agent who did not answer (sla_reassign_after_ms).", s->reassigned);
    counter(o, "kefu_worker_sla_timers_fired_total", "SLA deadlines that fired (warning, alert, breach or reassignment).", s->timers_fired);
    counter(o, "kefu_worker_sla_timers_cancelled_total", "SLA deadlines found already met when due.", s->timers_cancelled);
    counter(o, "kefu_worker_sla_timers_stale_total", "SLA deadlines of an earlier assignment or a closed conversation.", s->timers_stale);
    gauge(o, "kefu_worker_sla_timers_kept", "SLA deadlines of automatic assignments kept until the master of their partition answers.", (long long)s->timers_kept);
    counter(o, "kefu_worker_sla_timers_reclaimed_total", "SLA deadlines fired again after the worker holding them died.", s->timers_reclaimed);
    counter(o, "kefu_worker_sla_breaches_total", "SLA breaches recorded.", s->breaches);
    counter(o, "kefu_worker_pattern_alerts_total",
            "Repeat and trend alerts sent to monitoring supervisors.", s->pattern_alerts);
    counter(o, "kefu_worker_qa_samples_total",
            "Daily QA samples stored by this worker (the first worker to draw a day stores it).",
            s->qa_samples);
    counter(o, "kefu_worker_qa_sampled_total",
            "Conversations in the QA samples this worker stored.", s->qa_sampled);
    counter(o, "kefu_worker_callback_checks_total",
            "Customer-left checks scheduled (a customer's last connection on a gateway closed).", s->callback_checks);
    counter(o, "kefu_worker_callback_cancelled_total",
            "Customer-left checks that ended without an alert: the customer was connected again, or had nothing open.", s->callback_cancelled);
    counter(o, "kefu_worker_callback_alerts_total",
            "customer_left alerts sent (one per call-back task created).", s->callback_alerts);
    counter(o, "kefu_worker_callback_tasks_created_total", "Call-back tasks created.", s->callback_tasks);
    help(o, "kefu_worker_sla_fire_delay_seconds", "histogram", "How long after it was due an SLA deadline fired.");
    uint64_t cum = 0;
    for (int k = 0; k < WK_LATE_BUCKETS; k++) {
        cum += s->timer_late_bucket[k];
        if (k < WK_LATE_BUCKETS - 1)
            evbuffer_add_printf(o, "kefu_worker_sla_fire_delay_seconds_bucket{le=\"%g\"} %llu\n",
                                wk_late_bounds_ms[k] / 1000.0, (unsigned long long)cum);
        else
            evbuffer_add_printf(o, "kefu_worker_sla_fire_delay_seconds_bucket{le=\"+Inf\"} %llu\n",
                                (unsigned long long)cum);
    }
    evbuffer_add_printf(o, "kefu_worker_sla_fire_delay_seconds_sum %.3f\nkefu_worker_sla_fire_delay_seconds_count %llu\n",
                        (double)s->timer_late_ms_sum / 1000.0, (unsigned long long)cum);
    counter(o, "kefu_worker_positions_pushed_total", "queue.position pushes to waiting customers.", s->positions_pushed);
    counter(o, "kefu_worker_agents_offline_total", "Agents set offline after offline_grace_ms without a connected device.", s->agents_offline);
    counter(o, "kefu_worker_monitor_pushes_total", "Pushes to monitoring supervisors.", s->monitor_pushes);
    counter(o, "kefu_worker_monitor_dropped_total", "Pushes to monitoring supervisors dropped because their list could not be read.", s->monitor_dropped);
    counter(o, "kefu_worker_pushes_total", "Pushes sent to users through the node inboxes.", rs->pushes);
    counter(o, "kefu_worker_push_entries_total", "Node inbox entries written.", rs->entries);
    counter(o, "kefu_worker_push_lookup_failures_total", "Presence lookups that failed (those users missed the push).", rs->lookup_failures);
    counter(o, "kefu_worker_push_no_recipient_total", "Pushes none of whose users was connected anywhere.", rs->no_recipient);
    wk_stats_render(o);
    wk_archive_render(o);

    /* Redis: "commands" carries every command, "reader" only the blocking stream read */
    const struct {
        const char *name;
        kf_redis *r;
    } clients[2] = {{"commands", wk.redis}, {"reader", wk.reader}};
#define EACH for (int i = 0; i < 2; i++)
    help(o, "kefu_worker_redis_slots_up", "gauge", "Redis Cluster slots (of 16384) whose master the client reaches; 16384 for a reachable stand-alone server.");
    EACH evbuffer_add_printf(o, "kefu_worker_redis_slots_up{client=\"%s\"} %u\n", clients[i].name,
                             kf_redis_slots_up(clients[i].r));
    help(o, "kefu_worker_redis_masters", "gauge", "Redis servers that serve slots (1 for a stand-alone server).");
    EACH evbuffer_add_printf(o, "kefu_worker_redis_masters{client=\"%s\"} %u\n", clients[i].name,
                             kf_redis_masters(clients[i].r, NULL));
    help(o, "kefu_worker_redis_masters_up", "gauge", "Of those, the ones the client is connected to.");
    EACH {
        unsigned up = 0;
        kf_redis_masters(clients[i].r, &up);
        evbuffer_add_printf(o, "kefu_worker_redis_masters_up{client=\"%s\"} %u\n", clients[i].name, up);
    }
    help(o, "kefu_worker_redis_pending", "gauge", "Redis commands sent and not answered yet (or waiting to be retried).");
    EACH evbuffer_add_printf(o, "kefu_worker_redis_pending{client=\"%s\"} %zu\n", clients[i].name,
                             kf_redis_pending(clients[i].r));
    help(o, "kefu_worker_redis_commands_total", "counter", "Redis commands answered.");
    EACH evbuffer_add_printf(o, "kefu_worker_redis_commands_total{client=\"%s\"} %llu\n", clients[i].name,
                             (unsigned long long)kf_redis_get_stats(clients[i].r)->commands);
    help(o, "kefu_worker_redis_failures_total", "counter", "Redis commands failed: unavailable (no server for the slot, connection lost) or timeout.");
    EACH evbuffer_add_printf(o, "kefu_worker_redis_failures_total{client=\"%s\"} %llu\n", clients[i].name,
                             (unsigned long long)kf_redis_get_stats(clients[i].r)->failures);
    help(o, "kefu_worker_redis_redirects_total", "counter", "Redis Cluster redirections followed, by kind (moved, ask, retry: TRYAGAIN or CLUSTERDOWN).");
    EACH {
        const kf_redis_stats *st = kf_redis_get_stats(clients[i].r);
        evbuffer_add_printf(o, "kefu_worker_redis_redirects_total{client=\"%s\",kind=\"moved\"} %llu\n"
                               "kefu_worker_redis_redirects_total{client=\"%s\",kind=\"ask\"} %llu\n"
                               "kefu_worker_redis_redirects_total{client=\"%s\",kind=\"retry\"} %llu\n",
                            clients[i].name, (unsigned long long)st->moved, clients[i].name,
                            (unsigned long long)st->ask, clients[i].name, (unsigned long long)st->retried);
    }
#undef EACH
    /* round trips of the command client (the reader's are mostly its 1 s blocking reads) */
    const kf_redis_stats *st = kf_redis_get_stats(wk.redis);
    help(o, "kefu_worker_redis_command_seconds", "histogram", "Redis command round-trip time (the commands client).");
    cum = 0;
    for (int k = 0; k < 12; k++) {
        cum += st->latency_bucket[k];
        if (k < 11)
            evbuffer_add_printf(o, "kefu_worker_redis_command_seconds_bucket{le=\"%g\"} %llu\n",
                                kf_redis_latency_bounds_s[k], (unsigned long long)cum);
        else
            evbuffer_add_printf(o, "kefu_worker_redis_command_seconds_bucket{le=\"+Inf\"} %llu\n",
                                (unsigned long long)cum);
    }
    evbuffer_add_printf(o, "kefu_worker_redis_command_seconds_sum %.6f\nkefu_worker_redis_command_seconds_count %llu\n",
                        (double)st->latency_us_sum / 1e6, (unsigned long long)st->commands);
}
