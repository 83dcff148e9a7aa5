/* The Redis key schema shared by gateway and worker. Hash tags keep a conversation's keys (and a
 * user's, a node's) in one slot and therefore on one server. See docs/architecture.md. */
#ifndef KEFU_KEYS_H
#define KEFU_KEYS_H

#include <stdio.h>
#include <string.h>

#include "kefu/hash.h"

#define KF_KEY_MAX 400

/* Conversation metadata hash: customer, channel, topic, ticket, state, agent, created, ... */
static inline void kf_key_conv_meta(char *k, const char *conv) {
    snprintf(k, KF_KEY_MAX, "kefu:{c:%s}:meta", conv);
}
/* Conversation messages stream (ids are message ids). */
static inline void kf_key_conv_msgs(char *k, const char *conv) {
    snprintf(k, KF_KEY_MAX, "kefu:{c:%s}:msgs", conv);
}
/* A bot conversation's bot state: hash {v: version, s: msgpack state} (gateway/bot.c). */
static inline void kf_key_conv_bot(char *k, const char *conv) {
    snprintf(k, KF_KEY_MAX, "kefu:{c:%s}:bot", conv);
}
/* Set of a user's open conversations. */
static inline void kf_key_user_convs(char *k, const char *user) {
    snprintf(k, KF_KEY_MAX, "kefu:{u:%s}:convs", user);
}
/* Presence: sorted set node -> expiry (unix ms), refreshed by the node's heartbeat. */
static inline void kf_key_user_nodes(char *k, const char *user) {
    snprintf(k, KF_KEY_MAX, "kefu:{u:%s}:nodes", user);
}
/* Nodes that cached a lookup of the presence above: sorted set node -> until (unix ms), so a
 * new registration knows how long stale copies may be used (presence_attach.lua). */
static inline void kf_key_user_cached(char *k, const char *user) {
    snprintf(k, KF_KEY_MAX, "kefu:{u:%s}:cachedby", user);
}
/* Patterns that concern supervisors (worker/patterns.c; pattern_count.lua): a customer's
 * unsatisfying conversations about one category or topic (kind "c" or "t", and the value's
 * kf_hash_str), conversation -> time; and a topic's customers, customer -> time. Each with the
 * flag of its last alert. */
static inline void kf_key_user_unsat(char *k, const char *user, const char *kind,
                                     unsigned long long h, int alerted) {
    snprintf(k, KF_KEY_MAX, "kefu:{u:%s}:unsat%s:%s:%016llx", user, alerted ? "-alerted" : "",
             kind, h);
}
static inline void kf_key_trend(char *k, unsigned long long topic_hash, int alerted) {
    snprintf(k, KF_KEY_MAX, "kefu:{trend:%016llx}:%s", topic_hash, alerted ? "alerted" : "customers");
}
/* The same for a trend keyword (worker option trend_keywords): its customers, and its flag. */
static inline void kf_key_trend_kw(char *k, unsigned long long keyword_hash, int alerted) {
    snprintf(k, KF_KEY_MAX, "kefu:{trendkw:%016llx}:%s", keyword_hash,
             alerted ? "alerted" : "customers");
}
/* A node's inbox stream. */
static inline void kf_key_node_inbox(char *k, const char *node) {
    snprintf(k, KF_KEY_MAX, "kefu:{n:%s}:inbox", node);
}
/* The single ticket counter of one channel-day of earlier versions, e.g. tag web-20261123
 * (channel as given, lower case). Still read once per channel-day by each gateway, to go on
 * with it on the day of an upgrade; a day it does not exist for is marked
 * (KF_TICKET_LEGACY_CLOSED, ticket_mode.lua) and numbered by kf_key_ticket_part. */
static inline void kf_key_ticket_seq(char *k, const char *channel_day) {
    snprintf(k, KF_KEY_MAX, "kefu:{t:%s}:seq", channel_day);
}
/* Waiting queue of a skill group: sorted set conv -> enqueue time (ms). */
static inline void kf_key_queue(char *k, const char *group) {
    snprintf(k, KF_KEY_MAX, "kefu:{q:%s}:waiting", group);
}
/* Partitions of the lifecycle stream and of the SLA deadlines: each lives in KF_PARTS slots,
 * so losing one Redis Cluster master stalls only the partitions it serves. A conversation's
 * events and deadlines go to partition kf_part_of(conversation id), so its events stay in order;
 * an event without a conversation goes by its subject (agent status: the agent; customer_left:
 * the customer). Gateways and workers must agree on KF_PARTS and on the tags below: changing
 * either moves every key, which needs a migration like the one from the single stream
 * (docs/operations.md, "Upgrading to partitioned events and deadlines").
 *
 * The tags are "<name>:<k>-<two letters>", the letters picked (by searching) so that partition
 * k's slot lies near the middle of the k-th sixteenth of the 16384 slots: any split of the slot
 * range into contiguous shares, as redis-cli --cluster create makes, gives each master about
 * KF_PARTS / masters partitions (5, 6 and 5 of 3 masters). tests/unit/test_slot.c checks it. */
#define KF_PARTS 16
static inline const char *kf_ev_tag(unsigned p) {
    static const char *const tags[KF_PARTS] = {
        "ev:0-ca",  "ev:1-ri",  "ev:2-ny",  "ev:3-ou",  "ev:4-kd",  "ev:5-zl",
        "ev:6-vx",  "ev:7-gp",  "ev:8-oz",  "ev:9-nv",  "ev:10-yz", "ev:11-ww",
        "ev:12-ja", "ev:13-km", "ev:14-nz", "ev:15-ov"};
    return tags[p % KF_PARTS];
}
static inline const char *kf_sla_tag(unsigned p) {
    static const char *const tags[KF_PARTS] = {
        "sla:0-lu",  "sla:1-my",  "sla:2-qi",  "sla:3-pe",  "sla:4-dp",  "sla:5-ux",
        "sla:6-yl",  "sla:7-hd",  "sla:8-pj",  "sla:9-ab",  "sla:10-wn", "sla:11-ff",
        "sla:12-kt", "sla:13-jx", "sla:14-oo", "sla:15-nc"};
    return tags[p % KF_PARTS];
}

/** Partition of a conversation (or of the subject of an event without one): FNV-1a, folded
 * (kf_hash32), mod KF_PARTS. Stable across versions and processes. */
static inline unsigned kf_part_of(const char *id) {
    return kf_hash32(id, strlen(id)) % KF_PARTS;
}
/* Conversation lifecycle events (opened, accepted, closed, joined, ...) for the worker, stream
 * partition p. Consumer group `workers`. */
static inline void kf_key_lifecycle(char *k, unsigned p) {
    snprintf(k, KF_KEY_MAX, "kefu:{%s}:lifecycle", kf_ev_tag(p));
}
/* Ticket counter of partition p of one channel-day ("web-20261123"): in the lifecycle
 * partition's slot, so that the 16 counters of a channel spread over the masters like the
 * stream (kf_ticket_number turns counter and partition into the ticket number). */
static inline void kf_key_ticket_part(char *k, unsigned p, const char *channel_day) {
    snprintf(k, KF_KEY_MAX, "kefu:{%s}:ticket:%s", kf_ev_tag(p), channel_day);
}
/* The single stream of versions before the partitions: still drained by workers (events.c)
 * until it is empty, so that a rolling upgrade loses no event an old gateway wrote. */
#define KF_KEY_LIFECYCLE_OLD "kefu:{ev}:lifecycle"
/* Nodes seen: sorted set node -> last heartbeat (ms). */
#define KF_KEY_NODES "kefu:{nodes}:alive"


/* Agent state lives under one hash tag per staff domain (worker option staff_domains, which
 * partitions the skill groups): break ratios over every group an agent is in, and an agent's
 * capacity across all of its groups, are decided by one script on the domain's slot. The domain
 * `default` keeps the tag {staff}, so a deployment without domains has the keys it always had;
 * domain d has {staff:d}. The *_STAFF_* names below are the default domain's keys. */
#define KF_STAFF_DEFAULT "default"
#define KF_STAFF_PREFIX "kefu:{staff}:"
#define KF_KEY_STAFF_CONFIG "kefu:{staff}:config"     /* hash: published worker configuration */
#define KF_KEY_STAFF_AGENTS "kefu:{staff}:agents"     /* set: every registered agent */
#define KF_KEY_STAFF_GROUPS "kefu:{staff}:groups"     /* set: every known group */
#define KF_KEY_STAFF_BREAKS "kefu:{staff}:breaks"     /* zset: pending break request -> time */
#define KF_KEY_STAFF_MONITORS "kefu:{staff}:monitors" /* zset: supervisor -> expiry (ms) */
#define KF_KEY_STAFF_NOTRANSFER "kefu:{staff}:notransfer" /* hash: group -> wording */
#define KF_KEY_STAFF_SUPERVISORS "kefu:{staff}:supervisors" /* zset: bot alert target -> seen ms */
/* Key `what` ("config", "agents", "monitors", "agent:<id>", ...) of a staff domain; NULL, "" and
 * "default" are the default domain. Every domain holds its own copy of config (the scripts'
 * KEYS[1]), monitors and supervisors; the groups it lists keep their notransfer wording there. */
static inline void kf_key_staff_item(char *k, const char *domain, const char *what,
                                     const char *id) {
    if (!domain || !*domain || !strcmp(domain, KF_STAFF_DEFAULT))
        snprintf(k, KF_KEY_MAX, KF_STAFF_PREFIX "%s%s", what, id);
    else
        snprintf(k, KF_KEY_MAX, "kefu:{staff:%.32s}:%s%s", domain, what, id);
}
static inline void kf_key_staff_in(char *k, const char *domain, const char *what) {
    kf_key_staff_item(k, domain, what, "");
}
/* Agent record: name, groups, max, status, reason, since, pending, last_assigned, gone_since. */
static inline void kf_key_staff_agent_in(char *k, const char *domain, const char *agent) {
    kf_key_staff_item(k, domain, "agent:", agent);
}
static inline void kf_key_staff_agent(char *k, const char *agent) {
    kf_key_staff_agent_in(k, NULL, agent);
}
/* Set of the conversations an agent holds: its load. */
static inline void kf_key_staff_load_in(char *k, const char *domain, const char *agent) {
    kf_key_staff_item(k, domain, "load:", agent);
}
static inline void kf_key_staff_load(char *k, const char *agent) {
    kf_key_staff_load_in(k, NULL, agent);
}
/* SLA deadlines of partition p (member "<conv>|<kind>|<seq>|<step>|<deadline>|<due>", score =
 * due ms), the ones being fired (score = lease expiry) and the breach log (what = "timers",
 * "firing", "breaches"). */
static inline void kf_key_sla(char *k, unsigned p, const char *what) {
    snprintf(k, KF_KEY_MAX, "kefu:{%s}:%s", kf_sla_tag(p), what);
}
/* The single deadline sets of versions before the partitions: workers still fire what is in
 * them (sla.c); nothing is added. The old breach log is left to its readers. */
#define KF_KEY_SLA_TIMERS_OLD "kefu:{sla}:timers"
#define KF_KEY_SLA_FIRING_OLD "kefu:{sla}:firing"
/* Customers who left mid-conversation (worker/callback.c) and their call-back tasks
 * (lua/redis/callback_task.lua), all under one hash tag: checks due (customer -> due ms), the
 * ones being run ("<customer>|<due>" -> lease expiry), and the open tasks (id -> deadline), the
 * slot every task script runs on. */
#define KF_KEY_CB_CHECKS "kefu:{cb}:checks"
#define KF_KEY_CB_FIRING "kefu:{cb}:firing"
#define KF_KEY_CB_OPEN "kefu:{cb}:open"
/* One UTC day's alerts (YYYYMMDD), for alert.list: a capped stream, field `a` the alert as
 * JSON without its `type` (worker/alerts.c writes, gateway/alerts.c reads). */
static inline void kf_key_alerts(char *k, const char *day) {
    snprintf(k, KF_KEY_MAX, "kefu:{al:%s}:alerts", day);
}
/* alert.list reads back at most this many days (the bound of alert_keep_days). */
#define KF_ALERT_DAYS_MAX 31
/* A conversation's record: one stream entry per state change (ev, by, ts, ...). */
static inline void kf_key_conv_log(char *k, const char *conv) {
    snprintf(k, KF_KEY_MAX, "kefu:{c:%s}:log", conv);
}
/* One local day's statistics (docs/architecture.md): `n`, `seen`, `closed`, `agent`, `qa`, ... */
static inline void kf_key_stats(char *k, const char *day, const char *what) {
    snprintf(k, KF_KEY_MAX, "kefu:{st:%s}:%s", day, what);
}
/* One local day's QA sample (worker/qa.c, qa_sample.lua; day = YYYYMMDD in stats_timezone):
 * `info` (hash: n, k, sampled, rate, min_per_agent, by, at; its presence means "drawn") and
 * `sample` (sorted set conversation -> rank, 0 = best). */
static inline void kf_key_qa(char *k, const char *day, const char *what) {
    snprintf(k, KF_KEY_MAX, "kefu:{qa:%s}:%s", day, what);
}
/* Per group, beside its waiting queue: the assignment lock, its "run again" flag, and the
 * agent each re-queued conversation should not go back to. */
static inline void kf_key_queue_lock(char *k, const char *group) {
    snprintf(k, KF_KEY_MAX, "kefu:{q:%s}:lock", group);
}
static inline void kf_key_queue_dirty(char *k, const char *group) {
    snprintf(k, KF_KEY_MAX, "kefu:{q:%s}:dirty", group);
}
static inline void kf_key_queue_exclude(char *k, const char *group) {
    snprintf(k, KF_KEY_MAX, "kefu:{q:%s}:exclude", group);
}

#endif
