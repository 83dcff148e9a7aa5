/* Sharded asynchronous Redis on a libevent loop: hiredis contexts per shard, reconnection with
 * backoff, command timeouts, embedded scripts loaded per connection, latency statistics. */
#ifndef KEFU_REDIS_H
#define KEFU_REDIS_H

#include <stddef.h>
#include <stdint.h>

#include <hiredis/hiredis.h>

struct event_base;
typedef struct kf_redis kf_redis;

/** Reply callback. err is NULL when Redis answered (reply may still be an error reply:
 * check reply->type == REDIS_REPLY_ERROR), or a static string ("unavailable", "timeout") when
 * the shard is down, the connection dropped or the command timed out; reply is NULL then.
 * Callbacks are always called from the event loop, never from inside kf_redis_*(). The reply is
 * freed when the callback returns. */
typedef void kf_redis_cb(const redisReply *reply, const char *err, void *priv);

/** How a shard changed (the `up` argument of kf_redis_state_cb; non-zero means usable). */
enum { KF_REDIS_DOWN = 0, KF_REDIS_UP = 1, KF_REDIS_UP_RESTARTED = 2 };

/** Called when a shard becomes usable (connected, scripts loaded) or drops. up is
 * KF_REDIS_UP_RESTARTED when the server's run_id changed since the last connection: it
 * restarted and may have lost writes it had not persisted. */
typedef void kf_redis_state_cb(kf_redis *r, unsigned shard, int up, void *priv);

typedef struct kf_redis_stats {
    uint64_t commands;        /* commands answered (any reply) */
    uint64_t failures;        /* commands failed with unavailable/timeout */
    uint64_t latency_us_sum;  /* summed round-trip times of answered commands */
    uint64_t latency_bucket[12]; /* answered within 100us,250us,500us,1ms,2.5ms,5ms,10ms,25ms,
                                    50ms,100ms,1s, +inf */
} kf_redis_stats;

extern const double kf_redis_latency_bounds_s[11];

/** Creates shards from "host:port,host:port,..." and starts connecting. A connection with
 * commands pending that gets no reply at all for timeout_ms is dropped and re-established (every
 * command pending on it fails with "timeout"); a busy server that keeps answering is never
 * dropped, however long its queue. Returns NULL with err set on a bad address list. */
kf_redis *kf_redis_new(struct event_base *base, const char *addrs, int timeout_ms,
                       char *err, size_t errlen);
void kf_redis_free(kf_redis *r);

void kf_redis_on_state(kf_redis *r, kf_redis_state_cb *cb, void *priv);

unsigned kf_redis_nshards(const kf_redis *r);
/** Shard holding key (Redis Cluster slot of its hash tag split over the shards). */
unsigned kf_redis_shard(const kf_redis *r, const char *key);
int kf_redis_is_up(const kf_redis *r, unsigned shard);
int kf_redis_all_up(const kf_redis *r);
/** Address of a shard, "host:port". */
const char *kf_redis_addr(const kf_redis *r, unsigned shard);
/** Host and port of a shard. */
void kf_redis_hostport(const kf_redis *r, unsigned shard, const char **host, int *port);
const kf_redis_stats *kf_redis_get_stats(const kf_redis *r);
/** Called before each command is queued for a shard (not before the client's own INFO and SCRIPT
 * LOAD): a caller that holds commands back to batch them sends them first, so every command of
 * the process reaches a shard in the order it was issued. */
typedef void kf_redis_before_cb(kf_redis *r, unsigned shard, void *priv);
void kf_redis_before_send(kf_redis *r, kf_redis_before_cb *cb, void *priv);
/** Attaches a hiredis async context to a libevent loop (in place of hiredis' adapter): the
 * read event persists, and commands are written at the end of the loop iteration that issued
 * them, without a write event unless the socket is full. */
struct redisAsyncContext;
struct event_base;
void kf_redis_attach(struct redisAsyncContext *ac, struct event_base *base);
/** Commands sent and not yet answered, over all shards. */
size_t kf_redis_pending(const kf_redis *r);

/** Sends a command (binary-safe argv) to a shard. Commands issued in one loop iteration are
 * written together (pipelined). */
void kf_redis_argv(kf_redis *r, unsigned shard, kf_redis_cb *cb, void *priv, int argc,
                   const char **argv, const size_t *argvlen);
/** printf-style command (hiredis format: %s, %b with pointer+length, %d, %lld). */
void kf_redis_cmd(kf_redis *r, unsigned shard, kf_redis_cb *cb, void *priv, const char *fmt, ...);
/** Sends to the shard of `key` (which must also appear in the command). */
void kf_redis_cmd_key(kf_redis *r, const char *key, kf_redis_cb *cb, void *priv, const char *fmt,
                      ...);

/** EVALSHA of an embedded script (lua/redis/<name>.lua) with nkeys keys then args in argv. */
void kf_redis_script(kf_redis *r, unsigned shard, const char *name, kf_redis_cb *cb, void *priv,
                     int nkeys, int argc, const char **argv, const size_t *argvlen);

/** Source of an embedded Redis script, NULL when there is none (generated from lua/redis). */
const char *kf_script_source(const char *name, size_t *len);
/** Name of the i-th embedded script, NULL past the last. */
const char *kf_script_name_at(int i);
/** Lower-case hex SHA1 of an embedded script (what EVALSHA takes); NULL when unknown. */
const char *kf_script_sha(const char *name);

#endif
