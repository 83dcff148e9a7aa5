/* What request modules share: the request context, answers, field validation, script results,
 * and the request tables the dispatcher walks. Each module (core conversations, agent states,
 * bots, ...) exports one gw_handler table. */
#ifndef KEFU_GATEWAY_HANDLERS_H
#define KEFU_GATEWAY_HANDLERS_H

#include <stddef.h>

#include <hiredis/hiredis.h>
#include <jansson.h>

#include "gateway.h"
#include "kefu/redis.h"

#define CONV_ID_MAX 64
#define CID_MAX 64
#define TOPIC_MAX 256

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

extern const gw_handler gw_handlers_core[];

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

/** msg.send with validated fields: stores it, answers, routes the push. Steals x (its conv
 * set) and text (malloc'd, text_len bytes plus a NUL). */
void gw_msg_send(req_ctx *x, char *text, size_t text_len, const char *cid);

/** New context holding a reference on c and on req (may be NULL). */
req_ctx *gw_ctx_new(gw_conn *c, const json_t *req);
void gw_ctx_free(req_ctx *x);

/** {"type":"ok","req":..} merged with fields (stolen, may be NULL); dropped if c is gone. */
void gw_reply_ok(gw_conn *c, const json_t *req, json_t *fields);
/** Answers x's err_code, or `unavailable` when a command failed. */
void gw_reply_failure(req_ctx *x);

/* Field readers: on a bad field they answer bad_request (too_large for an over-long string)
 * themselves and return -1. */
int gw_get_str(gw_conn *c, const json_t *msg, const char *name, int required, size_t maxlen,
               const char **out);
int gw_get_int(gw_conn *c, const json_t *msg, const char *name, long long def, long long min,
               long long max, long long *out);
/** Reads and checks "conv"; on success *xp is a new context with conv filled in. */
int gw_get_conv(gw_conn *c, const json_t *msg, req_ctx **xp);

/** {"id","role","name"} of the connection's user. */
json_t *gw_from_obj(const gw_conn *c);
/** Script answer {"E", code} sets x->err_code and returns -1; {"S"/"D", ...} returns 0. */
int gw_script_result(req_ctx *x, const redisReply *r, const char *err);
/** Distinct non-empty user ids from r->element[from..], except `except`; returns the count. */
size_t gw_members(const redisReply *r, size_t from, const char *except, const char **out,
                  size_t max);
/** XADD to the lifecycle stream: ev, conv, by, ts and up to two more fields. */
/** Sends a write that follows a request already answered ok (a lifecycle event, a queue
 * entry): kept and tried again in order while its Redis server is unavailable. */
void gw_redis_kept(const char *key, int argc, const char **argv);
void gw_lifecycle(const char *ev, const char *conv, const gw_conn *c, const char *k1,
                  const char *v1, const char *k2, const char *v2);
/** EVALSHA script with `key` as KEYS[1] and argv as ARGV, on key's slot; cb gets x. */
void gw_conv_script(req_ctx *x, const char *script, const char *key, kf_redis_cb *cb, int argc,
                    const char **argv, const size_t *lens);

/** Puts a conversation in a skill group's waiting queue (FIFO by time of entry); cb (may be
 * NULL) gets the ZADD's answer. The conversation's meta state must already be "waiting". */
void gw_conv_enqueue(const char *conv, const char *group, kf_redis_cb *cb, void *priv);

#endif
