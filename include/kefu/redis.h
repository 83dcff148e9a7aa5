/* Asynchronous Redis on a libevent loop, for one stand-alone server or a Redis Cluster: hiredis
 * contexts per server, routing by key slot, redirections, reconnection with backoff, command
 * timeouts, embedded scripts loaded per connection, acknowledgements confirmed by replicas,
 * latency statistics. */
#ifndef KEFU_REDIS_H
#define KEFU_REDIS_H

#include <stddef.h>
#include <stdint.h>

#include <hiredis/hiredis.h>

struct event_base;
typedef struct kf_redis kf_redis;

/** Reply callback. err is NULL when Redis answered (reply may still be an error reply:
 * check reply->type == REDIS_REPLY_ERROR), or a static string when it did not: "unavailable"
 * (no server for the slot, connection lost), "timeout" (no reply in time), "unreplicated" (a
 * durable command was answered but not confirmed by enough replicas in time: it was executed);
 * reply is NULL then. Callbacks are always called from the event loop, never from inside
 * kf_redis_*(). The reply is freed when the callback returns. */
typedef void kf_redis_cb(const redisReply *reply, const char *err, void *priv);

/** How the client's reach changed (the `how` argument of kf_redis_state_cb). */
enum {
    KF_REDIS_DOWN = 0,        /* a slot lost its server (connection lost, master failed) */
    KF_REDIS_UP = 1,          /* a server became usable (connected, scripts loaded) */
    KF_REDIS_UP_RESTARTED = 2 /* ... and it may lack writes acknowledged before: a stand-alone
                                 server restarted (new run_id), or a replica took over slots
                                 whose master had failed */
};
typedef void kf_redis_state_cb(kf_redis *r, int how, void *priv);

typedef struct kf_redis_stats {
    uint64_t commands;        /* commands answered (any reply) */
    uint64_t failures;        /* commands failed with unavailable/timeout/unreplicated */
    uint64_t latency_us_sum;  /* summed round-trip times of answered commands */
    uint64_t latency_bucket[12]; /* answered within 100us,250us,500us,1ms,2.5ms,5ms,10ms,25ms,
                                    50ms,100ms,1s, +inf */
    uint64_t moved, ask, retried; /* redirections followed; TRYAGAIN/CLUSTERDOWN retries */
    uint64_t map_refreshes;   /* slot maps read (cluster) */
    uint64_t unreplicated;    /* durable commands not confirmed by enough replicas */
} kf_redis_stats;

extern const double kf_redis_latency_bounds_s[11];

/** Connects to "host:port" (one stand-alone server or one cluster node) or to
 * "host:port,host:port,..." (seed nodes of one Redis Cluster). Which of the two it is, is read
 * from the server (INFO's redis_mode); several addresses that turn out to be stand-alone
 * servers are refused (logged, every command fails "unavailable"): kefu no longer splits keys
 * over independent servers by itself. A connection with commands pending that gets no reply at
 * all for timeout_ms is dropped and re-established (every command pending on it fails with
 * "timeout"); a busy server that keeps answering is never dropped, however long its queue.
 * Returns NULL with err set on a bad address list. */
kf_redis *kf_redis_new(struct event_base *base, const char *addrs, int timeout_ms,
                       char *err, size_t errlen);
/** Frees the client: the callbacks of commands still pending run inside it (err
 * "unavailable"). Not to be called from one of its callbacks. */
void kf_redis_free(kf_redis *r);

void kf_redis_on_state(kf_redis *r, kf_redis_state_cb *cb, void *priv);

/** Slot of a key (Redis Cluster's rule, hash tags included): what every command is routed by.
 * Slots are stable, so a caller may keep one; the server behind it may change. */
unsigned kf_redis_slot(const kf_redis *r, const char *key);
/** Whether the server holding slot is connected and ready. */
int kf_redis_is_up(const kf_redis *r, unsigned slot);
/** 1 when slots a and b are served by the same server as far as the slot map read last says
 * (always on a stand-alone server), 0 when not or when either has none. */
int kf_redis_same_server(const kf_redis *r, unsigned a, unsigned b);
/** Slots whose server is connected and ready (16384 when everything is reachable). */
unsigned kf_redis_slots_up(const kf_redis *r);
/** 1 when talking to a Redis Cluster, 0 to a stand-alone server, -1 while not yet known. */
int kf_redis_is_cluster(const kf_redis *r);
/** Servers commands go to (masters), and how many of them are up. */
unsigned kf_redis_masters(const kf_redis *r, unsigned *up);
const kf_redis_stats *kf_redis_get_stats(const kf_redis *r);
/** Slots that share one batch: commands for the slots of one group may be combined into one
 * call (a script's keys). One group for a stand-alone server; each slot its own in a cluster
 * (or while the kind of server is not known yet). */
unsigned kf_redis_batch_group(const kf_redis *r, unsigned slot);
/** Called before each command is queued for a slot (not before the client's own commands): a
 * caller that holds commands back to batch them sends them first, so every command of the
 * process reaches a server in the order it was issued. */
typedef void kf_redis_before_cb(kf_redis *r, unsigned slot, void *priv);
void kf_redis_before_send(kf_redis *r, kf_redis_before_cb *cb, void *priv);
/** Commands sent and not yet answered (or waiting to be retried), over all servers. */
size_t kf_redis_pending(const kf_redis *r);

/** Durable commands (kf_redis_script_durable) are answered only once WAIT confirms that
 * `replicas` replicas have them, waiting at most timeout_ms; 0 replicas turns this off. */
void kf_redis_set_durable(kf_redis *r, int replicas, int timeout_ms);

/** Run the msg_send script as KEFU.MSGSEND, the kefu Redis module's command
 * (redis-module/kefu_redis.c), on the servers that have it (found with COMMAND INFO on each
 * connection). On by default. */
void kf_redis_use_module(kf_redis *r, int on);

/** Sends a command (binary-safe argv) to the server of slot. Commands issued in one loop
 * iteration are written together (pipelined); commands for one slot reach the server in the
 * order they were issued and are answered in that order, except that a durable command
 * (kf_redis_script_durable) is answered only after its WAIT, so later ones may be answered
 * first. */
void kf_redis_argv(kf_redis *r, unsigned slot, kf_redis_cb *cb, void *priv, int argc,
                   const char **argv, const size_t *argvlen);
/** printf-style command (hiredis format: %s, %b with pointer+length, %d, %lld). */
void kf_redis_cmd(kf_redis *r, unsigned slot, kf_redis_cb *cb, void *priv, const char *fmt, ...);
/** Sends to the slot of `key` (which must also appear in the command). */
void kf_redis_cmd_key(kf_redis *r, const char *key, kf_redis_cb *cb, void *priv, const char *fmt,
                      ...);

/** EVALSHA of an embedded script (lua/redis/<name>.lua) with nkeys keys then args in argv. */
void kf_redis_script(kf_redis *r, unsigned slot, const char *name, kf_redis_cb *cb, void *priv,
                     int nkeys, int argc, const char **argv, const size_t *argvlen);
/** The same, answered only after the replicas set by kf_redis_set_durable confirmed it. */
void kf_redis_script_durable(kf_redis *r, unsigned slot, const char *name, kf_redis_cb *cb,
                             void *priv, int nkeys, int argc, const char **argv,
                             const size_t *argvlen);

/** Source of an embedded Redis script, NULL when there is none (generated from lua/redis). */
const char *kf_script_source(const char *name, size_t *len);
/** Name of the i-th embedded script, NULL past the last. */
const char *kf_script_name_at(int i);
/** Lower-case hex SHA1 of an embedded script (what EVALSHA takes); NULL when unknown. */
const char *kf_script_sha(const char *name);

/* Script answers. Every script answers {tag, ...}: a one-letter tag; 'E' followed by an error
 * code and, for some, a message when it refuses; any other letter ('S', 'D', 'Q', 'R', ...)
 * when it succeeds. */
typedef enum {
    KF_SCRIPT_OK,          /* a success tag, with the string elements the caller reads */
    KF_SCRIPT_REFUSED,     /* {'E', code[, message]} */
    KF_SCRIPT_UNAVAILABLE, /* no answer (err given: "unavailable", "timeout", "unreplicated") */
    KF_SCRIPT_BROKEN,      /* a Redis error reply or a malformed answer: a bug of ours */
} kf_script_kind;

typedef struct kf_script_ans {
    kf_script_kind kind;
    char tag;            /* the success tag; 0 unless kind is KF_SCRIPT_OK */
    const char *code;    /* the script's error code, "unavailable" or "internal"; NULL on OK */
    const char *message; /* REFUSED: the script's own message, NULL when it gave none */
    const char *detail;  /* UNAVAILABLE: err; BROKEN: Redis's error text, or NULL */
} kf_script_ans;

/** Reads a script answer as a kf_redis_cb got it (reply, err). It succeeds when the answer is an
 * array whose first element is a one-letter tag other than 'E' and whose first `nstr` elements
 * (the tag included; 0 counts as 1) are strings: those the caller reads by index. A refusal
 * whose code is not a non-empty string is BROKEN. Strings in *a are borrowed from reply.
 * Returns a->tag: 0 unless it succeeded. */
char kf_script_parse(const redisReply *reply, const char *err, size_t nstr, kf_script_ans *a);

#endif
