/* Scenario idle: open and hold N authenticated connections, each sending an application-level
 * ping every --ping-interval seconds (round-robin over the connections, so the load is even). */
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kefu/alloc.h"
#include "kefu/token.h"
#include "load.h"

typedef struct idle_state {
    kl_client *cl;
    int64_t *ping_sent;     /* per connection: send time of the outstanding ping, 0 = none */
    uint32_t n;
    uint32_t settled;       /* connections that got their welcome or failed */
    uint64_t pings_due;     /* pings that should have been sent by now (round-robin position) */
    uint64_t outstanding;
    int64_t run_end;
    struct event *tick;
} idle_state;

static void idle_on_ready(kl_worker *w, kl_client *c) {
    (void)c;
    idle_state *s = w->sc;
    s->settled++;
}

static void idle_on_failed(kl_worker *w, kl_client *c) {
    (void)c;
    idle_state *s = w->sc;
    s->settled++;
}

static void idle_on_frame(kl_worker *w, kl_client *c, const kl_view *v, const char *raw, size_t len) {
    (void)raw, (void)len;
    idle_state *s = w->sc;
    if (kl_span_eq(v->type, "pong") && v->has_req && v->req == (int64_t)c->index &&
        s->ping_sent[c->index]) {
        kl_record(w, KH_ping, kl_now_ns() - s->ping_sent[c->index]);
        kl_count(w, KC_pongs, 1);
        s->ping_sent[c->index] = 0;
        s->outstanding--;
    }
}

static void idle_on_closed(kl_worker *w, kl_client *c, int was_ready, int ok) {
    (void)was_ready, (void)ok;
    idle_state *s = w->sc;
    if (s->ping_sent[c->index]) {
        s->ping_sent[c->index] = 0;
        s->outstanding--;
    }
}

static const kl_scenario_ops idle_ops = {idle_on_ready, idle_on_frame, idle_on_closed, idle_on_failed};

static int idle_setup(kl_worker *w) {
    idle_state *s = kf_calloc(1, sizeof(*s));
    w->sc = s;
    w->ops = &idle_ops;
    const kl_opts *o = w->o;
    s->n = (uint32_t)(o->conns / o->procs + (w->index < o->conns % o->procs));
    s->cl = kf_calloc(s->n ? s->n : 1, sizeof(*s->cl));
    s->ping_sent = kf_calloc(s->n ? s->n : 1, sizeof(*s->ping_sent));
    w->slot->target = s->n;
    for (uint32_t i = 0; i < s->n; i++) {
        kl_client *c = &s->cl[i];
        c->index = i;
        c->owner = s;
        c->role = KF_ROLE_CUSTOMER;
        c->node = (uint8_t)((i * (uint32_t)o->procs + (uint32_t)w->index) % (uint32_t)o->nurls);
        snprintf(c->sub, sizeof(c->sub), "%s-i%d-%u", o->run_id, w->index, i);
        kl_client_connect(w, c);
    }
    return 0;
}

static int idle_setup_done(kl_worker *w) {
    idle_state *s = w->sc;
    return s->settled >= s->n;
}

static void on_tick(evutil_socket_t fd, short what, void *arg) {
    (void)fd, (void)what;
    kl_worker *w = arg;
    idle_state *s = w->sc;
    if (w->o->ping_interval_s <= 0 || s->n == 0) return;
    int64_t now = kl_now_ns();
    double per_ns = (double)s->n / (w->o->ping_interval_s * 1e9);
    uint64_t due = (uint64_t)((double)(now - w->go_ns) * per_ns);
    /* Bounded: one round over the connections per tick at most. */
    if (due > s->pings_due + s->n) s->pings_due = due - s->n;
    char buf[64];
    for (; s->pings_due < due; s->pings_due++) {
        uint32_t i = (uint32_t)(s->pings_due % s->n);
        kl_client *c = &s->cl[i];
        if (c->state != CL_READY || s->ping_sent[i]) continue;
        kl_enc e;
        kl_enc_begin(&e, w->o->msgpack, buf, sizeof(buf), 2);
        kl_enc_str(&e, "type", "ping", 4);
        kl_enc_int(&e, "req", i);
        size_t n = kl_enc_end(&e);
        if (kl_client_send(w, c, buf, n) == 0) {
            s->ping_sent[i] = now;
            s->outstanding++;
            kl_count(w, KC_pings, 1);
        }
    }
}

static void idle_go(kl_worker *w) {
    idle_state *s = w->sc;
    s->run_end = w->go_ns + (int64_t)(w->o->duration_s * 1e9);
    s->tick = kl_timer(w, 10, on_tick, w);
}

static int idle_run_over(kl_worker *w, int64_t now) {
    idle_state *s = w->sc;
    return now >= s->run_end;
}

static int idle_drained(kl_worker *w) {
    idle_state *s = w->sc;
    return s->outstanding == 0;
}

static void idle_finish(kl_worker *w) {
    idle_state *s = w->sc;
    if (s->tick) event_del(s->tick);
    for (uint32_t i = 0; i < s->n; i++) kl_client_close(w, &s->cl[i]);
}

static void idle_free(kl_worker *w) {
    idle_state *s = w->sc;
    if (!s) return;
    for (uint32_t i = 0; i < s->n; i++) kl_client_forget(&s->cl[i]);
    if (s->tick) event_free(s->tick);
    kf_free(s->cl);
    kf_free(s->ping_sent);
    kf_free(s);
    w->sc = NULL;
}

const kl_scenario_def kl_idle = {idle_setup, idle_setup_done, idle_go, idle_run_over,
                                 idle_drained, idle_finish, idle_free};
