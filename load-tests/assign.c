/* Scenario worker: automatic assignment by kefu-worker. A agents (skills ["general"], max_chats
 * --max-chats) connect to the second node and sign in with agent.status available; C customers
 * connect to the first node and each sends one conv.open, open-loop at --rate opens per second
 * in total. kefu-worker pushes conv.assigned to an agent; the latency runs from the customer's
 * conv.open send to that push, matched by conversation id (the push may overtake the open's
 * answer: either side may arrive first). An agent at capacity closes its oldest conversation so
 * the run continues. One worker process (matching needs both sides in one table). */
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kefu/alloc.h"
#include "kefu/hash.h"
#include "kefu/token.h"
#include "load.h"

enum { REQ_STATUS = 1, REQ_OPEN = 2, REQ_CLOSE = 1000 };
enum { WC_CONNECTING, WC_READY, WC_OPENING, WC_OPENED, WC_FAILED };

typedef struct wcust {
    kl_client c;
    uint8_t st;
    int64_t t_open;     /* conv.open sent */
} wcust;

typedef struct wagent {
    kl_client c;
    uint8_t signed_in, settled;
    int nheld;
    char (*held)[48];   /* conversations held, oldest first */
    int64_t next_req;
} wagent;

typedef struct wentry {
    char conv[48];
    int64_t t_open, t_assigned; /* 0 = not yet seen */
} wentry;

typedef struct wstate {
    wcust *cu;
    wagent *ag;
    uint32_t nc, na;
    uint32_t cust_settled, agents_settled;
    wentry *tab;
    uint32_t tab_mask, tab_used;
    double ns_per_open;
    uint32_t k_next;
    uint64_t open_sent, open_answered, opened, assigned, foreign;
    int64_t t0;
    struct event *tick;
} wstate;

/* The entry of conv, created when absent; NULL when the table is full. */
static wentry *entry(wstate *s, const char *conv) {
    for (uint32_t i = kf_hash32(conv, strlen(conv)) & s->tab_mask, n = 0; n <= s->tab_mask; i = (i + 1) & s->tab_mask, n++) {
        wentry *e = &s->tab[i];
        if (!e->conv[0]) {
            if (s->tab_used * 4 >= (s->tab_mask + 1) * 3) return NULL;
            snprintf(e->conv, sizeof(e->conv), "%s", conv);
            s->tab_used++;
            return e;
        }
        if (!strcmp(e->conv, conv)) return e;
    }
    return NULL;
}

static void matched(kl_worker *w, wstate *s, wentry *e) {
    s->assigned++;
    kl_count(w, KC_convs_assigned, 1);
    kl_record(w, KH_assign, e->t_assigned - e->t_open);
    if (e->t_assigned > w->slot->last_assign_ns) w->slot->last_assign_ns = e->t_assigned;
}

static int send_simple(kl_worker *w, kl_client *c, const char *type, int64_t req, const char *k,
                       const char *val, const char *conv) {
    char buf[256];
    kl_enc e;
    kl_enc_begin(&e, w->o->msgpack, buf, sizeof(buf), 2 + (k != NULL) + (conv != NULL));
    kl_enc_str(&e, "type", type, strlen(type));
    kl_enc_int(&e, "req", req);
    if (conv) kl_enc_str(&e, "conv", conv, strlen(conv));
    if (k) kl_enc_str(&e, k, val, strlen(val));
    size_t n = kl_enc_end(&e);
    return n ? kl_client_send(w, c, buf, n) : -1;
}

static void note_answer(kl_worker *w, const kl_client *c, const char *what, const kl_view *v) {
    char code[32] = "", msg[96] = "";
    kl_span_copy(v->code, code, sizeof(code));
    kl_span_copy(v->message, msg, sizeof(msg));
    kl_note_error(w, "%s: %s answered %s: %s", c->sub, what, code, msg);
}

static void agent_settle(wstate *s, wagent *a) {
    if (a->settled) return;
    a->settled = 1;
    s->agents_settled++;
}

static void cust_settle(wstate *s, wcust *cu, int st) {
    if (cu->st == WC_CONNECTING) s->cust_settled++;
    if (cu->st == WC_CONNECTING || st == WC_FAILED) cu->st = (uint8_t)st;
}

static void w_on_ready(kl_worker *w, kl_client *c) {
    wstate *s = w->sc;
    if (c->role == KF_ROLE_AGENT) {
        if (send_simple(w, c, "agent.status", REQ_STATUS, "status", "available", NULL) < 0)
            agent_settle(s, c->owner);
    } else {
        cust_settle(s, c->owner, WC_READY);
    }
}

static void w_on_failed(kl_worker *w, kl_client *c) {
    wstate *s = w->sc;
    if (c->role == KF_ROLE_AGENT) agent_settle(s, c->owner);
    else cust_settle(s, c->owner, WC_FAILED);
}

static void w_on_closed(kl_worker *w, kl_client *c, int was_ready, int ok) {
    (void)was_ready, (void)ok;
    w_on_failed(w, c);
}

static void agent_assigned(kl_worker *w, wstate *s, wagent *a, const kl_view *v) {
    char conv[48];
    if (kl_span_copy(v->conv, conv, sizeof(conv)) <= 0) {
        kl_count(w, KC_bad_frames, 1);
        kl_note_error(w, "%s: conv.assigned without a usable conv", a->c.sub);
        return;
    }
    int64_t now = kl_now_ns();
    wentry *e = entry(s, conv);
    if (!e) {
        s->foreign++; /* table full: more assignments than this run opened */
    } else if (e->t_assigned) {
        kl_count(w, KC_duplicated, 1);
        kl_note_error(w, "%s: %s assigned twice", a->c.sub, conv);
        return;
    } else {
        e->t_assigned = now;
        if (e->t_open) matched(w, s, e);
    }
    int max = w->o->max_chats;
    if (a->nheld < max) snprintf(a->held[a->nheld++], sizeof(a->held[0]), "%s", conv);
    if (a->nheld >= max) { /* at capacity: free a place by closing the oldest */
        if (send_simple(w, &a->c, "conv.close", REQ_CLOSE + a->next_req++, "resolution", "resolved",
                        a->held[0]) < 0) {
            kl_count(w, KC_failed, 1);
            return;
        }
        memmove(a->held[0], a->held[1], (size_t)(a->nheld - 1) * sizeof(a->held[0]));
        a->nheld--;
    }
}

static void w_on_frame(kl_worker *w, kl_client *c, const kl_view *v, const char *raw, size_t len) {
    (void)raw, (void)len;
    wstate *s = w->sc;
    int is_ok = kl_span_eq(v->type, "ok"), is_err = kl_span_eq(v->type, "error");
    if (c->role == KF_ROLE_AGENT) {
        wagent *a = c->owner;
        if (kl_span_eq(v->type, "conv.assigned")) {
            agent_assigned(w, s, a, v);
            return;
        }
        if (!(is_ok || is_err) || !v->has_req) return;
        if (v->req == REQ_STATUS) {
            if (is_ok) {
                a->signed_in = 1;
            } else {
                kl_count(w, KC_failed, 1);
                note_answer(w, c, "agent.status", v);
            }
            agent_settle(s, a);
        } else if (v->req >= REQ_CLOSE) {
            if (is_ok) {
                kl_count(w, KC_convs_closed, 1);
            } else {
                kl_count(w, KC_failed, 1);
                note_answer(w, c, "conv.close", v);
            }
        }
        return;
    }
    wcust *cu = c->owner;
    if (!(is_ok || is_err) || !v->has_req || v->req != REQ_OPEN || cu->st != WC_OPENING) return;
    s->open_answered++;
    char conv[48];
    if (!is_ok || kl_span_copy(v->conv, conv, sizeof(conv)) <= 0) {
        cu->st = WC_FAILED;
        kl_count(w, KC_failed, 1);
        note_answer(w, c, "conv.open", v);
        return;
    }
    cu->st = WC_OPENED;
    s->opened++;
    kl_count(w, KC_convs_opened, 1);
    wentry *e = entry(s, conv);
    if (!e) {
        kl_count(w, KC_failed, 1);
        kl_note_error(w, "conversation table full");
        return;
    }
    e->t_open = cu->t_open;
    if (e->t_assigned) matched(w, s, e);
}

static const kl_scenario_ops w_ops = {w_on_ready, w_on_frame, w_on_closed, w_on_failed};

static int w_setup(kl_worker *w) {
    const kl_opts *o = w->o;
    wstate *s = kf_calloc(1, sizeof(*s));
    w->sc = s;
    w->ops = &w_ops;
    s->nc = (uint32_t)o->customers;
    s->na = (uint32_t)o->agents;
    s->cu = kf_calloc(s->nc, sizeof(*s->cu));
    s->ag = kf_calloc(s->na, sizeof(*s->ag));
    uint32_t cap = 64;
    while (cap < 2 * s->nc + 64) cap *= 2;
    s->tab = kf_calloc(cap, sizeof(*s->tab));
    s->tab_mask = cap - 1;
    s->ns_per_open = 1e9 / o->rate;
    w->slot->target = s->nc + s->na;
    for (uint32_t i = 0; i < s->na; i++) {
        wagent *a = &s->ag[i];
        a->held = kf_calloc((size_t)o->max_chats + 1, sizeof(*a->held));
        a->c.owner = a;
        a->c.index = i;
        a->c.role = KF_ROLE_AGENT;
        a->c.node = o->nurls > 1 ? 1 : 0;
        snprintf(a->c.sub, sizeof(a->c.sub), "%s-wa-%u", o->run_id, i);
        kl_client_connect(w, &a->c);
    }
    for (uint32_t i = 0; i < s->nc; i++) {
        wcust *cu = &s->cu[i];
        cu->c.owner = cu;
        cu->c.index = i;
        cu->c.role = KF_ROLE_CUSTOMER;
        cu->c.node = 0;
        snprintf(cu->c.sub, sizeof(cu->c.sub), "%s-wc-%u", o->run_id, i);
        kl_client_connect(w, &cu->c);
    }
    return 0;
}

static int w_setup_done(kl_worker *w) {
    wstate *s = w->sc;
    return s->cust_settled >= s->nc && s->agents_settled >= s->na;
}

static void on_tick(evutil_socket_t fd, short what, void *arg) {
    (void)fd, (void)what;
    kl_worker *w = arg;
    wstate *s = w->sc;
    int64_t now = kl_now_ns();
    if (now < s->t0) return;
    double due_d = (double)(now - s->t0) / s->ns_per_open + 1;
    uint32_t due = due_d >= (double)s->nc ? s->nc : (uint32_t)due_d;
    uint32_t cap = (uint32_t)(w->o->rate / 20) + 16; /* 50 ms worth per tick; a deficit carries over */
    for (uint32_t n = 0; n < cap && s->k_next < due; n++) {
        uint32_t k = s->k_next++;
        wcust *cu = &s->cu[k];
        int64_t sched = s->t0 + (int64_t)((double)k * s->ns_per_open);
        if (now - sched > 10000000) kl_count(w, KC_sched_late, 1);
        if (cu->st != WC_READY) {
            kl_count(w, KC_failed, 1); /* its connection is down */
            continue;
        }
        cu->t_open = kl_now_ns();
        if (send_simple(w, &cu->c, "conv.open", REQ_OPEN, NULL, NULL, NULL) < 0) {
            kl_count(w, KC_failed, 1);
            continue;
        }
        if (!w->slot->first_open_ns) w->slot->first_open_ns = cu->t_open;
        cu->st = WC_OPENING;
        s->open_sent++;
        kl_count(w, KC_sent, 1);
    }
}

static void w_go(kl_worker *w) {
    wstate *s = w->sc;
    s->t0 = w->go_ns;
    s->tick = kl_timer(w, 1, on_tick, w);
}

static int w_run_over(kl_worker *w, int64_t now) {
    (void)now;
    wstate *s = w->sc;
    return s->k_next >= s->nc;
}

static int w_drained(kl_worker *w) {
    wstate *s = w->sc;
    return s->open_answered >= s->open_sent && s->assigned >= s->opened;
}

static void w_finish(kl_worker *w) {
    wstate *s = w->sc;
    if (s->tick) event_del(s->tick);
    uint64_t never = s->opened > s->assigned ? s->opened - s->assigned : 0;
    kl_count(w, KC_never_assigned, never);
    if (s->open_sent > s->open_answered) kl_count(w, KC_unacked, s->open_sent - s->open_answered);
    kl_count(w, KC_foreign_assigned, s->foreign);
    for (uint32_t i = 0; i <= s->tab_mask; i++)
        if (s->tab[i].conv[0] && s->tab[i].t_assigned && !s->tab[i].t_open)
            kl_count(w, KC_foreign_assigned, 1); /* assigned, but not opened by this run */
    if (never)
        kl_note_error(w, "%llu conversations not assigned within --drain", (unsigned long long)never);
    for (uint32_t i = 0; i < s->nc; i++) kl_client_close(w, &s->cu[i].c);
    for (uint32_t i = 0; i < s->na; i++) kl_client_close(w, &s->ag[i].c);
}

static void w_free(kl_worker *w) {
    wstate *s = w->sc;
    if (!s) return;
    for (uint32_t i = 0; i < s->nc; i++) kl_client_forget(&s->cu[i].c);
    for (uint32_t i = 0; i < s->na; i++) {
        kl_client_forget(&s->ag[i].c);
        kf_free(s->ag[i].held);
    }
    if (s->tick) event_free(s->tick);
    kf_free(s->cu);
    kf_free(s->ag);
    kf_free(s->tab);
    kf_free(s);
    w->sc = NULL;
}

const kl_scenario_def kl_assign = {w_setup, w_setup_done, w_go, w_run_over, w_drained, w_finish, w_free};
