/* Scenario journey: the whole path of a customer service chat, over and over.
 *
 * A customer connects to the first node and opens a conversation. The worker's dispatcher polls
 * queue.list through one of its agents (connected to the second node) and has a free agent
 * accept each of its customers' waiting conversations. The customer and the agent then chat:
 * --msgs turns, the agent answering each after --agent-delay-ms, the customer thinking
 * --think-ms between turns. After the last turn the agent closes the conversation; the customer
 * leaves and starts again after --pause-ms. In --reconnect-pct of the journeys the customer drops
 * its TCP connection right after a message is acknowledged (while the agent is still "typing"),
 * reconnects to the other node and resumes with history after=<last id>: the agent's answer
 * must come back exactly once. Every step has a deadline (--step-timeout-ms). */
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kefu/alloc.h"
#include "kefu/token.h"
#include "load.h"

enum { CS_IDLE, CS_CONNECTING, CS_OPENING, CS_WAITING, CS_CHAT, CS_THINK, CS_DROPPED,
       CS_RECONNECTING, CS_RESUMING, CS_CLOSING, CS_CHECKING, CS_LEAVING };

/* Request ids: the range tells what an answer belongs to. */
#define REQ_OPEN 1
#define REQ_TURN 100      /* + turn */
#define REQ_HISTORY 200
#define REQ_CHECK 201
#define REQ_POLL 1
#define REQ_ACCEPT 1000000   /* + customer */
#define REQ_ORPHAN 2000000   /* accept of a conversation whose customer gave up */
#define REQ_REPLY 3000000    /* + customer */
#define REQ_CLOSE 4000000    /* + customer */
#define REQ_ORPHAN_CLOSE 5000000


typedef struct jcust {
    kl_client cl;
    uint8_t st;
    uint8_t turn;
    uint8_t drop_turn;        /* turn after whose ack the connection drops; 0xff: none */
    uint8_t dropped;
    uint8_t accept_pending;
    uint8_t failed;
    uint32_t journey;
    uint64_t replies;         /* bit per turn: the agent's answer was seen */
    kl_sid *reply_ids;           /* id of each answer, [msgs] */
    kl_sid last_id, hist_after;  /* greatest id seen; the after= of the history call in flight */
    int64_t due, deadline, t_open, t_sent, t_hist;
    char conv[48];
} jcust;

typedef struct jconv {
    int cust;                 /* customer index */
    uint32_t journey;
    uint8_t reply_turn, reply_pending, closing;
    int64_t reply_due, last_activity;
    char conv[48];
} jconv;

typedef struct jagent {
    kl_client cl;
    jconv *convs;
    int nconvs, accepting;
} jagent;

typedef struct journey_state {
    jcust *cu;
    jagent *ag;
    uint32_t nc, na;
    uint32_t agents_settled;
    int waiting;              /* customers with an unassigned conversation */
    int poll_inflight;
    int64_t last_poll, poll_sent, run_end;
    uint64_t rng;
    struct event *tick;
    char prefix[40];          /* "<run>.<worker>." for cids */
    size_t prefix_len;
    char sub_prefix[24];      /* "<run>-jc<worker>-" for customer ids */
    size_t sub_prefix_len;
} journey_state;

static uint32_t rnd(journey_state *s, uint32_t n) {
    s->rng ^= s->rng << 13;
    s->rng ^= s->rng >> 7;
    s->rng ^= s->rng << 17;
    return n ? (uint32_t)(s->rng % n) : 0;
}

static void see_id(jcust *c, kl_sid id) {
    if (kl_sid_cmp(id, c->last_id) > 0) c->last_id = id;
}

/* ---- sending ---- */

typedef struct field {
    const char *k;
    const char *s;   /* string value, or NULL for the integer */
    int64_t i;
} field;

static int send_fields(kl_worker *w, kl_client *c, const field *f, int n) {
    char buf[1024];
    kl_enc e;
    kl_enc_begin(&e, w->o->msgpack, buf, sizeof(buf), n);
    for (int i = 0; i < n; i++) {
        if (f[i].s) kl_enc_str(&e, f[i].k, f[i].s, strlen(f[i].s));
        else kl_enc_int(&e, f[i].k, f[i].i);
    }
    size_t len = kl_enc_end(&e);
    return len ? kl_client_send(w, c, buf, len) : -1;
}

/* ---- customers ---- */

static void journey_fail(kl_worker *w, jcust *c, const char *why) {
    if (c->failed || c->st == CS_IDLE) return;
    c->failed = 1;
    kl_count(w, KC_journeys_failed, 1);
    kl_note_error(w, "%s journey %u: %s", c->cl.sub, c->journey, why);
    journey_state *s = w->sc;
    if (c->st == CS_WAITING) s->waiting--;
    c->st = CS_LEAVING;
    kl_client_close(w, &c->cl);
    if (c->cl.state == CL_IDLE) { /* it was still waiting to connect: no callback follows */
        c->st = CS_IDLE;
        c->due = kl_now_ns() + (int64_t)w->o->pause_ms * 1000000;
    }
}

static void step(kl_worker *w, jcust *c, int st) {
    c->st = (uint8_t)st;
    c->deadline = kl_now_ns() + (int64_t)w->o->step_timeout_ms * 1000000;
}

static void send_turn(kl_worker *w, journey_state *s, jcust *c) {
    char text[96], cid[80];
    int64_t now = kl_now_ns();
    snprintf(text, sizeof(text), "%lld:%u:%u%s", (long long)now, c->journey, c->turn,
             c->turn + 1 == w->o->msgs ? ":bye" : "");
    snprintf(cid, sizeof(cid), "%sc%u.%u.%u", s->prefix, c->cl.index, c->journey, c->turn);
    field f[] = {{"type", "msg.send", 0}, {"req", NULL, REQ_TURN + c->turn}, {"conv", c->conv, 0},
                 {"cid", cid, 0}, {"text", text, 0}};
    c->t_sent = now;
    step(w, c, CS_CHAT);
    if (send_fields(w, &c->cl, f, 5) < 0) {
        journey_fail(w, c, "cannot send");
        return;
    }
    kl_count(w, KC_sent, 1);
}

static void send_history(kl_worker *w, jcust *c, int req) {
    char after[48];
    snprintf(after, sizeof(after), "%llu-%llu", (unsigned long long)c->last_id.ms,
             (unsigned long long)c->last_id.seq);
    field f[] = {{"type", "history", 0}, {"req", NULL, req}, {"conv", c->conv, 0},
                 {"after", after, 0}, {"limit", NULL, 50}};
    c->t_hist = kl_now_ns();
    c->hist_after = c->last_id;
    kl_count(w, KC_history_calls, 1);
    if (send_fields(w, &c->cl, f, c->last_id.ms ? 5 : 4) < 0) journey_fail(w, c, "cannot send history");
}

static void start_journey(kl_worker *w, journey_state *s, jcust *c) {
    c->journey++;
    c->turn = 0;
    c->dropped = 0;
    c->failed = 0;
    c->accept_pending = 0;
    c->replies = 0;
    memset(c->reply_ids, 0, sizeof(kl_sid) * (size_t)w->o->msgs);
    c->last_id = c->hist_after = (kl_sid){0, 0};
    c->conv[0] = '\0';
    c->drop_turn = 0xff;
    if (w->o->msgs >= 2 && rnd(s, 100) < (uint32_t)w->o->reconnect_pct)
        c->drop_turn = (uint8_t)rnd(s, (uint32_t)w->o->msgs - 1);
    c->cl.node = 0;
    kl_count(w, KC_journeys_started, 1);
    step(w, c, CS_CONNECTING);
    kl_client_connect(w, &c->cl);
}

/* The answer to turn t is in: go on with the next turn, or wait for the close. */
static void advance(kl_worker *w, jcust *c) {
    if (!((c->replies >> c->turn) & 1)) {
        step(w, c, CS_CHAT);
        return;
    }
    if (c->turn + 1 >= w->o->msgs) {
        step(w, c, CS_CLOSING);
        return;
    }
    c->st = CS_THINK;
    c->due = kl_now_ns() + (int64_t)w->o->think_ms * 1000000;
}

/* A message of the agent (push or history entry) for customer c. Returns 0 or -1 (not ours). */
static int take_reply(kl_worker *w, journey_state *s, jcust *c, const kl_view *v, int live) {
    if (!v->cid.p || v->cid.n <= s->prefix_len + 1 || memcmp(v->cid.p, s->prefix, s->prefix_len) != 0)
        return -1;
    const char *p = v->cid.p + s->prefix_len;
    if (*p != 'r') return 1; /* one of the customer's own messages */
    unsigned idx, journey, turn;
    char tail[64];
    size_t n = v->cid.n - s->prefix_len - 1;
    if (n >= sizeof(tail)) return -1;
    memcpy(tail, p + 1, n);
    tail[n] = '\0';
    if (sscanf(tail, "%u.%u.%u", &idx, &journey, &turn) != 3) return -1;
    if (idx != c->cl.index || journey != c->journey || turn >= (unsigned)w->o->msgs) return -1;
    kl_sid id;
    if (kl_sid_parse(v->id, &id) < 0) return -1;
    see_id(c, id);
    if ((c->replies >> turn) & 1) {
        /* Seen before: the same id is the allowed overlap of pushes and a history page;
         * another id means the answer was stored or delivered twice. */
        if (kl_sid_cmp(c->reply_ids[turn], id) != 0) kl_count(w, KC_duplicated, 1);
        return 0;
    }
    c->replies |= 1ull << turn;
    c->reply_ids[turn] = id;
    kl_count(w, KC_delivered, 1);
    if (live) {
        int64_t ts = 0;
        for (uint32_t i = 0; i < v->text.n && v->text.p[i] >= '0' && v->text.p[i] <= '9'; i++)
            ts = ts * 10 + (v->text.p[i] - '0');
        kl_record(w, KH_e2e_back, kl_now_ns() - ts);
    }
    return 0;
}

static void journey_done(kl_worker *w, jcust *c) {
    uint64_t want = w->o->msgs >= 64 ? ~0ull : (1ull << w->o->msgs) - 1;
    uint64_t missing = want & ~c->replies;
    if (missing) {
        kl_count(w, KC_resume_missing, (uint64_t)__builtin_popcountll(missing));
        journey_fail(w, c, "agent answers missing after the conversation closed");
        return;
    }
    kl_count(w, KC_journeys_done, 1);
    c->st = CS_LEAVING;
    kl_client_close(w, &c->cl);
}

static void on_history(kl_worker *w, journey_state *s, jcust *c, const kl_view *v, int check) {
    kl_record(w, KH_history, kl_now_ns() - c->t_hist);
    if (!kl_span_eq(v->type, "ok")) {
        journey_fail(w, c, "history failed");
        return;
    }
    kl_iter it;
    kl_view m;
    int r;
    if (kl_iter_init(&it, w->o->msgpack, v->msgs) < 0) {
        journey_fail(w, c, "history without msgs");
        return;
    }
    while ((r = kl_iter_next(&it, &m)) == 1) {
        kl_count(w, KC_history_msgs, 1);
        kl_sid id;
        if (kl_sid_parse(m.id, &id) == 0 && kl_sid_cmp(id, c->hist_after) <= 0)
            kl_count(w, KC_duplicated, 1); /* history after=X returned X or older */
        if (take_reply(w, s, c, &m, 0) < 0) kl_count(w, KC_bad_frames, 1);
        else if (kl_sid_parse(m.id, &id) == 0) see_id(c, id);
    }
    if (r < 0) kl_count(w, KC_bad_frames, 1);
    if (v->more == 1) {
        send_history(w, c, check ? REQ_CHECK : REQ_HISTORY);
        return;
    }
    if (check) journey_done(w, c);
    else advance(w, c);
}

static void cust_on_frame(kl_worker *w, journey_state *s, jcust *c, const kl_view *v) {
    int is_ok = kl_span_eq(v->type, "ok"), is_err = kl_span_eq(v->type, "error");
    int64_t now = kl_now_ns();
    if (kl_span_eq(v->type, "msg")) {
        if (take_reply(w, s, c, v, 1) < 0) {
            kl_count(w, KC_bad_frames, 1);
            return;
        }
        if (c->st == CS_CHAT) advance(w, c);
        return;
    }
    if (kl_span_eq(v->type, "conv.state")) {
        if (!kl_span_eq(v->conv, c->conv)) return;
        if (kl_span_eq(v->state, "assigned") && c->st == CS_WAITING) {
            s->waiting--;
            kl_record(w, KH_assign, now - c->t_open);
            send_turn(w, s, c);
        } else if (kl_span_eq(v->state, "closed")) {
            if (c->st == CS_CLOSING || c->st == CS_CHAT || c->st == CS_THINK) {
                if (c->turn + 1 >= w->o->msgs && (c->replies >> c->turn) & 1) {
                    journey_done(w, c);
                } else {
                    step(w, c, CS_CHECKING);
                    send_history(w, c, REQ_CHECK);
                }
            }
        }
        return;
    }
    if (!(is_ok || is_err) || !v->has_req) return;
    if (v->req == REQ_OPEN && c->st == CS_OPENING) {
        if (is_ok && kl_span_copy(v->conv, c->conv, sizeof(c->conv)) > 0) {
            kl_count(w, KC_convs_opened, 1);
            c->t_open = now;
            step(w, c, CS_WAITING);
            s->waiting++;
        } else {
            journey_fail(w, c, "conv.open failed");
        }
    } else if (v->req >= REQ_TURN && v->req < REQ_TURN + 64) {
        int turn = (int)(v->req - REQ_TURN);
        if (!is_ok) {
            char why[256], code[32] = "", msg[96] = "";
            kl_span_copy(v->code, code, sizeof(code));
            kl_span_copy(v->message, msg, sizeof(msg));
            snprintf(why, sizeof(why), "msg.send of turn %d answered %s: %s (state %d)", turn, code,
                     msg, c->st);
            kl_count(w, KC_failed, 1);
            journey_fail(w, c, why);
            return;
        }
        kl_count(w, KC_acked, 1);
        if (turn == c->turn) kl_record(w, KH_ack, now - c->t_sent);
        kl_sid id;
        if (kl_sid_parse(v->id, &id) == 0) see_id(c, id);
        if (turn == c->drop_turn && !c->dropped && c->st == CS_CHAT) {
            /* Drop while the agent is still typing its answer. */
            c->dropped = 1;
            kl_count(w, KC_reconnects, 1);
            c->st = CS_DROPPED;
            c->due = now + (int64_t)w->o->reconnect_ms * 1000000;
            kl_client_drop(w, &c->cl);
        }
    } else if ((v->req == REQ_HISTORY && c->st == CS_RESUMING) ||
               (v->req == REQ_CHECK && c->st == CS_CHECKING)) {
        on_history(w, s, c, v, v->req == REQ_CHECK);
    }
}

/* ---- agents ---- */

static jagent *free_agent(journey_state *s, const kl_opts *o) {
    jagent *best = NULL;
    for (uint32_t i = 0; i < s->na; i++) {
        jagent *a = &s->ag[i];
        if (a->cl.state != CL_READY || a->nconvs + a->accepting >= o->agent_chats) continue;
        if (!best || a->nconvs + a->accepting < best->nconvs + best->accepting) best = a;
    }
    return best;
}

static jconv *find_conv(jagent *a, int cust) {
    for (int i = 0; i < a->nconvs; i++)
        if (a->convs[i].cust == cust && a->convs[i].closing) return &a->convs[i];
    return NULL;
}

static jconv *find_conv_id(jagent *a, kl_span conv) {
    for (int i = 0; i < a->nconvs; i++)
        if (kl_span_eq(conv, a->convs[i].conv)) return &a->convs[i];
    return NULL;
}

static void conv_remove(jagent *a, jconv *cv) {
    *cv = a->convs[--a->nconvs];
}

static void on_queue(kl_worker *w, journey_state *s, const kl_view *v) {
    s->poll_inflight = 0;
    if (!kl_span_eq(v->type, "ok")) return;
    kl_iter it;
    kl_view q;
    if (kl_iter_init(&it, w->o->msgpack, v->convs) < 0) return;
    while (kl_iter_next(&it, &q) == 1) {
        if (!q.customer.p || q.customer.n <= s->sub_prefix_len ||
            memcmp(q.customer.p, s->sub_prefix, s->sub_prefix_len) != 0 || !q.conv.p)
            continue;
        char conv[48], num[16];
        if (kl_span_copy(q.conv, conv, sizeof(conv)) < 0) continue;
        size_t nl = q.customer.n - s->sub_prefix_len;
        if (nl >= sizeof(num)) continue;
        memcpy(num, q.customer.p + s->sub_prefix_len, nl);
        num[nl] = '\0';
        unsigned long idx = strtoul(num, NULL, 10);
        jagent *a = free_agent(s, w->o);
        if (!a) return;
        /* The page may be newer than the customer's conv.open answer, or older than an accept
         * already answered: only a conversation its customer gave up is an orphan. */
        jcust *owner = idx < s->nc ? &s->cu[idx] : NULL;
        int orphan;
        if (!owner)
            orphan = 1;
        else if (owner->st == CS_CONNECTING || owner->st == CS_OPENING)
            continue; /* perhaps the one being opened: decide on a later poll */
        else if (strcmp(owner->conv, conv) != 0 || owner->st == CS_IDLE || owner->st == CS_LEAVING)
            orphan = 1;
        else if (owner->st != CS_WAITING || owner->accept_pending)
            continue;
        else
            orphan = 0;
        field f[] = {{"type", "conv.accept", 0},
                     {"req", NULL, orphan ? REQ_ORPHAN : REQ_ACCEPT + (int64_t)idx},
                     {"conv", conv, 0}};
        if (send_fields(w, &a->cl, f, 3) == 0) {
            a->accepting++;
            if (!orphan) s->cu[idx].accept_pending = 1;
        }
    }
}

static void agent_on_frame(kl_worker *w, journey_state *s, jagent *a, const kl_view *v) {
    int64_t now = kl_now_ns();
    if (kl_span_eq(v->type, "msg")) {
        /* A customer's turn: answer it after the typing delay. */
        if (!v->cid.p || v->cid.n <= s->prefix_len + 1 || memcmp(v->cid.p, s->prefix, s->prefix_len) ||
            v->cid.p[s->prefix_len] != 'c') {
            kl_count(w, KC_bad_frames, 1);
            return;
        }
        char tail[64];
        unsigned idx, journey, turn;
        size_t n = v->cid.n - s->prefix_len - 1;
        if (n >= sizeof(tail)) return;
        memcpy(tail, v->cid.p + s->prefix_len + 1, n);
        tail[n] = '\0';
        if (sscanf(tail, "%u.%u.%u", &idx, &journey, &turn) != 3) return;
        jconv *cv = find_conv_id(a, v->conv);
        if (!cv || cv->cust != (int)idx) {
            kl_count(w, KC_bad_frames, 1);
            kl_note_error(w, "%s: message for a conversation it does not hold", a->cl.sub);
            return;
        }
        int64_t ts = 0;
        for (uint32_t i = 0; i < v->text.n && v->text.p[i] >= '0' && v->text.p[i] <= '9'; i++)
            ts = ts * 10 + (v->text.p[i] - '0');
        kl_record(w, KH_e2e, now - ts);
        kl_count(w, KC_delivered, 1);
        cv->journey = journey;
        cv->reply_turn = (uint8_t)turn;
        cv->reply_pending = 1;
        cv->reply_due = now + (int64_t)w->o->agent_delay_ms * 1000000;
        cv->last_activity = now;
        return;
    }
    int is_ok = kl_span_eq(v->type, "ok"), is_err = kl_span_eq(v->type, "error");
    if (!(is_ok || is_err) || !v->has_req) return;
    int64_t r = v->req;
    if (r == REQ_POLL) {
        on_queue(w, s, v);
    } else if (r >= REQ_ACCEPT && r < REQ_ACCEPT + (int64_t)s->nc) {
        jcust *c = &s->cu[r - REQ_ACCEPT];
        a->accepting--;
        c->accept_pending = 0;
        if (!is_ok) {
            kl_count(w, KC_accept_conflicts, 1);
            return;
        }
        kl_count(w, KC_convs_accepted, 1);
        if (a->nconvs >= w->o->agent_chats) return; /* cannot happen: capacity was reserved */
        jconv *cv = &a->convs[a->nconvs++];
        memset(cv, 0, sizeof(*cv));
        cv->cust = (int)(r - REQ_ACCEPT);
        cv->last_activity = now;
        kl_span_copy(v->conv, cv->conv, sizeof(cv->conv));
    } else if (r == REQ_ORPHAN) {
        a->accepting--;
        if (is_ok && v->conv.p) {
            char conv[48];
            kl_span_copy(v->conv, conv, sizeof(conv));
            field f[] = {{"type", "conv.close", 0}, {"req", NULL, REQ_ORPHAN_CLOSE}, {"conv", conv, 0},
                         {"resolution", "unresolved", 0}};
            send_fields(w, &a->cl, f, 4);
        }
    } else if (r >= REQ_REPLY && r < REQ_REPLY + (int64_t)s->nc) {
        if (is_ok) kl_count(w, KC_acked, 1);
        else kl_count(w, KC_failed, 1);
    } else if ((r >= REQ_CLOSE && r < REQ_CLOSE + (int64_t)s->nc) || r == REQ_ORPHAN_CLOSE) {
        if (is_ok) {
            kl_count(w, KC_convs_closed, 1);
        } else {
            char code[32] = "", msg[96] = "";
            kl_span_copy(v->code, code, sizeof(code));
            kl_span_copy(v->message, msg, sizeof(msg));
            kl_note_error(w, "%s: conv.close answered %s: %s", a->cl.sub, code, msg);
        }
        if (r != REQ_ORPHAN_CLOSE) {
            jconv *cv = find_conv(a, (int)(r - REQ_CLOSE));
            if (cv) conv_remove(a, cv);
        }
    }
}

static void agent_tick(kl_worker *w, journey_state *s, jagent *a, int64_t now) {
    for (int i = 0; i < a->nconvs; i++) {
        jconv *cv = &a->convs[i];
        if (cv->closing) continue;
        if (cv->reply_pending && now >= cv->reply_due) {
            char text[96], cid[80];
            int last = cv->reply_turn + 1 >= w->o->msgs;
            snprintf(text, sizeof(text), "%lld:re:%u%s", (long long)now, cv->reply_turn, last ? ":bye" : "");
            snprintf(cid, sizeof(cid), "%sr%d.%u.%u", s->prefix, cv->cust, cv->journey, cv->reply_turn);
            field f[] = {{"type", "msg.send", 0}, {"req", NULL, REQ_REPLY + cv->cust},
                         {"conv", cv->conv, 0}, {"cid", cid, 0}, {"text", text, 0}};
            cv->reply_pending = 0;
            cv->last_activity = now;
            if (send_fields(w, &a->cl, f, 5) == 0) kl_count(w, KC_sent, 1);
            if (last) {
                field g[] = {{"type", "conv.close", 0}, {"req", NULL, REQ_CLOSE + cv->cust},
                             {"conv", cv->conv, 0}};
                cv->closing = 1;
                send_fields(w, &a->cl, g, 3);
            }
        } else if (now - cv->last_activity > (int64_t)w->o->step_timeout_ms * 2000000) {
            /* The customer gave up on this conversation: close it. */
            field g[] = {{"type", "conv.close", 0}, {"req", NULL, REQ_CLOSE + cv->cust},
                         {"conv", cv->conv, 0}, {"resolution", "unresolved", 0}};
            cv->closing = 1;
            cv->last_activity = now;
            send_fields(w, &a->cl, g, 4);
        }
    }
}

/* ---- callbacks ---- */

static int is_agent(journey_state *s, kl_client *c) {
    (void)s;
    return c->role == KF_ROLE_AGENT;
}

static void j_on_ready(kl_worker *w, kl_client *kc) {
    journey_state *s = w->sc;
    if (is_agent(s, kc)) {
        s->agents_settled++;
        return;
    }
    jcust *c = (jcust *)kc;
    if (c->st == CS_CONNECTING) {
        field f[] = {{"type", "conv.open", 0}, {"req", NULL, REQ_OPEN}, {"topic", "kefu-load", 0}};
        step(w, c, CS_OPENING);
        if (send_fields(w, &c->cl, f, 3) < 0) journey_fail(w, c, "cannot send conv.open");
    } else if (c->st == CS_RECONNECTING) {
        step(w, c, CS_RESUMING);
        send_history(w, c, REQ_HISTORY);
    }
}

static void j_on_frame(kl_worker *w, kl_client *kc, const kl_view *v, const char *raw, size_t len) {
    (void)raw, (void)len;
    journey_state *s = w->sc;
    if (is_agent(s, kc)) agent_on_frame(w, s, (jagent *)kc, v);
    else cust_on_frame(w, s, (jcust *)kc, v);
}

static void j_on_closed(kl_worker *w, kl_client *kc, int was_ready, int ok) {
    (void)was_ready;
    journey_state *s = w->sc;
    if (is_agent(s, kc)) {
        jagent *a = (jagent *)kc;
        a->nconvs = 0;
        a->accepting = 0;
        if (!ok) kl_note_error(w, "agent %s lost its connection", a->cl.sub);
        return;
    }
    jcust *c = (jcust *)kc;
    if (c->st == CS_DROPPED) return;
    if (c->st == CS_LEAVING) {
        c->st = CS_IDLE;
        c->due = kl_now_ns() + (int64_t)w->o->pause_ms * 1000000;
        return;
    }
    if (c->st != CS_IDLE) journey_fail(w, c, ok ? "closed" : "connection lost");
}

static void j_on_failed(kl_worker *w, kl_client *kc) {
    journey_state *s = w->sc;
    if (is_agent(s, kc)) {
        s->agents_settled++;
        return;
    }
    journey_fail(w, (jcust *)kc, "cannot connect");
}

static const kl_scenario_ops journey_ops = {j_on_ready, j_on_frame, j_on_closed, j_on_failed};

/* ---- the tick: starts, think times, reconnects, deadlines, polls, agent answers ---- */

static void on_tick(evutil_socket_t fd, short what, void *arg) {
    (void)fd, (void)what;
    kl_worker *w = arg;
    journey_state *s = w->sc;
    int64_t now = kl_now_ns();
    for (uint32_t i = 0; i < s->nc; i++) {
        jcust *c = &s->cu[i];
        switch (c->st) {
        case CS_IDLE:
            if (now >= c->due && now < s->run_end) start_journey(w, s, c);
            break;
        case CS_THINK:
            if (now >= c->due) {
                c->turn++;
                send_turn(w, s, c);
            }
            break;
        case CS_DROPPED:
            if (now >= c->due && c->cl.state == CL_IDLE) {
                c->cl.node = w->o->nurls > 1 ? 1 : 0; /* resume on the other node */
                step(w, c, CS_RECONNECTING);
                kl_client_connect(w, &c->cl);
            }
            break;
        case CS_LEAVING:
            break;
        default:
            if (now > c->deadline) {
                kl_count(w, KC_step_timeouts, 1);
                journey_fail(w, c, "step timed out");
            }
        }
    }
    if (s->waiting > 0 && !s->poll_inflight && now - s->last_poll >= (int64_t)w->o->queue_poll_ms * 1000000) {
        jagent *a = NULL;
        for (uint32_t i = 0; i < s->na && !a; i++) {
            uint32_t k = (uint32_t)(s->last_poll / 1000000 + i) % s->na;
            if (s->ag[k].cl.state == CL_READY) a = &s->ag[k];
        }
        if (a) {
            field f[] = {{"type", "queue.list", 0}, {"req", NULL, REQ_POLL}, {"limit", NULL, 200}};
            if (send_fields(w, &a->cl, f, 3) == 0) {
                s->poll_inflight = 1;
                s->poll_sent = now;
                kl_count(w, KC_queue_polls, 1);
            }
        }
        s->last_poll = now;
    } else if (s->poll_inflight && now - s->poll_sent > (int64_t)w->o->step_timeout_ms * 1000000) {
        s->poll_inflight = 0; /* the answer was lost with its agent */
    }
    for (uint32_t i = 0; i < s->na; i++)
        if (s->ag[i].cl.state == CL_READY) agent_tick(w, s, &s->ag[i], now);
}

/* ---- lifecycle ---- */

static int j_setup(kl_worker *w) {
    const kl_opts *o = w->o;
    journey_state *s = kf_calloc(1, sizeof(*s));
    w->sc = s;
    w->ops = &journey_ops;
    s->nc = (uint32_t)(o->customers / o->procs + (w->index < o->customers % o->procs));
    s->na = (uint32_t)(o->agents / o->procs + (w->index < o->agents % o->procs));
    s->cu = kf_calloc(s->nc, sizeof(*s->cu));
    s->ag = kf_calloc(s->na, sizeof(*s->ag));
    s->rng = 0x2545f4914f6cdd1dull ^ ((uint64_t)w->index << 32) ^ (uint64_t)kl_now_ns();
    s->prefix_len = (size_t)snprintf(s->prefix, sizeof(s->prefix), "%s.%d.", o->run_id, w->index);
    s->sub_prefix_len = (size_t)snprintf(s->sub_prefix, sizeof(s->sub_prefix), "%s-jc%d-", o->run_id, w->index);
    w->slot->target = s->na;
    for (uint32_t i = 0; i < s->nc; i++) {
        jcust *c = &s->cu[i];
        c->cl.index = i;
        c->cl.owner = c;
        c->cl.role = KF_ROLE_CUSTOMER;
        snprintf(c->cl.sub, sizeof(c->cl.sub), "%s%u", s->sub_prefix, i);
        c->reply_ids = kf_calloc((size_t)o->msgs, sizeof(kl_sid));
        c->st = CS_IDLE;
    }
    for (uint32_t i = 0; i < s->na; i++) {
        jagent *a = &s->ag[i];
        a->cl.index = i;
        a->cl.owner = a;
        a->cl.role = KF_ROLE_AGENT;
        a->cl.node = o->nurls > 1 ? 1 : 0;
        a->convs = kf_calloc((size_t)o->agent_chats, sizeof(jconv));
        snprintf(a->cl.sub, sizeof(a->cl.sub), "%s-ja%d-%u", o->run_id, w->index, i);
        kl_client_connect(w, &a->cl);
    }
    return 0;
}

static int j_setup_done(kl_worker *w) {
    journey_state *s = w->sc;
    return s->agents_settled >= s->na;
}

static void j_go(kl_worker *w) {
    journey_state *s = w->sc;
    s->run_end = w->go_ns + (int64_t)(w->o->duration_s * 1e9);
    /* Spread the first journeys over the first second. */
    for (uint32_t i = 0; i < s->nc; i++)
        s->cu[i].due = w->go_ns + (int64_t)((double)i * 1e9 / (double)s->nc);
    s->tick = kl_timer(w, 5, on_tick, w);
}

static int j_run_over(kl_worker *w, int64_t now) {
    journey_state *s = w->sc;
    return now >= s->run_end;
}

static int j_drained(kl_worker *w) {
    journey_state *s = w->sc;
    for (uint32_t i = 0; i < s->nc; i++)
        if (s->cu[i].st != CS_IDLE) return 0;
    for (uint32_t i = 0; i < s->na; i++)
        if (s->ag[i].nconvs || s->ag[i].accepting) return 0;
    return 1;
}

static void j_finish(kl_worker *w) {
    journey_state *s = w->sc;
    if (s->tick) event_del(s->tick);
    for (uint32_t i = 0; i < s->nc; i++) {
        jcust *c = &s->cu[i];
        if (c->st != CS_IDLE && c->st != CS_LEAVING) {
            kl_count(w, KC_journeys_failed, 1);
            kl_note_error(w, "%s: journey unfinished at the end of the drain", c->cl.sub);
        }
        c->st = CS_LEAVING;
        kl_client_close(w, &c->cl);
    }
    for (uint32_t i = 0; i < s->na; i++) kl_client_close(w, &s->ag[i].cl);
}

static void j_free(kl_worker *w) {
    journey_state *s = w->sc;
    if (!s) return;
    for (uint32_t i = 0; i < s->nc; i++) {
        kl_client_forget(&s->cu[i].cl);
        kf_free(s->cu[i].reply_ids);
    }
    for (uint32_t i = 0; i < s->na; i++) {
        kl_client_forget(&s->ag[i].cl);
        kf_free(s->ag[i].convs);
    }
    if (s->tick) event_free(s->tick);
    kf_free(s->cu);
    kf_free(s->ag);
    kf_free(s);
    w->sc = NULL;
}

const kl_scenario_def kl_journey = {j_setup, j_setup_done, j_go, j_run_over, j_drained, j_finish,
                                    j_free};
