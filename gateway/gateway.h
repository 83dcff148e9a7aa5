/* kefu-gateway internals shared by its modules: the server, connections, options, metrics. */
#ifndef KEFU_GATEWAY_H
#define KEFU_GATEWAY_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "kefu/codec.h"
#include "kefu/config.h"
#include "kefu/hash.h"
#include "kefu/token.h"

struct lws;
struct lws_context;
struct event_base;
struct event;
typedef struct kf_redis kf_redis;

/* ---- options (options.c) ---- */
typedef struct gw_options {
    char *bind;
    long long port;
    long long processes;
    char *node_name;
    char *redis;
    char *jwt_secrets;
    long long dev_secret;     /* no jwt_secrets: run on the public development secret */
    long long jwt_leeway_s;
    char *log_level;
    long long auth_timeout_ms;
    long long max_message_bytes;
    long long max_text_bytes;
    long long rx_buffer_bytes;
    long long rcvbuf_bytes;
    long long rate_per_s;
    long long rate_burst;
    long long rate_abuse_limit;
    long long outq_max_bytes;
    long long outq_max_msgs;
    long long ping_interval_ms;
    long long idle_timeout_ms;
    long long history_maxlen;
    long long history_page_max;
    long long inbox_maxlen;
    long long inbox_batch;
    long long presence_ttl_ms;
    long long presence_cache_ms;
    long long cid_window;
    long long redis_timeout_ms;
    long long ack_replicas, ack_timeout_ms;
    long long redis_module;   /* KEFU.MSGSEND where kefu_redis.so is loaded */
    long long drain_timeout_ms;
    long long max_connections;
    long long redis_inflight_max;
    long long overload_shed_ms;
    long long route_retry_ms;
    long long route_queue_max;
    /* bots (gateway/bot.c, docs/bots.md) */
    char *bots_dir;
    long long bot_instruction_budget;
    long long bot_memory_kb;
    char *bot_timezone;
    long long bot_clock_offset_s;
    long long bot_watch;
    /* web assets (gateway/web.c, docs/web.md) */
    long long web;
    char *web_dir;
    char *web_connect_src;
} gw_options;

extern const kf_option gw_option_table[];
extern const kf_config_info gw_config_info;

/* ---- shared buffers (fan-out: encode once, queue everywhere) ---- */
typedef struct gw_buf {
    uint32_t refs;
    uint32_t len;     /* payload bytes */
    uint8_t binary;   /* frame kind */
    char *data;       /* malloc'd: LWS_PRE headroom then payload */
} gw_buf;

gw_buf *gw_buf_new(char *data_with_headroom, size_t len, int binary);
void gw_buf_ref(gw_buf *b);
void gw_buf_unref(gw_buf *b);

/* ---- connections ----
 * A connection's state changes only through gw_conn_set_state (server.c), which checks the
 * transition and traces it at debug level:
 *   NEW -> AUTHENTICATING -> READY -> CLOSING -> CLOSED
 *   NEW -> READY (a token in the URL, or a hello first); any but CLOSED -> CLOSING or CLOSED. */
typedef enum {
    CONN_NEW,            /* upgraded, no frame handled yet: a request first means no hello will
                            ever come (closed 4400) */
    CONN_AUTHENTICATING, /* a frame handled, still waiting for hello */
    CONN_READY,          /* authenticated (the welcome follows once presence is stored) */
    CONN_CLOSING,        /* close requested; waiting for the writeable callback or the kill */
    CONN_CLOSED,         /* lws closed it (wsi NULL); the struct lives on while Redis replies
                            are pending */
    CONN__COUNT
} gw_conn_state;

extern const char *const gw_conn_state_names[CONN__COUNT];

typedef enum {
    CLOSE_NONE = 0,
    CLOSE_NORMAL,
    CLOSE_SHUTDOWN,
    CLOSE_INVALID_UTF8,
    CLOSE_TOO_LARGE,
    CLOSE_AUTH_INVALID,
    CLOSE_AUTH_EXPIRED,
    CLOSE_AUTH_TIMEOUT,
    CLOSE_HELLO_EXPECTED,
    CLOSE_IDLE_TIMEOUT,
    CLOSE_RATE_ABUSE,
    CLOSE_SLOW_CONSUMER,
    CLOSE_PEER,
    CLOSE_INTERNAL,
    CLOSE_PROTOCOL,      /* 1002 from lws: a WebSocket protocol violation */
    CLOSE__COUNT
} gw_close_reason;

extern const char *const gw_close_reason_names[CLOSE__COUNT];

typedef struct gw_outq_item {
    struct gw_outq_item *next;
    gw_buf *buf;
} gw_outq_item;

/* Kept small: one per connection, tens of thousands per process (see docs/performance.md).
 * Times are gw_clock_ms() values: milliseconds since process start, 32 bits (wrap-safe
 * differences). */
typedef struct gw_conn {
    /* identity */
    uint64_t id;
    struct lws *wsi;          /* NULL once lws closed the connection (state CLOSED) */
    struct gw_ident {
        char *sub, *name, *skills;   /* malloc'd; NULL until authenticated (skills: may stay NULL) */
        const char *channel;          /* malloc'd, or "" when the token has none */
        int64_t exp;                  /* token expiry, unix seconds */
        uint16_t max_chats;
        uint8_t role;                 /* kf_role; KF_ROLE_NONE until authenticated */
        uint8_t level;
    } ident;
    struct gw_user *user;     /* entry in the local user index once authenticated */
    struct gw_conn *user_next;
    struct gw_conn *prev, *next; /* all connections, for the sweep */
    json_t *hello_req;        /* req of the hello, echoed by the welcome */
    /* state */
    uint32_t refs;            /* 1 for lws + 1 per Redis request in flight */
    uint32_t created_ms, last_rx_ms, last_ping_ms, closing_ms;
    uint8_t state;            /* gw_conn_state: only through gw_conn_set_state */
    uint8_t fmt;              /* kf_format */
    uint8_t want_ping;
    uint8_t rx_binary;
    uint8_t rx_paused;        /* reading stopped by backpressure (rx_maybe_pause in server.c) */
    uint8_t shed_epoch;       /* overload episode in which its msg.send are refused (0: none) */
    uint8_t shed_refused;     /* the request just handled was refused as overloaded */
    uint8_t in_flush;         /* on the end-of-iteration write list (flush_next) */
    uint32_t paused_ms;       /* gw_clock_ms() when reading stopped */
    struct gw_conn *flush_next;
    uint8_t close_reason;     /* gw_close_reason */
    uint16_t close_code;
    /* input: a message being reassembled from fragments */
    char *rx;
    uint32_t rx_len, rx_cap;
    /* rate limit: token bucket */
    float tokens;
    uint32_t tokens_ms;
    uint32_t abuse_window_ms;
    uint32_t abuse_count;
    /* output queue */
    uint32_t outq_msgs;
    uint32_t outq_bytes;
    gw_outq_item *outq_head, *outq_tail;
    const char *close_text;
} gw_conn;

/** Milliseconds since process start (monotonic), for connection timers. */
uint32_t gw_clock_ms(void);

/* Local user index entry (router.c): every authenticated connection of one user on this node.
 * One allocation per user with the id inline (73 bytes + id on x86-64); iterate with hh.next. */
typedef struct gw_user {
    UT_hash_handle hh;        /* in gw->users, keyed by id */
    gw_conn *conns;
    uint32_t nconns;
    uint32_t resync_due;      /* gw_clock_ms() of the pending presence resync (0: none) */
    uint8_t presence_ok;      /* presence registered in Redis */
    char id[];
} gw_user;

/* ---- the per-process server ---- */
typedef struct gw_server {
    gw_options opt;
    const char *config_file;
    int argc;
    char **argv;
    char node[128];
    int proc_index;
    struct event_base *base;
    struct lws_context *lws;
    kf_redis *redis;
    char **secrets;
    size_t nsecrets;
    /* connections */
    gw_conn *conns;
    uint64_t next_conn_id;
    size_t nconns;
    /* user index */
    gw_user *users;          /* uthash table by id (NULL when empty) */
    /* inbox */
    struct kf_redis *reader; /* the inbox reader's own client (XREAD BLOCK holds it) */
    char inbox_last_id[48];
    int inbox_reading;
    int inbox_ready; /* the reader has its starting point: entries from now on are read */
    /* lifecycle */
    int draining;
    int64_t drain_deadline_ms;
    struct event *sweep_ev, *heartbeat_ev, *sig_term_ev, *sig_int_ev, *sig_hup_ev, *inbox_retry_ev;
} gw_server;

extern gw_server *gw;

int64_t gw_now_ms(void);

/* server.c */
/** Runs process proc_index until drained. argc/argv are kept for SIGHUP reloads (flags win). */
int gw_server_run(int proc_index, const gw_options *opt, const char *config_file, int argc,
                  char **argv);
/** Queues a frame for a connection; takes a new reference on b. Closes the connection as a slow
 * consumer when its queue is over the limits. */
void gw_conn_send_buf(gw_conn *c, gw_buf *b);
/** Encodes obj in the connection's format and queues it. Does not steal obj. */
void gw_conn_send(gw_conn *c, const json_t *obj);
/** Asks lws to close the connection with a code and reason (sent from the writeable callback). */
void gw_conn_close(gw_conn *c, gw_close_reason why, uint16_t code, const char *text);
void gw_conn_ref(gw_conn *c);
/** Drops a reference; frees the struct once lws closed it and no request holds it. */
void gw_conn_unref(gw_conn *c);
/** Moves c to state s; a transition the diagram above does not allow is a bug (logged; aborts
 * in debug builds). */
void gw_conn_set_state(gw_conn *c, gw_conn_state s);
/** Authenticated and neither closing nor closed: requests are served, pushes delivered. */
static inline int gw_conn_alive(const gw_conn *c) { return c->state == CONN_READY; }
/** Not authenticated yet (and not closing): only hello and ping are served. */
static inline int gw_conn_authenticating(const gw_conn *c) {
    return c->state == CONN_NEW || c->state == CONN_AUTHENTICATING;
}
/** lws still has it and no close was asked: frames may be queued. */
static inline int gw_conn_open(const gw_conn *c) { return c->state < CONN_CLOSING; }

/* fastpath.c */
/** Handles a JSON msg.send frame of a READY connection in one pass when it has the common, valid
 * shape; returns 1 when it did, 0 to leave the frame to the general decoder. */
int gw_fast_msg_send(gw_conn *c, const char *buf, size_t len);

/** JSON text written directly (answers and pushes on the hot path). */
typedef struct gw_json {
    char *buf;
    size_t len, cap;
} gw_json;
/** Starts a buffer with `headroom` bytes reserved in front (LWS_PRE for a frame). */
void gw_json_init(gw_json *j, size_t headroom, size_t cap);
void gw_json_raw(gw_json *j, const char *s, size_t n);
#define GW_JSON_LIT(j, lit) gw_json_raw((j), (lit), sizeof(lit) - 1)
/** A JSON string, escaped as jansson does (quotes, backslash, control characters). */
void gw_json_str(gw_json *j, const char *s, size_t n);
void gw_json_int(gw_json *j, long long v);
/** A request's req (integer or string). */
void gw_json_req(gw_json *j, const json_t *req);

/* handlers.c */
/** Handles one decoded frame of a connection. Steals msg. */
void gw_handle_frame(gw_conn *c, json_t *msg);
/** Sends {"type":"error",...} for a request (request.c). */
void gw_reply_error(gw_conn *c, const json_t *req, const char *code, const char *message);

/* router.c */
void gw_router_start(void);
void gw_router_stop(void);
/* msg.send batches (handlers.c): messages gathered or in flight; at exit, fail what is gathered */
size_t gw_send_backlog(void);
void gw_msg_send_stop(void);
/* kept writes (request.c): at exit, what is still kept is lost (logged) */
void gw_redis_kept_stop(void);
/* server.c: 1 when this connection's msg.send must be refused as overloaded (backpressure held
 * it unread for overload_shed_ms, and the overload has not ended: the backlog has not yet
 * fallen under half of redis_inflight_max) */
int gw_conn_shed(const gw_conn *c);
/** Once a second: reconnects the inbox reader when its XREAD is overdue. */
void gw_router_check(void);
/** Adds an authenticated connection to the user index and registers presence; calls done(c, err)
 * when the presence is stored (err NULL) or failed. */
void gw_router_attach(gw_conn *c, void (*done)(gw_conn *c, const char *err));
void gw_router_detach(gw_conn *c);
/** Delivers a push to every connection of the given users, on whatever node they are, except
 * the connection skip (may be NULL). Routed through the node inboxes. Steals payload. */
void gw_route_push(json_t *payload, const char *const *users, size_t nusers, const gw_conn *skip);
/** The same with the push already written as JSON text (stolen, malloc'd): conv is its
 * conversation ("" for none), signal 0 for a push whose loss needs no resync (typing). */
void gw_route_push_text(char *json, size_t len, const char *conv, int signal,
                        const char *const *users, size_t nusers, const gw_conn *skip);
gw_user *gw_user_find(const char *id);
/** Routes queued (waiting for presence lookups or for earlier routes). */
size_t gw_route_backlog(void);
/** Leaves a resync notice for a conversation's users: they get {"type":"resync","conv":...}
 * once Redis is healthy (within about a second). */
void gw_route_resync(const char *conv, const char *const *users, size_t nusers);

/* metrics.c */
/* error codes, counted by kefu_errors_total{code} */
enum { ERR_BAD_REQUEST, ERR_UNAUTHORIZED, ERR_FORBIDDEN, ERR_NOT_FOUND, ERR_CONFLICT, ERR_TOO_LARGE,
       ERR_RATE_LIMITED, ERR_UNAVAILABLE, ERR_INTERNAL, ERR_OVERLOADED, ERR__COUNT };

typedef struct gw_metrics {
    int64_t pid;
    int64_t ready;
    int64_t draining;
    int64_t conns_by_role[5]; /* index: kf_role (0 = unauthenticated) */
    uint64_t frames_in, frames_out, bytes_in, bytes_out;
    uint64_t messages_stored;
    uint64_t errors[ERR__COUNT];
    uint64_t closes[CLOSE__COUNT];
    int64_t redis_slots_up, redis_masters, redis_masters_up;
    uint64_t redis_moved, redis_ask, redis_retried, redis_map_refreshes, redis_unreplicated;
    int64_t redis_kept;          /* follow-up writes waiting for their server (request.c) */
    uint64_t redis_kept_dropped; /* ... not kept: over KEPT_MAX */
    uint64_t redis_commands, redis_failures, redis_latency_us_sum, redis_latency_bucket[12];
    uint64_t inbox_entries, inbox_deliveries;
    int64_t inbox_lag_ms;
    uint64_t outq_dropped;
    uint64_t accept_rejected, accept_errors;
    uint64_t presence_cache_hits;
    /* delivery (router.c) and backpressure (server.c) */
    uint64_t push_lost[3];    /* by cause: presence, inbox, overflow */
    uint64_t push_retries;    /* routes whose lookups were tried again */
    uint64_t resync_sent;     /* resync notices routed (one per conversation and user list) */
    int64_t resync_pending;   /* notices waiting for Redis */
    int64_t route_queue;      /* routes waiting for lookups or for the routes before them */
    int64_t rx_paused;        /* connections not read because Redis work is over the bound */
    uint64_t rx_pauses;
    uint64_t presence_drops; /* cached presence copies dropped on a registration */
    uint64_t welcome_resync; /* presence resyncs scheduled for a user (a copy from before lived) */
    int64_t node_index;
    /* bots */
    uint64_t bot_runs, bot_errors, bot_budget_kills, bot_memory_kills;
    uint64_t bot_replies, bot_handoffs, bot_finishes, bot_alerts;
    uint64_t bot_reloads, bot_reload_failures, bot_conflicts, bot_dropped;
    int64_t bot_rules_loaded, bot_memory_bytes;
    /* customers who left, call-back tasks (router.c, callback.c) */
    uint64_t customer_left;   /* a customer's last connection here closed: event for the worker */
    uint64_t callback_assigned, callback_done;
} gw_metrics;

extern const char *const gw_error_codes[ERR__COUNT];

/** Maps the shared metrics area for nprocs processes; call before forking. */
int gw_metrics_init(int nprocs);
/** This process's slot. */
gw_metrics *gw_metrics_self(void);
void gw_metrics_bind(int proc_index);
/** Renders every process's metrics as Prometheus text into a malloc'd buffer with `headroom`
 * spare bytes in front. */
char *gw_metrics_render(size_t headroom, size_t *len);
/** 1 when every process of this gateway reports ready. */
int gw_metrics_all_ready(void);
/** The host as /readyz reports it: its processes, how many are ready and how many drain, and
 * the Redis coverage of the least covered process (the one that decides). */
typedef struct {
    int procs, ready, draining;
    unsigned slots_up, masters_up, masters;
} gw_readiness;
void gw_metrics_readiness(gw_readiness *out);
/** The master: the whole host stops (SIGTERM to the master), set before the processes are
 * told. A process reads it when its drain starts: only then is there no sibling to take new
 * connections, so it keeps its listener to answer them (503). */
void gw_metrics_host_stop(void);
int gw_metrics_host_stopping(void);
int gw_metrics_error_index(const char *code);

#define GW_M (gw_metrics_self())

#endif
