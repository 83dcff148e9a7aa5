/* Customer-service rules shared by the gateway and the worker: priorities, the waiting-queue
 * order, routing a new conversation to a skill group, per-channel and per-priority values, and
 * the keys of agent (staff), SLA and conversation-record state. See docs/architecture.md. */
#ifndef KEFU_SERVICE_H
#define KEFU_SERVICE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <jansson.h>

#include "kefu/keys.h"

/** Conversation priority; the order is the queue order (high first). */
typedef enum { KF_PRIO_HIGH = 0, KF_PRIO_MEDIUM = 1, KF_PRIO_LOW = 2 } kf_priority;

#define KF_GROUP_MAX 32 /* bytes of a skill group name, [a-z0-9_-]{1,32} like token skills */

/** "high", "medium", "low". */
const char *kf_priority_name(kf_priority p);
/** Parses a priority name; -1 when unknown or NULL. */
int kf_priority_parse(const char *s);

/** 1 when s is a valid group name ([a-z0-9_-]{1,KF_GROUP_MAX}). */
int kf_group_valid(const char *s);

/* Waiting-queue score: (priority, 100 - level) as the class, then the time the conversation
 * started waiting in units of 64 us since 2024-01-01. Class in the high bits, time in the low
 * 44 bits: every score stays below 2^53 and so is exact as a Redis double. */
#define KF_QUEUE_EPOCH_US 1704067200000000LL
#define KF_QUEUE_TIME_BITS 44

/** Score of a conversation of priority p and customer level (0..100, clamped) that started
 * waiting at t_us (unix microseconds). Lower scores are served first. */
long long kf_queue_score(kf_priority p, int level, long long t_us);
/** The waiting start (unix microseconds, 64 us resolution) encoded in a score. */
long long kf_queue_score_time_us(long long score);

/** Routes a new conversation by rules "match=group[/priority], ...": match is `channel:<name>`,
 * `topic:<keyword>` (ASCII case-insensitive substring of the topic; other bytes exact) or `*`.
 * Rules are separated by ',' ';' or newlines; the first match wins. On a match, writes the group
 * (into group[glen]) and the priority (-1 when the rule names none) and returns 1; returns 0 when
 * nothing matched (outputs untouched), -1 on a syntax error (with err set). topic may be NULL. */
int kf_route_match(const char *rules, const char *channel, const char *topic, char *group,
                   size_t glen, int *priority, char *err, size_t errlen);

/** Looks up `key` in "k=v,k=v,...,*=v" (values: integers >= 0); `*` is the fallback. Returns
 * the value, or def when neither key nor `*` is listed or the spec is malformed. */
long long kf_spec_value(const char *spec, const char *key, long long def);
/** 1 when spec is a well-formed "k=v,..." list of integers >= 0 (keys [a-z0-9_*-]+), else 0. */
int kf_spec_valid(const char *spec);

/* ---- trend keywords (worker option trend_keywords, published to the gateways) ----
 * "退款, refund,WiFi down": keywords separated by ',' or the full-width '，', each trimmed of
 * spaces; ASCII letters are kept in lower case and compared without case, other bytes exact (a
 * UTF-8 substring match). */
#define KF_KEYWORDS_MAX 64
#define KF_KEYWORD_MAX 64 /* bytes */

/** Splits spec into out (at most max keywords, each lowered); returns how many, or -1 with err
 * set when a keyword is longer than KF_KEYWORD_MAX bytes or there are more than max. */
int kf_keywords_parse(const char *spec, char out[][KF_KEYWORD_MAX + 1], size_t max, char *err,
                      size_t errlen);
/** 1 when text[len] contains kw (as kf_keywords_parse gives it), ASCII letters without case. */
int kf_keyword_in(const char *text, size_t len, const char *kw, size_t kwlen);

/* ---- staff domains: the partition of the skill groups whose agent state shares a slot ----
 * Spec (worker option staff_domains, published to the gateways): "domain=group,group;..." --
 * domains separated by ';' or newlines, a domain's groups by ','; names [a-z0-9_-]{1,32}.
 * A group listed nowhere belongs to the domain "default" (KF_STAFF_DEFAULT), which may also be
 * listed. NULL or "" is no domain but the default. */

/** 1 when spec is well formed: every name valid, no group in two domains, no domain twice, no
 * domain without groups; else 0 with err set. */
int kf_staff_domains_valid(const char *spec, char *err, size_t errlen);
/** The domain of group under spec, into out (at most KF_GROUP_MAX + 1 bytes). Returns out. */
const char *kf_staff_domain_of(const char *spec, const char *group, char *out, size_t outlen);
/** The domain of a comma-joined group list (an agent's skills; "" stands for default_group).
 * Returns 0 with the domain in out, or -1 when the groups span two domains (out then holds the
 * first domain, other the second). */
int kf_staff_domain_of_groups(const char *spec, const char *groups, const char *default_group,
                              char *out, char *other, size_t outlen);
/** Every domain of spec, "default" first (always present): names into out[i] (each
 * KF_GROUP_MAX + 1 bytes), at most max. Returns the count. */
size_t kf_staff_domain_list(const char *spec, char (*out)[KF_GROUP_MAX + 1], size_t max);
#define KF_STAFF_DOMAINS_MAX 64

/* ---- pushes built from script answers (shared so gateway and worker send the same shapes) ---- */

/** The `conv.assigned` push for conv from the view conv_assign.lua / conv_transfer.lua return
 * (borrowed): metadata, assignment time and the recent messages shaped like `msg` pushes. */
json_t *kf_push_conv_assigned(const char *conv, const json_t *view);
/** `{"type":"monitor","kind":"agent", ...}` from an agent state object (borrowed). */
json_t *kf_push_agent_monitor(const json_t *state);
/** Up to max strings of a JSON array into out (an empty Lua table arrives as {} and gives 0);
 * returns the count. The strings stay owned by arr. */
size_t kf_json_strings(const json_t *arr, const char **out, size_t max);

typedef struct kf_redis kf_redis;
typedef struct redisReply redisReply;

/** EVALSHA of a staff script on the slot of staff domain `domain` (NULL or "default": {staff}):
 * KEYS[1] is the domain's copy of the configuration, whose prefix the scripts build every other
 * key from; argv (at most 23) ARGV. Shared by the gateway and the worker. */
void kf_staff_script_in(kf_redis *r, const char *domain, const char *name,
                        void (*cb)(const redisReply *, const char *, void *), void *priv,
                        int argc, const char **argv);
/** EVALSHA of a conversation script on r: KEYS are the conversation's meta hash, messages
 * stream and record stream; argv (at most 21) ARGV. */
void kf_conv_script(kf_redis *r, const char *conv, const char *name,
                    void (*cb)(const redisReply *, const char *, void *), void *priv, int argc,
                    const char **argv);

#endif
