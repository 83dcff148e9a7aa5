/* Request plumbing every request module uses (gateway/request.c): the request tables and their
 * role masks, the request context, answers, field readers, the one reader of script answers,
 * follow-up writes kept while their Redis server is down, lifecycle events, queueing, and the
 * hooks through which other modules (bots) follow the message path. */
#ifndef KEFU_GATEWAY_REQUEST_H
#define KEFU_GATEWAY_REQUEST_H

#include <stddef.h>

#include <hiredis/hiredis.h>
#include <jansson.h>

#include "gateway.h"
#include "kefu/redis.h"

#define CONV_ID_MAX 64
#define CID_MAX 64
#define TOPIC_MAX 256

/* ---- request tables: each request module (core conversations, agent states, ...) exports one;
 * the dispatcher (handlers.c) walks them ---- */

/* Role masks for gw_handler.roles. */
#define R_CUST (1u << KF_ROLE_CUSTOMER)
#define R_AGENT (1u << KF_ROLE_AGENT)
#define R_SUP (1u << KF_ROLE_SUPERVISOR)
#define R_ADMIN (1u << KF_ROLE_ADMIN)
#define R_ANY (R_CUST | R_AGENT | R_SUP | R_ADMIN)
#define R_STAFF (R_AGENT | R_SUP | R_ADMIN)

typedef struct gw_handler {
    const char *type;
    unsigned roles; /* who may send it; others get forbidden */
    void (*fn)(gw_conn *c, json_t *msg); /* msg is borrowed */
} gw_handler;

/* ---- the request context ---- */

/* One request in flight: the connection (referenced), its req id, and per-request state. */
typedef struct req_ctx {
    gw_conn *c;
    json_t *req;
    char conv[CONV_ID_MAX + 1];
    int pending;     /* sub-commands still unanswered */
    const char *err; /* first transport failure among them ("unavailable", "timeout") */
    char *err_code;  /* an error code from a script ("forbidden", ...), malloc'd */
    json_t *acc;     /* accumulated answer */
    char ticket[64];
    char group[64];
    int access_ok;
    int limit;
    char prev[48];   /* history: id of the message before the page ("" when none) */
    void (*done)(struct req_ctx *ctx);
} req_ctx;

/** New context holding a reference on c and on req (may be NULL). */
req_ctx *gw_ctx_new(gw_conn *c, const json_t *req);
void gw_ctx_free(req_ctx *x);

/* ---- answers ---- */

/** Sends {"type":"error",...} for a request (counted by code); dropped once c is closing. */
void gw_reply_error(gw_conn *c, const json_t *req, const char *code, const char *message);
/** {"type":"ok","req":..} merged with fields (stolen, may be NULL); dropped if c is gone. */
void gw_reply_ok(gw_conn *c, const json_t *req, json_t *fields);
/** Answers x's err_code, or `unavailable` when a command failed. */
void gw_reply_failure(req_ctx *x);

/* ---- field readers: on a bad field they answer bad_request (too_large for an over-long
 * string) themselves and return -1 ---- */
int gw_get_str(gw_conn *c, const json_t *msg, const char *name, int required, size_t maxlen,
               const char **out);
int gw_get_int(gw_conn *c, const json_t *msg, const char *name, long long def, long long min,
               long long max, long long *out);
/** Reads and checks "conv"; on success *xp is a new context with conv filled in. */
int gw_get_conv(gw_conn *c, const json_t *msg, req_ctx **xp);
/** 1 when s is made of [A-Za-z0-9_-] only (conversation ids, group names). */
int gw_id_chars_ok(const char *s);

/** {"id","role","name"} of the connection's user. */
json_t *gw_from_obj(const gw_conn *c);

/* ---- script answers (read by kf_script_parse, kefu/redis.h) ---- */

/** kf_script_parse for a request: a failure is recorded in x (x->err for a transport failure,
 * x->err_code otherwise; a Redis error is logged) for gw_reply_failure. Returns 0 when the
 * script succeeded with `nstr` leading strings, -1 otherwise. */
int gw_script_result(req_ctx *x, const redisReply *r, const char *err, size_t nstr);
/** Distinct non-empty user ids from r->element[from..], except `except`; returns the count. */
size_t gw_members(const redisReply *r, size_t from, const char *except, const char **out,
                  size_t max);
/** EVALSHA script with `key` as KEYS[1] and argv (at most GW_SCRIPT_ARGS; more is a caller's
 * bug and aborts) as ARGV (lens NULL: strlen), on key's slot; cb gets x. */
#define GW_SCRIPT_ARGS 15
void gw_conv_script(req_ctx *x, const char *script, const char *key, kf_redis_cb *cb, int argc,
                    const char **argv, const size_t *lens);

/* ---- follow-up writes ---- */

/** Sends a write that follows a request already answered ok (a lifecycle event, a queue
 * entry): kept and tried again in order while its Redis server is unavailable. */
void gw_redis_kept(const char *key, int argc, const char **argv);
/** Shutdown: what is still kept is lost (logged). */
void gw_redis_kept_stop(void);
/** A set operation (SADD, SREM, ZREM) on key that follows an answered request (kept). */
void gw_redis_kept_member(const char *key, const char *verb, const char *member);
/** XADD to the lifecycle stream (kept), the partition of conv (of c's user when conv is ""):
 * ev, conv, by (c's user), ts and up to two more fields. */
void gw_lifecycle(const char *ev, const char *conv, const gw_conn *c, const char *k1,
                  const char *v1, const char *k2, const char *v2);

/* ---- queueing: priority, then customer level (VIP first), then FIFO (kefu/service.h) ---- */

/** The waiting start of a conversation queued now (unix us), strictly increasing per process. */
long long gw_queue_time_now(void);
/** ZADD of conv into group's queue with the score of (prio: -1 for medium, level, t_us). */
void gw_queue_add(const char *conv, const char *group, int prio, int level, long long t_us,
                  kf_redis_cb *cb, void *priv);
/** Puts a conversation in a skill group's waiting queue (FIFO by time of entry); cb (may be
 * NULL) gets the ZADD's answer. The conversation's meta state must already be "waiting". */
void gw_conv_enqueue(const char *conv, const char *group, kf_redis_cb *cb, void *priv);

/* ---- hooks: modules that follow the message path register here (gateway/bot.c) ---- */

typedef struct gw_hooks {
    /** When set, conv.open stores new conversations in this state instead of "waiting" and
     * does not queue them: the module queues them itself (the bots' handoff). */
    const char *new_state;
    /** conv.open stored a conversation (in new_state) and answered it. */
    void (*conv_opened)(const char *conv);
    /** msg.send stored a new message (not a retry's duplicate) of `from` in conv. */
    void (*message_stored)(const gw_conn *from, const char *conv, const char *text, size_t len);
} gw_hooks;

/** Registers h (borrowed, kept until unregistered); at most 4 at a time. */
void gw_hooks_register(const gw_hooks *h);
void gw_hooks_unregister(const gw_hooks *h);
/** The state a new conversation starts in: a registered new_state, else "waiting". */
const char *gw_hooks_new_state(void);
void gw_hooks_conv_opened(const char *conv);
void gw_hooks_message_stored(const gw_conn *from, const char *conv, const char *text, size_t len);

#endif
