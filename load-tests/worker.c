/* A kefu-load worker process: one libevent loop holding its share of the connections, the kefu
 * session layer (paced connects, authentication, close accounting) and the phase machine that
 * keeps all workers in step through the shared area. */
#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "kefu/alloc.h"
#include "kefu/token.h"
#include "load.h"

#define KL_ENUM(n) #n,
const char *const kl_counter_names[KC__COUNT] = {KL_COUNTERS(KL_ENUM)};
const char *const kl_hist_names[KH__COUNT] = {KL_HISTS(KL_ENUM)};
#undef KL_ENUM

static const char *const phase_names[] = {"start", "setup", "ready", "run", "drain", "done"};

int64_t kl_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void kl_count(kl_worker *w, int counter, uint64_t n) {
    uint64_t *p = &w->slot->c[counter];
    kl_store(p, *p + n);
}

void kl_record(kl_worker *w, int hist, int64_t ns) {
    kl_hist_add(&w->slot->h[hist], ns > 0 ? (uint64_t)ns : 0);
}

void kl_set_phase(kl_worker *w, kl_phase p) {
    kl_store32(&w->slot->phase, (int32_t)p);
}

/* Keeps the first failure: the root cause, usually, rather than its consequences. */
void kl_note_error(kl_worker *w, const char *fmt, ...) {
    if (w->slot->last_error[0]) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(w->slot->last_error, sizeof(w->slot->last_error), fmt, ap);
    va_end(ap);
}

struct event *kl_timer(kl_worker *w, int ms, void (*fn)(int, short, void *), void *arg) {
    struct event *ev = event_new(w->base, -1, EV_PERSIST, fn, arg);
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    if (!ev || event_add(ev, &tv) < 0) {
        fprintf(stderr, "kefu-load: cannot start a timer\n");
        exit(1);
    }
    return ev;
}

/* ---- kefu sessions ---- */

static char *mint(kl_worker *w, const kl_client *c) {
    kf_claims cl;
    memset(&cl, 0, sizeof(cl));
    snprintf(cl.sub, sizeof(cl.sub), "%s", c->sub);
    snprintf(cl.name, sizeof(cl.name), "%s", c->sub);
    cl.role = (kf_role)c->role;
    cl.exp = (long long)time(NULL) + 86400;
    if (c->role == KF_ROLE_CUSTOMER) snprintf(cl.channel, sizeof(cl.channel), "web");
    if (c->role == KF_ROLE_AGENT) cl.max_chats = 1000;
    if (c->role == KF_ROLE_AGENT && w->o->scenario == SC_WORKER) {
        cl.max_chats = w->o->max_chats;
        snprintf(cl.skills, sizeof(cl.skills), "general");
    }
    return kf_token_mint(w->o->secret, &cl);
}

static void client_failed(kl_worker *w, kl_client *c, int counter, const char *why, const char *detail) {
    kl_count(w, KC_conn_fail, 1);
    kl_count(w, counter, 1);
    kl_note_error(w, "%s: %s%s%s", c->sub, why, detail && *detail ? ": " : "", detail ? detail : "");
    c->state = CL_IDLE;
    if (w->ops->on_failed) w->ops->on_failed(w, c);
}

static void client_start(kl_worker *w, kl_client *c) {
    char target[4400];
    const char *t = w->target[c->node];
    char *tok = NULL;
    if (w->o->auth_url) {
        tok = mint(w, c);
        snprintf(target, sizeof(target), "%s%stoken=%s", t, strchr(t, '?') ? "&" : "?", tok ? tok : "");
        t = target;
    }
    struct sockaddr_in src, *srcp = NULL;
    if (w->nsrc > 0) {
        memset(&src, 0, sizeof(src));
        src.sin_family = AF_INET;
        uint32_t k = (w->o->src_base + (w->src_next++ + (uint32_t)w->index) % (uint32_t)w->nsrc) % KL_SRC_MAX;
        uint32_t host = (127u << 24) | ((1 + k / 250) << 8) | (2 + k % 250);
        src.sin_addr.s_addr = htonl(host);
        srcp = &src;
    }
    kl_count(w, KC_conn_attempts, 1);
    c->t_start = kl_now_ns();
    if (!w->slot->first_connect_ns) w->slot->first_connect_ns = c->t_start;
    c->ws = ws_connect(w->ws, &w->dst[c->node], srcp, w->host[c->node], t,
                       w->o->msgpack ? "kefu.v1.msgpack" : "kefu.v1.json", c);
    free(tok);
    if (!c->ws) {
        client_failed(w, c, KC_conn_fail_socket, "socket", strerror(errno));
        return;
    }
    c->in_flight = 1;
    w->inflight++;
}

static void pace(kl_worker *w) {
    int64_t now = kl_now_ns();
    if (w->rate > 0) {
        w->tokens += (double)(now - w->tokens_ns) * w->rate / 1e9;
        double cap = w->rate / 20 > 1 ? w->rate / 20 : 1; /* at most 50 ms of burst */
        if (w->tokens > cap) w->tokens = cap;
    }
    w->tokens_ns = now;
    for (int n = 0; n < 2000 && w->q_head && w->inflight < w->o->inflight; n++) {
        if (w->rate > 0) {
            if (w->tokens < 1) break;
            w->tokens -= 1;
        }
        kl_client *c = w->q_head;
        w->q_head = c->qnext;
        if (!w->q_head) w->q_tail = NULL;
        c->qnext = NULL;
        c->queued = 0;
        client_start(w, c);
    }
}

static void on_pace(evutil_socket_t fd, short what, void *arg) {
    (void)fd, (void)what;
    pace(arg);
}

void kl_client_connect(kl_worker *w, kl_client *c) {
    if (c->state != CL_IDLE || c->queued) return;
    c->state = CL_CONNECTING;
    c->queued = 1;
    c->qnext = NULL;
    if (w->q_tail) w->q_tail->qnext = c;
    else w->q_head = c;
    w->q_tail = c;
}

int kl_client_send(kl_worker *w, kl_client *c, const char *buf, size_t len) {
    (void)w;
    if (!c->ws || (c->state != CL_READY && c->state != CL_AUTH)) return -1;
    return ws_send(c->ws, w->o->msgpack ? WS_OP_BINARY : WS_OP_TEXT, buf, len);
}

static void queue_remove(kl_worker *w, kl_client *c) {
    kl_client **pp = &w->q_head, *prev = NULL;
    while (*pp && *pp != c) prev = *pp, pp = &(*pp)->qnext;
    if (!*pp) return;
    *pp = c->qnext;
    if (w->q_tail == c) w->q_tail = prev;
    c->qnext = NULL;
    c->queued = 0;
}

void kl_client_close(kl_worker *w, kl_client *c) {
    if (c->queued) {
        queue_remove(w, c);
        c->state = CL_IDLE;
        return;
    }
    if (!c->ws || c->state == CL_CLOSING) return;
    c->state = CL_CLOSING;
    if (ws_conn_state(c->ws) == WS_OPEN) ws_close(c->ws, 1000, "bye");
    else ws_abort(c->ws, 0);
}

void kl_client_drop(kl_worker *w, kl_client *c) {
    if (c->queued) {
        queue_remove(w, c);
        c->state = CL_IDLE;
        return;
    }
    if (!c->ws || c->state == CL_CLOSING) return;
    c->state = CL_CLOSING;
    ws_abort(c->ws, 0);
}

void kl_client_forget(kl_client *c) {
    if (c->ws) ws_conn_free(c->ws);
    c->ws = NULL;
    c->state = CL_IDLE;
}

/* ---- WebSocket callbacks ---- */

static kl_worker *the_worker; /* one per process */

static void on_ws_open(ws_conn *ws, void *ud) {
    kl_client *c = ud;
    kl_worker *w = the_worker;
    if (c->state == CL_CLOSING) {
        ws_abort(ws, 0);
        return;
    }
    c->state = CL_AUTH;
    if (!w->o->auth_url) {
        char *tok = mint(w, c);
        char buf[4600];
        kl_enc e;
        kl_enc_begin(&e, w->o->msgpack, buf, sizeof(buf), 2);
        kl_enc_str(&e, "type", "hello", 5);
        kl_enc_str(&e, "token", tok ? tok : "", tok ? strlen(tok) : 0);
        size_t n = kl_enc_end(&e);
        free(tok);
        kl_client_send(w, c, buf, n);
    }
}

static void on_ws_message(ws_conn *ws, void *ud, int binary, const char *data, size_t len) {
    (void)ws;
    kl_client *c = ud;
    kl_worker *w = the_worker;
    kl_view v;
    if (binary != w->o->msgpack || kl_view_parse(binary, data, len, &v) < 0 || !v.type.p) {
        kl_count(w, KC_bad_frames, 1);
        kl_note_error(w, "%s: undecodable frame (%zu bytes)", c->sub, len);
        return;
    }
    if (kl_span_eq(v.type, "error")) kl_count(w, KC_error_frames, 1);
    if (c->state == CL_AUTH) {
        if (kl_span_eq(v.type, "welcome")) {
            int64_t now = kl_now_ns();
            c->state = CL_READY;
            c->in_flight = 0;
            w->inflight--;
            c->counted_open = 1;
            kl_store(&w->slot->open, w->slot->open + 1);
            kl_count(w, KC_conn_ok, 1);
            kl_record(w, KH_connect, now - c->t_start);
            if (w->slot->phase < PH_RUN) w->slot->last_welcome_ns = now; /* set-up span */
            if (w->ops->on_ready) w->ops->on_ready(w, c);
        } else if (kl_span_eq(v.type, "error")) {
            char code[32] = "", msg[96] = "";
            kl_span_copy(v.code, code, sizeof(code));
            kl_span_copy(v.message, msg, sizeof(msg));
            kl_note_error(w, "%s: before welcome: %s %s", c->sub, code, msg);
        }
        return;
    }
    if (c->state != CL_READY && c->state != CL_CLOSING) return;
    if (w->ops->on_frame) w->ops->on_frame(w, c, &v, data, len);
}

static void on_ws_close(ws_conn *ws, void *ud, const ws_close_info *ci) {
    kl_client *c = ud;
    kl_worker *w = the_worker;
    int ok = c->state == CL_CLOSING;
    int was_ready = c->counted_open;
    kl_client_state st = (kl_client_state)c->state;
    ws_conn_free(ws);
    c->ws = NULL;
    if (c->in_flight) {
        c->in_flight = 0;
        w->inflight--;
    }
    if (c->counted_open) {
        c->counted_open = 0;
        kl_store(&w->slot->open, w->slot->open - 1);
    }
    if (!was_ready && !ok) {
        int counter = KC_conn_fail_closed;
        if (st == CL_CONNECTING) {
            counter = strstr(ci->reason, "upgrade") ? KC_conn_fail_upgrade : KC_conn_fail_connect;
        } else if (ci->code >= 4400 && ci->code < 4500) {
            counter = KC_conn_fail_auth;
        }
        char detail[200];
        if (ci->code)
            snprintf(detail, sizeof(detail), "%s %d %s", ci->reason, ci->code, ci->text);
        else
            snprintf(detail, sizeof(detail), "%s%s%s", ci->reason, ci->text[0] ? ": " : "", ci->text);
        client_failed(w, c, counter, "connect", detail);
        return;
    }
    c->state = CL_IDLE;
    if (was_ready) {
        if (ok) {
            kl_count(w, KC_closed_ok, 1);
        } else {
            kl_count(w, KC_disconnects, 1);
            kl_note_error(w, "%s: disconnected: %s %d %s", c->sub, ci->reason, ci->code, ci->text);
        }
    }
    if (w->ops->on_closed) w->ops->on_closed(w, c, was_ready, ok);
}

/* ---- phases ---- */

static const kl_scenario_def *def_of(kl_scenario s) {
    return s == SC_IDLE ? &kl_idle : s == SC_RELAY ? &kl_relay : s == SC_WORKER ? &kl_assign : &kl_journey;
}

struct phase_state {
    kl_worker *w;
    const kl_scenario_def *def;
    int64_t setup_deadline, drain_deadline, close_deadline, hard_deadline;
    int closing;
    uint64_t last_frames_in, last_frames_out, last_bytes_in, last_bytes_out;
};

static void sync_ws_stats(kl_worker *w, struct phase_state *ps) {
    const ws_stats *s = ws_ctx_stats(w->ws);
    kl_count(w, KC_frames_in, s->frames_in - ps->last_frames_in);
    kl_count(w, KC_frames_out, s->frames_out - ps->last_frames_out);
    kl_count(w, KC_bytes_in, s->bytes_in - ps->last_bytes_in);
    kl_count(w, KC_bytes_out, s->bytes_out - ps->last_bytes_out);
    ps->last_frames_in = s->frames_in;
    ps->last_frames_out = s->frames_out;
    ps->last_bytes_in = s->bytes_in;
    ps->last_bytes_out = s->bytes_out;
}

static void on_sync(evutil_socket_t fd, short what, void *arg) {
    (void)fd, (void)what;
    struct phase_state *ps = arg;
    kl_worker *w = ps->w;
    int64_t now = kl_now_ns();
    kl_phase ph = (kl_phase)w->slot->phase;
    sync_ws_stats(w, ps);
    if (now > ps->hard_deadline) {
        kl_note_error(w, "worker %d: hard deadline passed in phase %s", w->index, phase_names[ph]);
        event_base_loopbreak(w->base);
        return;
    }
    int stop = kl_load32(&w->sh->stop);
    switch (ph) {
    case PH_START:
    case PH_SETUP:
        if (ps->def->setup_done(w) || now > ps->setup_deadline || stop) {
            if (now > ps->setup_deadline) kl_note_error(w, "worker %d: setup timed out", w->index);
            kl_set_phase(w, PH_READY);
        }
        break;
    case PH_READY: {
        int64_t go = kl_load64(&w->sh->go_ns);
        if (stop) {
            w->slot->run_end_ns = now;
            kl_set_phase(w, PH_DRAIN);
            ps->drain_deadline = now;
        } else if (go && now >= go) {
            w->go_ns = go;
            ps->def->go(w);
            kl_set_phase(w, PH_RUN);
        }
        break;
    }
    case PH_RUN:
        if (ps->def->run_over(w, now) || stop) {
            w->slot->run_end_ns = now;
            ps->drain_deadline = now + (int64_t)(w->o->drain_s * 1e9);
            kl_set_phase(w, PH_DRAIN);
        }
        break;
    case PH_DRAIN:
        if (!ps->closing) {
            if (ps->def->drained(w) || now >= ps->drain_deadline || stop > 1) {
                ps->def->finish(w);
                ps->closing = 1;
                ps->close_deadline = now + 5000000000LL;
            }
        } else if (ws_ctx_count(w->ws) == 0 || now >= ps->close_deadline) {
            sync_ws_stats(w, ps);
            kl_set_phase(w, PH_DONE);
            event_base_loopbreak(w->base);
        }
        break;
    case PH_DONE:
        event_base_loopbreak(w->base);
        break;
    }
}

static void raise_nofile(void) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

int kl_worker_main(kl_shared *sh, int index, const kl_opts *o) {
    raise_nofile();
    kl_worker *w = kf_calloc(1, sizeof(*w));
    the_worker = w;
    w->index = index;
    w->nworkers = o->procs;
    w->o = o;
    w->sh = sh;
    w->slot = &sh->slot[index];
    w->slot->pid = (int32_t)getpid();
    w->nsrc = o->src_ips;
    w->tokens_ns = kl_now_ns();
    double share = 1.0 / o->procs;
    w->rate = o->connect_rate > 0 ? o->connect_rate * share : 0;
    w->tokens = 1;

    struct event_config *cfg = event_config_new();
    event_config_set_flag(cfg, EVENT_BASE_FLAG_PRECISE_TIMER);
    w->base = event_base_new_with_config(cfg);
    event_config_free(cfg);
    if (!w->base) {
        fprintf(stderr, "kefu-load: event_base_new failed\n");
        return 1;
    }
    static const ws_handlers h = {on_ws_open, on_ws_message, NULL, on_ws_close};
    ws_options wo = {.max_message = 1u << 20, .connect_timeout_ms = 15000, .close_timeout_ms = 3000};
    w->ws = ws_ctx_new(w->base, &h, &wo);
    for (int i = 0; i < o->nurls; i++) {
        const char *err;
        if (ws_parse_url(o->urls[i], &w->dst[i], w->target[i], sizeof(w->target[i]), &err) < 0) {
            fprintf(stderr, "kefu-load: %s: %s\n", o->urls[i], err);
            return 2;
        }
        char ip[32];
        inet_ntop(AF_INET, &w->dst[i].sin_addr, ip, sizeof(ip));
        snprintf(w->host[i], sizeof(w->host[i]), "%s:%u", ip, ntohs(w->dst[i].sin_port));
    }
    struct phase_state ps;
    memset(&ps, 0, sizeof(ps));
    ps.w = w;
    ps.def = def_of(o->scenario);
    int64_t now = kl_now_ns();
    ps.setup_deadline = now + (int64_t)(o->setup_timeout_s * 1e9);
    ps.hard_deadline = now + (int64_t)((o->setup_timeout_s + o->duration_s + o->drain_s + 30) * 1e9);

    kl_set_phase(w, PH_SETUP);
    if (ps.def->setup(w) < 0) return 1;
    w->pace_ev = kl_timer(w, 1, on_pace, w);
    w->sync_ev = kl_timer(w, 5, on_sync, &ps);
    pace(w);
    event_base_dispatch(w->base);

    ps.def->free(w);
    event_free(w->pace_ev);
    event_free(w->sync_ev);
    ws_ctx_free(w->ws);
    event_base_free(w->base);
    int rc = w->slot->phase == PH_DONE ? 0 : 3;
    kf_free(w);
    the_worker = NULL;
    return rc;
}
