/* kefu-load internals shared by its modules: options, the statistics area the worker processes
 * share with the parent, the worker and its kefu client sessions, and the scenarios. */
#ifndef KEFU_LOAD_H
#define KEFU_LOAD_H

#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>

#include "hist.h"
#include "proto.h"
#include "wsclient.h"

#define KL_MAX_URLS 8
#define KL_MAX_PROCS 64
#define KL_SRC_MAX 20000     /* source addresses 127.0.1.2 .. 127.0.80.251 */

/* ---- options (main.c) ---- */
typedef enum { SC_IDLE, SC_RELAY, SC_JOURNEY, SC_WORKER } kl_scenario;

typedef struct kl_opts {
    kl_scenario scenario;
    const char *urls[KL_MAX_URLS];
    int nurls;
    int msgpack;
    int auth_url;          /* token on the URL instead of a hello frame */
    const char *secret;
    int procs;
    int src_ips;           /* loopback source addresses 127.0.x.y to spread over (0 = none) */
    unsigned src_base;     /* first one of them, varied per run */
    double duration_s;
    double connect_rate;   /* new connections per second, all workers (0 = unlimited) */
    int inflight;          /* handshakes in flight per worker */
    double setup_timeout_s;
    double drain_s;
    const char *json_path;
    const char *plot_prefix;
    const char *ready_file;
    int quiet;
    char run_id[16];
    /* idle */
    long conns;
    double ping_interval_s;
    /* relay */
    long pairs;
    double rate;
    int size;
    int both;              /* both directions */
    /* journey */
    long customers;
    long agents;
    int agent_chats;
    int msgs;
    int think_ms;
    int reconnect_pct;
    int reconnect_ms;
    int agent_delay_ms;
    int queue_poll_ms;
    int pause_ms;
    int step_timeout_ms;
    /* worker */
    int max_chats;         /* the agents' max_chats claim */
} kl_opts;

/* ---- shared statistics (one slot per worker, written by it, read by the parent) ---- */

#define KL_COUNTERS(X)                                                                            \
    X(conn_attempts) X(conn_ok) X(conn_fail) X(conn_fail_socket) X(conn_fail_connect)             \
    X(conn_fail_upgrade) X(conn_fail_auth) X(conn_fail_closed) X(disconnects) X(closed_ok)        \
    X(pings) X(pongs) X(sent) X(acked) X(failed) X(delivered) X(duplicated) X(lost) X(unacked)    \
    X(out_of_order) X(gaps) X(healed) X(resyncs) X(server_dups) X(sched_late) X(convs_opened) X(convs_accepted)                \
    X(accept_conflicts) X(convs_closed) X(queue_polls) X(journeys_started) X(journeys_done)       \
    X(journeys_failed) X(reconnects) X(history_calls) X(history_msgs) X(resume_missing)           \
    X(step_timeouts) X(convs_assigned) X(never_assigned) X(foreign_assigned) X(error_frames) X(bad_frames) X(frames_in) X(frames_out) X(bytes_in)          \
    X(bytes_out)

#define KL_ENUM(n) KC_##n,
enum { KL_COUNTERS(KL_ENUM) KC__COUNT };
#undef KL_ENUM
extern const char *const kl_counter_names[KC__COUNT];

#define KL_HISTS(X) X(connect) X(ping) X(ack) X(e2e) X(e2e_back) X(assign) X(history)
#define KL_ENUM(n) KH_##n,
enum { KL_HISTS(KL_ENUM) KH__COUNT };
#undef KL_ENUM
extern const char *const kl_hist_names[KH__COUNT];

typedef enum { PH_START, PH_SETUP, PH_READY, PH_RUN, PH_DRAIN, PH_DONE } kl_phase;

typedef struct kl_slot {
    int32_t phase;
    int32_t pid;
    uint64_t open;          /* connections currently authenticated */
    uint64_t target;        /* connections (idle) or pairs (relay) this worker sets up */
    int64_t first_connect_ns, last_welcome_ns; /* span of the connection set-up */
    int64_t run_end_ns;     /* when the run phase ended */
    int64_t first_open_ns, last_assign_ns; /* worker scenario: first conv.open, last assignment */
    uint64_t c[KC__COUNT];
    kl_hist h[KH__COUNT];
    char last_error[160];   /* the first failure, for the report */
} kl_slot;

typedef struct kl_shared {
    int64_t go_ns;          /* CLOCK_MONOTONIC start of the run phase, set by the parent */
    int32_t stop;           /* parent asks for an early end (SIGINT) */
    int32_t nworkers;
    kl_slot slot[];
} kl_shared;

static inline void kl_store(uint64_t *p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_RELAXED); }
static inline uint64_t kl_load(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
static inline int32_t kl_load32(const int32_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
static inline void kl_store32(int32_t *p, int32_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
static inline int64_t kl_load64(const int64_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }

int64_t kl_now_ns(void);

/* ---- the worker (worker.c) ---- */

typedef struct kl_worker kl_worker;
typedef struct kl_client kl_client;

typedef enum { CL_IDLE, CL_CONNECTING, CL_AUTH, CL_READY, CL_CLOSING } kl_client_state;

/* One kefu session: a WebSocket connection plus identity. Embedded in the scenario's structs. */
struct kl_client {
    ws_conn *ws;
    void *owner;            /* the scenario's object */
    uint32_t index;
    uint8_t state;          /* kl_client_state */
    uint8_t role;           /* kf_role */
    uint8_t node;           /* index into the URLs */
    uint8_t queued;         /* waiting in the connect queue */
    uint8_t in_flight;      /* counted in the worker's handshakes in flight */
    uint8_t counted_open;   /* counted in the slot's open connections */
    int64_t t_start;        /* connect started (ns) */
    kl_client *qnext;
    char sub[48];
};

typedef struct kl_scenario_ops {
    /** Welcome received. */
    void (*on_ready)(kl_worker *w, kl_client *c);
    /** A frame after the welcome. */
    void (*on_frame)(kl_worker *w, kl_client *c, const kl_view *v, const char *raw, size_t len);
    /** The connection ended (c->state says where it was; CL_IDLE afterwards). ok: the close
     * was asked for by us. */
    void (*on_closed)(kl_worker *w, kl_client *c, int was_ready, int ok);
    /** Connection attempt failed before the welcome. */
    void (*on_failed)(kl_worker *w, kl_client *c);
} kl_scenario_ops;

struct kl_worker {
    int index, nworkers;
    const kl_opts *o;
    struct event_base *base;
    ws_ctx *ws;
    kl_shared *sh;
    kl_slot *slot;
    const kl_scenario_ops *ops;
    void *sc;               /* scenario state */
    struct sockaddr_in dst[KL_MAX_URLS];
    char target[KL_MAX_URLS][256];
    char host[KL_MAX_URLS][64];
    int nsrc;
    uint32_t src_next;
    /* connect queue, paced by rate and in-flight limit */
    kl_client *q_head, *q_tail;
    int inflight;
    double rate;            /* this worker's connections per second, 0 = unlimited */
    double tokens;
    int64_t tokens_ns;
    struct event *pace_ev, *sync_ev;
    int64_t go_ns;
    int stopping;
    uint64_t run_tag;       /* distinguishes this run's users */
};

/** Runs a worker process to the end; returns its exit status. */
int kl_worker_main(kl_shared *sh, int index, const kl_opts *o);

void kl_count(kl_worker *w, int counter, uint64_t n);
void kl_record(kl_worker *w, int hist, int64_t ns);
void kl_set_phase(kl_worker *w, kl_phase p);
/** Records the worker's first failure (later ones are only counted). */
void kl_note_error(kl_worker *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/** Queues a client for connecting (paced). The client needs sub, role, node set. */
void kl_client_connect(kl_worker *w, kl_client *c);
/** Sends a request built with kl_enc. Returns 0 or -1 when not connected. */
int kl_client_send(kl_worker *w, kl_client *c, const char *buf, size_t len);
/** Closing handshake (1000); on_closed follows with ok = 1. */
void kl_client_close(kl_worker *w, kl_client *c);
/** Drops the TCP connection without a close frame; on_closed follows with ok = 1. */
void kl_client_drop(kl_worker *w, kl_client *c);
/** Forgets the connection without callbacks (teardown). */
void kl_client_forget(kl_client *c);

/** Starts a persistent timer calling fn every `ms` milliseconds. */
struct event *kl_timer(kl_worker *w, int ms, void (*fn)(int, short, void *), void *arg);

/* ---- scenarios ---- */
/* Each sets up its state, registers its ops, starts connecting; kl_worker_main drives the
 * phases and calls go/stop/finish at the right moments. */
typedef struct kl_scenario_def {
    int (*setup)(kl_worker *w);
    /** PH_READY reached when this returns 1. */
    int (*setup_done)(kl_worker *w);
    void (*go)(kl_worker *w);
    /** Called every 10 ms in RUN; returns 1 when the run is over (duration passed). */
    int (*run_over)(kl_worker *w, int64_t now);
    /** Called every 10 ms in DRAIN; returns 1 when nothing is outstanding any more. */
    int (*drained)(kl_worker *w);
    /** Final accounting, then close every connection. */
    void (*finish)(kl_worker *w);
    void (*free)(kl_worker *w);
} kl_scenario_def;

extern const kl_scenario_def kl_idle, kl_relay, kl_journey, kl_assign;

#endif
