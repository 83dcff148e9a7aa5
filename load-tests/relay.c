/* Scenario relay: P customer/agent pairs. Each customer opens a conversation on the first node,
 * its agent accepts it on the second; then the worker sends msg.send frames open-loop at a fixed
 * rate for a fixed duration, round-robin over the pairs. Each message carries its scheduled send
 * time (CLOCK_MONOTONIC ns) in the text, so end-to-end latency includes any lag of the sender
 * itself (no coordinated omission), and a cid "<run>.<worker>.<pair>.<dir>.<seq>" from which the
 * receiver finds it in a bitmap: delivered, duplicated, out of order. */
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kefu/alloc.h"
#include "kefu/token.h"
#include "load.h"

enum { P_CONNECTING, P_OPENING, P_ACCEPTING, P_READY, P_FAILED };
enum { REQ_OPEN = 1, REQ_ACCEPT = 2 };
#define REQ_HISTORY (-2) /* msg.send reqs are the sequence numbers, >= 0 */

/* What one side of a pair knows of its conversation, by the client rules of docs/protocol.md
 * ("Missed pushes"): the newest id held in order; a push (or an own msg.send answer) whose prev
 * is not it reveals a gap, healed by history after=last; so does a resync notice. */
#define CHAIN_BUF 32
typedef struct chain {
    kl_sid last;
    char last_str[48];     /* "" before the first message */
    uint8_t fetching;      /* a history call is in flight */
    uint8_t again;         /* the buffer overflowed while it was: call again after it */
    uint8_t nbuf;          /* live messages that arrived during the call, applied after it */
    kl_sid buf_id[CHAIN_BUF], buf_prev[CHAIN_BUF];
    uint8_t buf_first[CHAIN_BUF]; /* prev was "" */
} chain;

typedef struct rdir {
    uint32_t sent, acked, failed;
    uint32_t max_seen;      /* highest seq delivered + 1 */
    uint8_t *acked_bits, *seen_bits;
    kl_sid *ids;            /* per seq: the id its acknowledgement gave (to name the lost) */
} rdir;

typedef struct pair {
    kl_client cust, agent;
    uint32_t index;
    uint8_t state;
    uint8_t ready;          /* bit 0 customer, bit 1 agent */
    char conv[48];
    rdir d[2];              /* 0: customer -> agent, 1: agent -> customer */
    chain ch[2];            /* 0: the customer's view, 1: the agent's */
    uint8_t down;           /* bit 0 customer, bit 1 agent: lost after set-up, reconnecting */
} pair;

typedef struct relay_state {
    pair *p;
    uint32_t n, settled, ndirs;
    double rate;            /* this worker's messages per second */
    double ns_per_msg;
    uint64_t k_next, k_total;
    uint32_t seq_cap;
    uint64_t sent, acked, failed, delivered, healed, abandoned;
    uint64_t awaited;       /* acknowledged messages not seen yet at the other end */
    int64_t t0;
    struct event *tick, *reconnect_tick;
    char prefix[40];        /* "<run>.<worker>." */
    size_t prefix_len;
} relay_state;

static void settle(kl_worker *w, pair *p, int ok, const char *why) {
    relay_state *s = w->sc;
    if (p->state == P_READY || p->state == P_FAILED) return;
    p->state = ok ? P_READY : P_FAILED;
    s->settled++;
    if (!ok) {
        kl_note_error(w, "pair %u: %s", p->index, why);
        kl_client_close(w, &p->cust);
        kl_client_close(w, &p->agent);
    }
}

static int send_req(kl_worker *w, kl_client *c, const char *type, int64_t req, const char *conv) {
    char buf[256];
    kl_enc e;
    kl_enc_begin(&e, w->o->msgpack, buf, sizeof(buf), conv ? 3 : 2);
    kl_enc_str(&e, "type", type, strlen(type));
    kl_enc_int(&e, "req", req);
    if (conv) kl_enc_str(&e, "conv", conv, strlen(conv));
    size_t n = kl_enc_end(&e);
    return n ? kl_client_send(w, c, buf, n) : -1;
}

static void chain_fetch(kl_worker *w, pair *p, int side);

static void relay_on_ready(kl_worker *w, kl_client *c) {
    pair *p = c->owner;
    int side = c == &p->cust ? 0 : 1;
    if (p->state == P_READY) {
        /* back after a lost connection: resume with history after the last id held */
        kl_count(w, KC_reconnects, 1);
        p->down &= (uint8_t)~(1u << side);
        p->ch[side].fetching = 0;
        chain_fetch(w, p, side);
        return;
    }
    p->ready |= c == &p->cust ? 1 : 2;
    if (p->ready == 3 && p->state == P_CONNECTING) {
        p->state = P_OPENING;
        send_req(w, &p->cust, "conv.open", REQ_OPEN, NULL);
    }
}

/* A connection of a set-up pair was lost (a gateway killed, say): its unanswered msg.send are
 * abandoned (not acknowledged, so nothing is expected of them) and it reconnects. */
static void pair_lost(kl_worker *w, pair *p, kl_client *c) {
    relay_state *s = w->sc;
    int side = c == &p->cust ? 0 : 1;
    rdir *d = &p->d[side];
    uint32_t out = d->sent - d->acked - d->failed;
    d->failed += out;
    s->abandoned += out;
    p->down |= (uint8_t)(1u << side);
}

static void relay_on_failed(kl_worker *w, kl_client *c) {
    pair *p = c->owner;
    if (p->state == P_READY) {
        p->down |= (uint8_t)(1u << (c == &p->cust ? 0 : 1));
        return;
    }
    settle(w, p, 0, "connection failed");
}

static void on_reconnect_tick(evutil_socket_t fd, short what, void *arg) {
    (void)fd, (void)what;
    kl_worker *w = arg;
    relay_state *s = w->sc;
    if (w->stopping) return;
    for (uint32_t i = 0; i < s->n; i++) {
        pair *p = &s->p[i];
        if (p->state != P_READY || !p->down) continue;
        if ((p->down & 1) && p->cust.state == CL_IDLE) kl_client_connect(w, &p->cust);
        if ((p->down & 2) && p->agent.state == CL_IDLE) kl_client_connect(w, &p->agent);
    }
}

static int64_t sched_of(const relay_state *s, uint64_t k) {
    return s->t0 + (int64_t)((double)k * s->ns_per_msg);
}

static uint64_t k_of(const relay_state *s, uint32_t pair_index, int dir, uint32_t seq) {
    return ((uint64_t)seq * s->ndirs + (uint64_t)dir) * s->n + pair_index;
}

static int bit_test(const uint8_t *bits, uint32_t i) {
    return (bits[i >> 3] >> (i & 7)) & 1;
}

static int bit_test_set(uint8_t *bits, uint32_t i) {
    int was = (bits[i >> 3] >> (i & 7)) & 1;
    bits[i >> 3] |= (uint8_t)(1u << (i & 7));
    return was;
}

static void chain_fetch(kl_worker *w, pair *p, int side) {
    chain *ch = &p->ch[side];
    if (ch->fetching) {
        ch->again = 1;
        return;
    }
    ch->fetching = 1;
    ch->nbuf = 0;
    kl_client *c = side ? &p->agent : &p->cust;
    char buf[256];
    kl_enc e;
    int after = ch->last_str[0] != 0;
    kl_enc_begin(&e, w->o->msgpack, buf, sizeof(buf), after ? 5 : 4);
    kl_enc_str(&e, "type", "history", 7);
    kl_enc_int(&e, "req", REQ_HISTORY);
    kl_enc_str(&e, "conv", p->conv, strlen(p->conv));
    kl_enc_int(&e, "limit", 200);
    if (after) kl_enc_str(&e, "after", ch->last_str, strlen(ch->last_str));
    size_t n = kl_enc_end(&e);
    kl_count(w, KC_history_calls, 1);
    if (!n || kl_client_send(w, c, buf, n) < 0) ch->fetching = 0;
}

static void chain_set(chain *ch, kl_sid id) {
    ch->last = id;
    snprintf(ch->last_str, sizeof(ch->last_str), "%llu-%llu", (unsigned long long)id.ms,
             (unsigned long long)id.seq);
}

/* Applies one message known live: in order, already held, or a gap (then history). */
static void chain_apply(kl_worker *w, pair *p, int side, kl_sid id, int first, kl_sid prev) {
    chain *ch = &p->ch[side];
    if (ch->last_str[0] && kl_sid_cmp(id, ch->last) <= 0) return;
    if (ch->last_str[0] ? !first && kl_sid_cmp(prev, ch->last) == 0 : first) {
        chain_set(ch, id);
        return;
    }
    kl_count(w, KC_gaps, 1);
    chain_fetch(w, p, side);
}

/* A message (id, prev) reached this side live. Returns 1 when it is already held (older than or
 * the same as the newest in order), 0 otherwise. During a history call it is buffered and
 * applied after it. */
static int chain_see(kl_worker *w, pair *p, int side, kl_span id_span, kl_span prev_span) {
    chain *ch = &p->ch[side];
    kl_sid id, prev = {0, 0};
    if (kl_sid_parse(id_span, &id) < 0) return 0;
    if (ch->last_str[0] && kl_sid_cmp(id, ch->last) <= 0) return 1;
    int first = !prev_span.p || prev_span.n == 0 || kl_sid_parse(prev_span, &prev) < 0;
    if (ch->fetching) {
        if (ch->nbuf < CHAIN_BUF) {
            ch->buf_id[ch->nbuf] = id;
            ch->buf_prev[ch->nbuf] = prev;
            ch->buf_first[ch->nbuf++] = (uint8_t)first;
        } else {
            ch->again = 1;
        }
        return 0;
    }
    chain_apply(w, p, side, id, first, prev);
    return 0;
}

static int parse_cid(const relay_state *s, kl_span cid, uint32_t *pi, int *dir, uint32_t *seq);

/* A history page for this side: everything in it is held now; messages not seen live are
 * counted as healed. */
static void on_history_page(kl_worker *w, relay_state *s, pair *p, int side, const kl_view *v) {
    chain *ch = &p->ch[side];
    ch->fetching = 0;
    if (!kl_span_eq(v->type, "ok")) {
        kl_note_error(w, "history failed; trying again");
        chain_fetch(w, p, side);
        return;
    }
    kl_iter it;
    kl_view m;
    int r;
    if (kl_iter_init(&it, w->o->msgpack, v->msgs) < 0) return;
    while ((r = kl_iter_next(&it, &m)) == 1) {
        kl_sid id;
        if (kl_sid_parse(m.id, &id) < 0) continue;
        if (!ch->last_str[0] || kl_sid_cmp(id, ch->last) > 0) chain_set(ch, id);
        uint32_t pi, seq;
        int dir;
        /* the other side's messages are what this side expects to receive */
        if (parse_cid(s, m.cid, &pi, &dir, &seq) < 0 || &s->p[pi] != p || dir != 1 - side) continue;
        rdir *d = &p->d[dir];
        if (!bit_test_set(d->seen_bits, seq)) {
            kl_count(w, KC_healed, 1);
            s->healed++;
            if (bit_test(d->acked_bits, seq)) s->awaited--;
        }
    }
    if (v->more == 1 || ch->again) {
        ch->again = 0;
        chain_fetch(w, p, side);
        return;
    }
    /* the live messages buffered meanwhile, in arrival order */
    uint8_t n = ch->nbuf;
    ch->nbuf = 0;
    for (uint8_t i = 0; i < n && !ch->fetching; i++)
        chain_apply(w, p, side, ch->buf_id[i], ch->buf_first[i], ch->buf_prev[i]);
}

static void on_ack(kl_worker *w, relay_state *s, pair *p, int dir, const kl_view *v) {
    rdir *d = &p->d[dir];
    if (!v->has_req || v->req < 0 || v->req >= s->seq_cap) return;
    uint32_t seq = (uint32_t)v->req;
    int is_ok = kl_span_eq(v->type, "ok");
    if (bit_test_set(d->acked_bits, seq)) return; /* answered twice: ignore */
    if (is_ok) {
        /* the sender's own message is part of its chain too */
        if (v->id.p) {
            chain_see(w, p, dir, v->id, v->prev);
            kl_sid_parse(v->id, &d->ids[seq]);
        }
        d->acked++;
        s->acked++;
        if (!bit_test(d->seen_bits, seq)) s->awaited++;
        kl_count(w, KC_acked, 1);
        kl_record(w, KH_ack, kl_now_ns() - sched_of(s, k_of(s, p->index, dir, seq)));
        if (v->dup == 1) kl_count(w, KC_server_dups, 1);
    } else {
        /* An error answer: not stored, so not expected at the other end. */
        d->acked_bits[seq >> 3] &= (uint8_t)~(1u << (seq & 7));
        d->failed++;
        s->failed++;
        kl_count(w, KC_failed, 1);
        char code[32] = "", msg[96] = "";
        kl_span_copy(v->code, code, sizeof(code));
        kl_span_copy(v->message, msg, sizeof(msg));
        kl_note_error(w, "msg.send answered %s: %s", code, msg);
    }
}

/* cid "<run>.<worker>.<pair>.<dir>.<seq>" -> pair, dir, seq of this worker; -1 when foreign. */
static int parse_cid(const relay_state *s, kl_span cid, uint32_t *pi, int *dir, uint32_t *seq) {
    if (!cid.p || cid.esc || cid.n <= s->prefix_len || memcmp(cid.p, s->prefix, s->prefix_len) != 0)
        return -1;
    const char *p = cid.p + s->prefix_len, *e = cid.p + cid.n;
    uint64_t f[3] = {0, 0, 0};
    for (int i = 0; i < 3; i++) {
        if (p >= e || *p < '0' || *p > '9') return -1;
        while (p < e && *p >= '0' && *p <= '9') f[i] = f[i] * 10 + (uint64_t)(*p++ - '0');
        if (i < 2) {
            if (p >= e || *p != '.') return -1;
            p++;
        }
    }
    if (p != e || f[0] >= s->n || f[1] > 1 || f[2] >= s->seq_cap) return -1;
    *pi = (uint32_t)f[0];
    *dir = (int)f[1];
    *seq = (uint32_t)f[2];
    return 0;
}

static void on_delivery(kl_worker *w, relay_state *s, kl_client *c, const kl_view *v) {
    uint32_t pi, seq;
    int dir;
    if (parse_cid(s, v->cid, &pi, &dir, &seq) < 0) {
        kl_count(w, KC_bad_frames, 1);
        kl_note_error(w, "%s: msg with an unexpected cid", c->sub);
        return;
    }
    pair *p = &s->p[pi];
    if (p != c->owner || (dir == 0) != (c == &p->agent)) {
        kl_count(w, KC_bad_frames, 1);
        kl_note_error(w, "%s: msg for pair %u delivered to the wrong connection", c->sub, pi);
        return;
    }
    rdir *d = &p->d[dir];
    int held = chain_see(w, p, 1 - dir, v->id, v->prev);
    if (bit_test_set(d->seen_bits, seq)) {
        /* a push of a message history already gave is expected; twice live is not */
        if (!held) kl_count(w, KC_duplicated, 1);
        return;
    }
    s->delivered++;
    if (bit_test(d->acked_bits, seq)) s->awaited--;
    kl_count(w, KC_delivered, 1);
    if (seq + 1 < d->max_seen) kl_count(w, KC_out_of_order, 1);
    else d->max_seen = seq + 1;
    int64_t ts = 0;
    for (uint32_t i = 0; i < v->text.n && v->text.p[i] >= '0' && v->text.p[i] <= '9'; i++)
        ts = ts * 10 + (v->text.p[i] - '0');
    kl_record(w, dir ? KH_e2e_back : KH_e2e, kl_now_ns() - ts);
}

static void relay_on_frame(kl_worker *w, kl_client *c, const kl_view *v, const char *raw, size_t len) {
    (void)raw, (void)len;
    relay_state *s = w->sc;
    pair *p = c->owner;
    int is_cust = c == &p->cust;
    if (kl_span_eq(v->type, "msg")) {
        on_delivery(w, s, c, v);
        return;
    }
    if (kl_span_eq(v->type, "resync")) {
        /* a notice (for this conversation, or for all): heal with history */
        kl_count(w, KC_resyncs, 1);
        if (p->state == P_READY && (!v->conv.p || kl_span_eq(v->conv, p->conv)))
            chain_fetch(w, p, is_cust ? 0 : 1);
        return;
    }
    if (v->has_req && v->req == REQ_HISTORY) {
        on_history_page(w, s, p, is_cust ? 0 : 1, v);
        return;
    }
    int is_ok = kl_span_eq(v->type, "ok"), is_err = kl_span_eq(v->type, "error");
    if (!is_ok && !is_err) return; /* conv.state, typing, pong ... */
    if (p->state == P_OPENING && is_cust && v->has_req && v->req == REQ_OPEN) {
        if (is_ok && v->conv.p && kl_span_copy(v->conv, p->conv, sizeof(p->conv)) > 0) {
            kl_count(w, KC_convs_opened, 1);
            p->state = P_ACCEPTING;
            send_req(w, &p->agent, "conv.accept", REQ_ACCEPT, p->conv);
        } else {
            settle(w, p, 0, "conv.open failed");
        }
        return;
    }
    if (p->state == P_ACCEPTING && !is_cust && v->has_req && v->req == REQ_ACCEPT) {
        if (is_ok) kl_count(w, KC_convs_accepted, 1);
        settle(w, p, is_ok, "conv.accept failed");
        return;
    }
    if (p->state == P_READY) on_ack(w, s, p, is_cust ? 0 : 1, v);
}

static void relay_on_closed(kl_worker *w, kl_client *c, int was_ready, int ok) {
    (void)was_ready;
    pair *p = c->owner;
    if (p->state == P_READY && !ok) {
        pair_lost(w, p, c);
        return;
    }
    settle(w, c->owner, 0, "connection closed during set-up");
}

static const kl_scenario_ops relay_ops = {relay_on_ready, relay_on_frame, relay_on_closed,
                                          relay_on_failed};

static int relay_setup(kl_worker *w) {
    const kl_opts *o = w->o;
    relay_state *s = kf_calloc(1, sizeof(*s));
    w->sc = s;
    w->ops = &relay_ops;
    s->n = (uint32_t)(o->pairs / o->procs + (w->index < o->pairs % o->procs));
    s->ndirs = o->both ? 2 : 1;
    s->rate = o->pairs ? o->rate * (double)s->n / (double)o->pairs : 0;
    s->ns_per_msg = s->rate > 0 ? 1e9 / s->rate : 0;
    s->k_total = (uint64_t)(s->rate * o->duration_s);
    uint64_t per = s->n ? (s->k_total + (uint64_t)s->n * s->ndirs - 1) / ((uint64_t)s->n * s->ndirs) : 0;
    s->seq_cap = (uint32_t)per + 1;
    s->prefix_len = (size_t)snprintf(s->prefix, sizeof(s->prefix), "%s.%d.", o->run_id, w->index);
    s->p = kf_calloc(s->n ? s->n : 1, sizeof(*s->p));
    w->slot->target = s->n;
    size_t bytes = (s->seq_cap + 7) / 8;
    for (uint32_t i = 0; i < s->n; i++) {
        pair *p = &s->p[i];
        p->index = i;
        for (uint32_t d = 0; d < s->ndirs; d++) {
            p->d[d].acked_bits = kf_calloc(bytes, 1);
            p->d[d].seen_bits = kf_calloc(bytes, 1);
            p->d[d].ids = kf_calloc(s->seq_cap, sizeof(kl_sid));
        }
        p->cust.owner = p->agent.owner = p;
        p->cust.index = p->agent.index = i;
        p->cust.role = KF_ROLE_CUSTOMER;
        p->agent.role = KF_ROLE_AGENT;
        p->cust.node = 0;
        p->agent.node = o->nurls > 1 ? 1 : 0;
        snprintf(p->cust.sub, sizeof(p->cust.sub), "%s-rc%d-%u", o->run_id, w->index, i);
        snprintf(p->agent.sub, sizeof(p->agent.sub), "%s-ra%d-%u", o->run_id, w->index, i);
        kl_client_connect(w, &p->cust);
        kl_client_connect(w, &p->agent);
    }
    return 0;
}

static int relay_setup_done(kl_worker *w) {
    relay_state *s = w->sc;
    return s->settled >= s->n;
}

static void send_one(kl_worker *w, relay_state *s, uint64_t k, int64_t now) {
    uint32_t pi = (uint32_t)(k % s->n);
    uint64_t round = k / s->n;
    int dir = (int)(round % s->ndirs);
    uint32_t seq = (uint32_t)(round / s->ndirs);
    pair *p = &s->p[pi];
    rdir *d = &p->d[dir];
    kl_client *c = dir == 0 ? &p->cust : &p->agent;
    int64_t sched = sched_of(s, k);
    if (now - sched > 10000000) kl_count(w, KC_sched_late, 1);
    if (p->state != P_READY || c->state != CL_READY || seq >= s->seq_cap) {
        kl_count(w, KC_failed, 1); /* not sent: its pair is down */
        return;
    }
    char text[8192], cid[64], buf[8192 + 256];
    int tl = snprintf(text, sizeof(text), "%lld:%u:", (long long)sched, seq);
    int want = w->o->size < (int)sizeof(text) ? w->o->size : (int)sizeof(text) - 1;
    if (tl < want) {
        memset(text + tl, 'x', (size_t)(want - tl));
        tl = want;
    }
    int cl = snprintf(cid, sizeof(cid), "%s%u.%d.%u", s->prefix, pi, dir, seq);
    kl_enc e;
    kl_enc_begin(&e, w->o->msgpack, buf, sizeof(buf), 5);
    kl_enc_str(&e, "type", "msg.send", 8);
    kl_enc_int(&e, "req", seq);
    kl_enc_str(&e, "conv", p->conv, strlen(p->conv));
    kl_enc_str(&e, "cid", cid, (size_t)cl);
    kl_enc_str(&e, "text", text, (size_t)tl);
    size_t n = kl_enc_end(&e);
    if (!n || kl_client_send(w, c, buf, n) < 0) {
        kl_count(w, KC_failed, 1);
        return;
    }
    d->sent++;
    s->sent++;
    kl_count(w, KC_sent, 1);
}

static void on_tick(evutil_socket_t fd, short what, void *arg) {
    (void)fd, (void)what;
    kl_worker *w = arg;
    relay_state *s = w->sc;
    if (s->n == 0 || s->rate <= 0) return;
    int64_t now = kl_now_ns();
    if (now < s->t0) return;
    uint64_t due = (uint64_t)((double)(now - s->t0) / s->ns_per_msg) + 1;
    if (due > s->k_total) due = s->k_total;
    /* Bounded per tick (50 ms worth); a deficit carries over, keeping the schedule open-loop. */
    uint64_t cap = (uint64_t)(s->rate / 20) + 16;
    for (uint64_t i = 0; i < cap && s->k_next < due; i++) send_one(w, s, s->k_next++, now);
}

static void relay_go(kl_worker *w) {
    relay_state *s = w->sc;
    s->t0 = w->go_ns;
    s->tick = kl_timer(w, 1, on_tick, w);
    s->reconnect_tick = kl_timer(w, 200, on_reconnect_tick, w);
}

static int relay_run_over(kl_worker *w, int64_t now) {
    relay_state *s = w->sc;
    (void)now;
    return s->k_next >= s->k_total;
}

static int relay_drained(kl_worker *w) {
    relay_state *s = w->sc;
    if (s->acked + s->failed < s->sent) return 0;
    /* every acknowledged message seen, live or healed, and nobody still reconnecting. Counted
     * message by message: the sums of delivered and healed cannot stand in for it, since they
     * include messages answered with an error that were stored all the same (unreplicated),
     * which would let the run end while acknowledged ones are still on their way. */
    if (s->awaited) return 0;
    for (uint32_t i = 0; i < s->n; i++)
        if (s->p[i].down || s->p[i].ch[0].fetching || s->p[i].ch[1].fetching) return 0;
    return 1;
}

static void relay_finish(kl_worker *w) {
    relay_state *s = w->sc;
    if (s->tick) event_del(s->tick);
    if (s->reconnect_tick) event_del(s->reconnect_tick);
    uint64_t lost = 0, unacked = 0;
    for (uint32_t i = 0; i < s->n; i++) {
        pair *p = &s->p[i];
        for (uint32_t dd = 0; dd < s->ndirs; dd++) {
            rdir *d = &p->d[dd];
            for (uint32_t q = 0; q < s->seq_cap; q++) {
                if (bit_test(d->acked_bits, q) && !bit_test(d->seen_bits, q) && lost++ < 20) {
                    /* named, so that a failing drill can look them up in the stream */
                    const chain *ch = &p->ch[1 - dd];
                    fprintf(stderr, "kefu-load: never seen: conv %s %s%u.%u.%u id %llu-%llu; the %s "
                            "holds up to %s%s\n", p->conv, s->prefix, i, dd, q,
                            (unsigned long long)d->ids[q].ms, (unsigned long long)d->ids[q].seq,
                            dd ? "customer" : "agent", ch->last_str[0] ? ch->last_str : "nothing",
                            ch->fetching ? " (a history call in flight)" : "");
                }
            }
            if (d->sent > d->acked + d->failed) unacked += d->sent - d->acked - d->failed;
        }
        kl_client_close(w, &p->cust);
        kl_client_close(w, &p->agent);
    }
    kl_count(w, KC_lost, lost);
    kl_count(w, KC_unacked, unacked);
    if (lost) kl_note_error(w, "%llu acknowledged messages never delivered", (unsigned long long)lost);
}

static void relay_free(kl_worker *w) {
    relay_state *s = w->sc;
    if (!s) return;
    for (uint32_t i = 0; i < s->n; i++) {
        kl_client_forget(&s->p[i].cust);
        kl_client_forget(&s->p[i].agent);
        for (int d = 0; d < 2; d++) {
            kf_free(s->p[i].d[d].acked_bits);
            kf_free(s->p[i].d[d].seen_bits);
            kf_free(s->p[i].d[d].ids);
        }
    }
    if (s->tick) event_free(s->tick);
    if (s->reconnect_tick) event_free(s->reconnect_tick);
    kf_free(s->p);
    kf_free(s);
    w->sc = NULL;
}

const kl_scenario_def kl_relay = {relay_setup, relay_setup_done, relay_go, relay_run_over,
                                  relay_drained, relay_finish, relay_free};
