/* kefu-worker's options: every one with its default, bounds, reload behaviour and meaning. This
 * table is the only place they are written: --help, --dump-config, docs/operations.md and
 * deploy/kefu-worker.conf.example are printed from it (scripts/gen-docs.sh; a test fails on
 * drift). Options the gateways read too come from the shared rows of kefu/config.h. */
#include <stddef.h>

#include "wk.h"

#define O(f) offsetof(wk_options, f)
#define BIG 1000000000000LL

KF_SHARED_OPTION_CHECK(wk_options);

#define REDIS "Redis and the lifecycle stream"
#define LOG "Logging"
#define ROUTE "Routing and assignment"
#define BREAKS "Breaks and presence"
#define SLA "Deadlines (SLA)"
#define CLOSE "Closing and monitoring"
#define HTTP "Health and metrics"
#define PATTERNS "Patterns across conversations"
#define STATS "Statistics"
#define QA "Quality assurance (QA) sampling"
#define CALLBACK "Customers who left mid-conversation"
#define ARCHIVE "Archive and retention"

const kf_option wk_option_table[] = {
    KF_SHARED_OPTION_REDIS(wk_options, REDIS),
    KF_SHARED_OPTION_REDIS_TIMEOUT(wk_options, REDIS),
    {"consumer", KF_OPT_STR, O(consumer), "", 0, 0, 0, "consumer name in the group `workers`, unique per worker and stable across restarts; empty = `<host name>-<pid>`, which adds a consumer at every restart (the systemd unit passes `--consumer` with the host name).", REDIS},
    {"batch", KF_OPT_INT, O(batch), "100", 1, 10000, 0, "lifecycle events read per `XREADGROUP`.", REDIS},
    {"claim_idle_ms", KF_OPT_INT, O(claim_idle_ms), "5000", 100, 3600000, 1, "an event unacknowledged this long (its worker died) is taken over (`XAUTOCLAIM`).", REDIS},
    {"claim_interval_ms", KF_OPT_INT, O(claim_interval_ms), "1000", 50, 600000, 1, "how often to look for such events.", REDIS},
    KF_SHARED_OPTION_INBOX_MAXLEN(wk_options, REDIS),

    KF_SHARED_OPTION_LOG_LEVEL(wk_options, LOG),
    {"stats_interval_s", KF_OPT_INT, O(stats_interval_s), "60", 0, 86400, 1, "log a statistics line this often (0 = never).", LOG},

    {"routes", KF_OPT_STR, O(routes), "", 0, 0, 1, "conversation routing, published to the gateways: `channel:<c>=group[/priority], topic:<keyword>=group[/priority], *=group`; the first match wins.", ROUTE},
    {"default_group", KF_OPT_STR, O(default_group), "default", 0, 0, 1, "group of conversations no route matches, and of agents whose token has no skills.", ROUTE},
    {"default_priority", KF_OPT_STR, O(default_priority), "medium", 0, 0, 1, "priority of conversations no route gives one: `high`, `medium` or `low`.", ROUTE},
    {"fallback_groups", KF_OPT_STR, O(fallback_groups), "", 0, 0, 1, "skill relaxation: `group=fallback,...`; after `relax_after_ms` of waiting the fallback's agents are eligible too.", ROUTE},
    {"staff_domains", KF_OPT_STR, O(staff_domains), "", 0, 0, 0, "partition of the skill groups into staff domains, published to the gateways: `domain=group,group;domain=group,...`. A domain's agent state (status, breaks, load) lives under its own Redis hash tag `{staff:<domain>}`, so on a Redis Cluster losing one master stalls only its domains; groups listed nowhere are in the domain `default` (tag `{staff}`). A group's fallback must be in its domain; an agent whose skills span two domains is refused. Change it only with every agent offline (see Staff domains).", ROUTE},
    {"relax_after_ms", KF_OPT_INT, O(relax_after_ms), "60000", 0, BIG, 1, "waiting time before a conversation may go to its group's fallback.", ROUTE},
    {"default_max_chats", KF_OPT_INT, O(default_max_chats), "5", 1, 1000, 1, "capacity of an agent whose token has no `max_chats`.", ROUTE},
    {"assign_batch", KF_OPT_INT, O(assign_batch), "50", 1, 500, 1, "waiting conversations considered per assignment round.", ROUTE},
    {"assign_interval_ms", KF_OPT_INT, O(assign_interval_ms), "1000", 50, 600000, 1, "every group is looked at this often even without an event.", ROUTE},
    {"history_on_assign", KF_OPT_INT, O(history_on_assign), "20", 0, 200, 1, "recent messages sent with `conv.assigned`.", ROUTE},
    {"position_max", KF_OPT_INT, O(position_max), "100", 0, 10000, 1, "`queue.position` pushes go to the first this many waiting customers of a group.", ROUTE},
    {"position_interval_ms", KF_OPT_INT, O(position_interval_ms), "1000", 100, 600000, 1, "least time between position updates of one group.", ROUTE},

    {"break_policy", KF_OPT_STR, O(break_policy), "queue", 0, 0, 1, "a break its rule does not allow: `queue` (pending, approved by a supervisor or granted once it fits) or `refuse`.", BREAKS},
    {"break_meal_pct", KF_OPT_INT, O(break_meal_pct), "70", 0, 100, 1, "meal: this share of each of the agent's groups must stay available.", BREAKS},
    {"break_restroom_pct", KF_OPT_INT, O(break_restroom_pct), "80", 0, 100, 1, "restroom: share that must stay available.", BREAKS},
    {"break_handover_pct", KF_OPT_INT, O(break_handover_pct), "50", 0, 100, 1, "shift handover: share that must stay available.", BREAKS},
    {"break_other_max", KF_OPT_INT, O(break_other_max), "1", 0, 1000, 1, "other: agents per group away for it at once.", BREAKS},
    {"offline_grace_ms", KF_OPT_INT, O(offline_grace_ms), "30000", 0, BIG, 1, "an agent with no connected device is offline after this.", BREAKS},
    {"presence_check_ms", KF_OPT_INT, O(presence_check_ms), "500", 50, 600000, 1, "how often agents' connections are checked.", BREAKS},

    {"sla_first_response_ms", KF_OPT_STR, O(sla_first_response_ms), "web=15000,app=20000,*=30000", 0, 0, 1, "first-response deadline per channel, `channel=ms` pairs with `*` as the fallback (0 = none).", SLA},
    {"sla_first_response_from", KF_OPT_STR, O(sla_first_response_from), "assigned", 0, 0, 1, "the first-response clock starts when the conversation is `assigned` or `queued`.", SLA},
    {"sla_alert_after_ms", KF_OPT_INT, O(sla_alert_after_ms), "10000", 0, BIG, 1, "after a first-response breach warned the agent, alert supervisors this much later.", SLA},
    {"sla_reassign_after_ms", KF_OPT_INT, O(sla_reassign_after_ms), "0", 0, BIG, 1, "reassign when the assigned agent has not answered this long after assignment (0 = never).", SLA},
    {"sla_respond_ms", KF_OPT_STR, O(sla_respond_ms), "high=1800000,medium=7200000,low=86400000", 0, 0, 1, "response deadline per priority, from opening.", SLA},
    {"sla_resolve_ms", KF_OPT_STR, O(sla_resolve_ms), "high=86400000,medium=172800000,low=259200000", 0, 0, 1, "resolution deadline per priority, from opening.", SLA},
    {"timer_poll_ms", KF_OPT_INT, O(timer_poll_ms), "20", 5, 1000, 1, "how often due deadlines are claimed.", SLA},
    {"sla_lease_ms", KF_OPT_INT, O(sla_lease_ms), "2000", 100, 600000, 1, "a claimed deadline not done within this (its worker died) is handed out again.", SLA},

    {"rate_window_ms", KF_OPT_INT, O(rate_window_ms), "86400000", 1000, BIG, 1, "how long after closing a customer may rate.", CLOSE},
    {"survey", KF_OPT_BOOL, O(survey), "yes", 0, 0, 1, "send `survey.request` to the customer on close.", CLOSE},
    {"canned_replies", KF_OPT_STR, O(canned_replies), "", 0, 0, 1, "the standard lines agents pick in the workbench (greeting, closing, ...), published to the gateways and listed by `canned.list`: entries `label=text` separated by `|` (`greeting=您好，我是{agent}，很高兴为您服务|closing=感谢您的咨询，再见`); the workbench replaces `{customer}` and `{agent}`. Empty: the workbench's built-in lines.", CLOSE},
    {"monitor_ttl_ms", KF_OPT_INT, O(monitor_ttl_ms), "600000", 1000, BIG, 1, "a `monitor.subscribe` lasts this long.", CLOSE},
    {"alert_keep_days", KF_OPT_INT, O(alert_keep_days), "7", 1, 31, 1, "alerts to supervisors (SLA, `customer_left`, `repeat`, `trend`, a bot's `sensitive`) are also kept in Redis, one capped stream per UTC day, and listed by `alert.list`; a day's stream expires this many days after the day.", CLOSE},
    {"alert_day_max", KF_OPT_INT, O(alert_day_max), "10000", 100, 10000000, 1, "alerts kept per day (approximate `MAXLEN`: beyond it the oldest of the day are dropped).", CLOSE},

    {"repeat_threshold", KF_OPT_INT, O(repeat_threshold), "3", 0, 1000, 1, "alert monitoring supervisors (`alert` kind `repeat`) when one customer's conversations about the same category or topic ended unsatisfied (closed `unresolved`, or rated 2 stars or less) this many times within `repeat_window_ms`; 0 = off.", PATTERNS},
    {"repeat_window_ms", KF_OPT_INT, O(repeat_window_ms), "604800000", 60000, BIG, 1, "the window of `repeat_threshold` (default 7 days); one alert per customer and category or topic within it.", PATTERNS},
    {"trend_threshold", KF_OPT_INT, O(trend_threshold), "5", 0, 100000, 1, "alert monitoring supervisors (`alert` kind `trend`) when this many different customers opened conversations on the same topic (compared without case and extra spaces), or wrote the same keyword of `trend_keywords`, within `trend_window_ms`; 0 = off.", PATTERNS},
    {"trend_window_ms", KF_OPT_INT, O(trend_window_ms), "600000", 1000, BIG, 1, "the window of `trend_threshold` (default 10 minutes); one alert per topic or keyword within it.", PATTERNS},
    {"trend_keywords", KF_OPT_STR, O(trend_keywords), "", 0, 0, 1, "keywords counted like topics, published to the gateways: separated by `,` (or `，`), compared without ASCII case, other bytes exact, e.g. `退款,发票,wifi down` (at most 64, each up to 64 bytes). A gateway that stores a customer's message containing one tells the worker once per conversation and keyword; `trend_threshold` different customers writing the same keyword within `trend_window_ms` raise an `alert` of kind `trend` with `keyword`. Empty = off (no cost on `msg.send`).", PATTERNS},

    {"stats_timezone", KF_OPT_STR, O(stats_timezone), "UTC", 0, 0, 1, "the time zone whose days and hours the statistics count by: an IANA name (`Asia/Shanghai`), `UTC` or an offset (`+08:00`). Changing it splits the day it changes on.", STATS},
    {"stats_days", KF_OPT_INT, O(stats_days), "400", 1, 3650, 1, "how many days each day's statistics are kept in Redis.", STATS},
    {"fcr_days", KF_OPT_INT, O(fcr_days), "7", 0, 365, 1, "first-contact resolution: a conversation closed `resolved` counts as resolved at first contact unless the same customer opens another on the same topic within this many days (0 = every resolved one counts).", STATS},

    {"qa_rate", KF_OPT_STR, O(qa_rate), "0.05", 0, 0, 1, "share of the previous day's closed conversations drawn for QA review, a number in 0..1: the sample takes the ceil(qa_rate x n) best ranked.", QA},
    {"qa_min_per_agent", KF_OPT_INT, O(qa_min_per_agent), "1", 0, 1000, 1, "each agent who closed conversations that day gets at least this many in the sample (their best ranked others are added).", QA},
    {"qa_seed", KF_OPT_STR, O(qa_seed), "", 0, 0, 1, "secret of the draw: conversations are ranked by FNV-1a of `<qa_seed>|<day>|<conv>`, so the same seed draws the same sample. Set a private value: whoever knows it can tell in advance which conversations will be drawn.", QA},
    {"qa_delay_s", KF_OPT_INT, O(qa_delay_s), "600", 0, 43200, 1, "the previous day is drawn this long after local midnight (its last closes are counted by then).", QA},
    {"callback_grace_ms", KF_OPT_INT, O(callback_grace_ms), "30000", 0, BIG, 1, "a customer whose last connection closed while a conversation of theirs is `waiting` or `assigned`, and who is not connected again on any node this much later, makes an `alert` of kind `customer_left` (to the assigned agent, the joined and the monitoring supervisors), a `customer_left` entry in the record and a call-back task.", CALLBACK},
    {"callback_deadline_ms", KF_OPT_INT, O(callback_deadline_ms), "7200000", 1000, BIG, 1, "a call-back task is due this long after it was created (default 2 h); later it is listed as `overdue`.", CALLBACK},

    {"archive_db", KF_OPT_STR, O(archive_db), "", 0, 0, 0, "the archive database, a libpq connection string (`postgresql://kefu@db.example/kefu`, or `host=... dbname=...`; a password is better kept in `~/.pgpass` or `PGPASSWORD` than here): closed conversations are written to it (schema `sql/kefu-archive.sql`, created at start when missing) and later trimmed from Redis. Empty = no archive: closed conversations stay in Redis for `retention_days`. Give every worker the same value.", ARCHIVE},
    {"archive_mask", KF_OPT_BOOL, O(archive_mask), "yes", 0, 0, 1, "mask personal data (phone numbers, e-mail addresses, ID and bank card numbers) in the texts and names written to the archive: messages, names, topic, comments, QA notes. Agents still see the live text in Redis.", ARCHIVE},
    {"archive_delay_s", KF_OPT_INT, O(archive_delay_s), "300", 0, 31536000, 1, "a closed conversation is archived this long after the close, so the rating usually comes first (a rating that comes later archives it again).", ARCHIVE},
    {"archive_trim_s", KF_OPT_INT, O(archive_trim_s), "604800", 0, 31536000, 1, "an archived conversation's Redis keys are deleted this long after it was first archived (default 7 days), by one more archive pass that catches late QA reviews; keep it above `rate_window_ms`, since a conversation no longer in Redis cannot be rated or reviewed.", ARCHIVE},
    {"archive_batch", KF_OPT_INT, O(archive_batch), "100", 1, 10000, 1, "conversations a worker claims per archive poll (every second, or at once when a full batch is done).", ARCHIVE},
    {"archive_lease_ms", KF_OPT_INT, O(archive_lease_ms), "60000", 1000, 3600000, 1, "a claimed conversation not archived within this (its worker died or stalled) is handed to another worker.", ARCHIVE},
    {"retention_days", KF_OPT_INT, O(retention_days), "30", 0, 36500, 1, "without `archive_db`: a closed conversation's Redis keys (meta, messages, record, bot state) expire this many days after the close; 0 = kept forever. Statistics and QA samples are kept apart (`stats_days`). `kefu-export --redis` finds the conversations through the statistics' daily index, so it reaches back `stats_days` at most.", ARCHIVE},

    {"http_bind", KF_OPT_STR, O(http_bind), "127.0.0.1", 0, 0, 0, "address of the `/healthz`, `/readyz` and `/metrics` listener (`0.0.0.0` where a prober on another host, e.g. the kubelet, must reach it).", HTTP},
    {"http_port", KF_OPT_INT, O(http_port), "9091", 0, 65535, 0, "port of that listener; 0 = none (and `--wait-ready` cannot work). A port in use stops the worker at start (exit status 2).", HTTP},
    {NULL, 0, 0, NULL, 0, 0, 0, NULL, NULL},
};

const kf_config_info wk_config_info = {
    "kefu-worker", "/etc/kefu/worker.conf",
    "Give every worker the same file: the business rules are published to the gateways, and the "
    "last worker to publish wins. In production set at least: redis and consumer (stable, unique "
    "per worker).",
    "       kefu-worker [--config FILE] [--option value ...] --wait-ready[=SECONDS]\n"
    "           instead of running, wait until the worker configured like this answers /readyz\n"
    "           with 200 (exit 0), or SECONDS (default 30) passed (exit 1)\n",
};
