/* One gateway process: libwebsockets on a libevent loop, connections, output queues, timers,
 * HTTP endpoints (the web assets: web.c), signals and draining. */
#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <libwebsockets.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <sys/socket.h>
#include <unistd.h>

#include "agent.h"
#include "auth.h"
#include "bot.h"
#include "gateway.h"
#include "kefu/alloc.h"
#include "kefu/log.h"
#include "kefu/redis.h"
#include "kefu/slot.h"
#include "kefu/utf8.h"
#include "request.h"
#include "web.h"

gw_server *gw;

const char *const gw_close_reason_names[CLOSE__COUNT] = {
    "none",         "normal",        "shutdown",     "invalid_utf8",   "too_large",
    "auth_invalid", "auth_expired",  "auth_timeout", "hello_expected", "idle_timeout",
    "rate_abuse",   "slow_consumer", "peer",         "internal",       "protocol"};

/* Per-session data lws allocates for every connection: just a pointer to our struct, which
 * outlives the wsi while Redis replies for it are pending. */
struct pss {
    gw_conn *c;
};

uint32_t gw_clock_ms(void) {
    static uint64_t start;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint64_t ms = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
    if (!start) start = ms - 1;
    return (uint32_t)(ms - start);
}

int64_t gw_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- shared buffers ---- */

gw_buf *gw_buf_new(char *data, size_t len, int binary) {
    gw_buf *b = kf_malloc(sizeof(*b));
    b->refs = 1;
    b->len = (uint32_t)len;
    b->binary = (uint8_t)binary;
    b->data = data;
    return b;
}

void gw_buf_ref(gw_buf *b) { b->refs++; }

void gw_buf_unref(gw_buf *b) {
    if (--b->refs == 0) {
        kf_free(b->data);
        kf_free(b);
    }
}

/* ---- connections ---- */

/* The per-connection struct is the idle memory of a connection (docs/performance.md): keep it
 * at or under this size (224 bytes before the states were made explicit, 216 since). */
_Static_assert(sizeof(gw_conn) <= 216, "gw_conn grew: idle memory per connection");

const char *const gw_conn_state_names[CONN__COUNT] = {"new", "authenticating", "ready", "closing",
                                                      "closed"};

/* The transitions allowed from each state, a bit per next state. */
static const uint8_t conn_next[CONN__COUNT] = {
    [CONN_NEW] = 1u << CONN_AUTHENTICATING | 1u << CONN_READY | 1u << CONN_CLOSING |
                 1u << CONN_CLOSED,
    [CONN_AUTHENTICATING] = 1u << CONN_READY | 1u << CONN_CLOSING | 1u << CONN_CLOSED,
    [CONN_READY] = 1u << CONN_CLOSING | 1u << CONN_CLOSED,
    [CONN_CLOSING] = 1u << CONN_CLOSED,
    [CONN_CLOSED] = 0,
};

void gw_conn_set_state(gw_conn *c, gw_conn_state s) {
    if (!(conn_next[c->state] & (1u << s))) {
        /* a bug: the state is left as it is (debug builds stop here) */
        kf_error("conn %llu: no transition %s -> %s", (unsigned long long)c->id,
                 gw_conn_state_names[c->state], gw_conn_state_names[s]);
        assert(!"connection state transition");
        return;
    }
    kf_debug("conn %llu: %s -> %s", (unsigned long long)c->id, gw_conn_state_names[c->state],
             gw_conn_state_names[s]);
    c->state = (uint8_t)s;
}

void gw_conn_ref(gw_conn *c) { c->refs++; }

static void conn_free(gw_conn *c) {
    if (c->ident.channel && c->ident.channel[0]) kf_free((char *)c->ident.channel);
    if (c->hello_req) json_decref(c->hello_req);
    kf_free(c->ident.sub);
    kf_free(c->ident.name);
    kf_free(c->ident.skills);
    kf_free(c->rx);
    kf_free(c);
}

void gw_conn_unref(gw_conn *c) {
    if (--c->refs == 0) conn_free(c);
}

static void outq_clear(gw_conn *c) {
    gw_outq_item *it = c->outq_head;
    while (it) {
        gw_outq_item *next = it->next;
        gw_buf_unref(it->buf);
        kf_free(it);
        it = next;
    }
    c->outq_head = c->outq_tail = NULL;
    c->outq_msgs = 0;
    c->outq_bytes = 0;
}

/* Shuts the socket down so lws reads the end of the stream at once and closes the connection;
 * lws's own timeouts can fire late on a foreign loop. */
static void conn_cut(gw_conn *c) {
    int fd = (int)lws_get_socket_fd(c->wsi);
    if (fd >= 0) shutdown(fd, SHUT_RDWR);
}

void gw_conn_close(gw_conn *c, gw_close_reason why, uint16_t code, const char *text) {
    if (!gw_conn_open(c)) return;
    kf_info("conn %llu: closing %u %s (%s)", (unsigned long long)c->id, code, text,
            gw_close_reason_names[why]);
    gw_conn_set_state(c, CONN_CLOSING);
    c->close_reason = why;
    c->close_code = code;
    c->close_text = text;
    c->closing_ms = gw_clock_ms();
    if (why == CLOSE_SLOW_CONSUMER) {
        /* It does not read, so a close frame would never get out: cut it. lws then sees the
         * end of the stream on its next read and closes the connection. */
        outq_clear(c);
        conn_cut(c);
        return;
    }
    lws_callback_on_writable(c->wsi);
    /* A peer that stops reading must not keep the socket: the sweep cuts it after 3 s. */
}

/* ---- output: frames queued during a loop iteration go out together at its end ----
 * Each connection's queued frames are framed here (server frames are unmasked: a 2, 4 or 10
 * byte header) into one buffer and written with ONE send(), straight from the end-of-iteration
 * event: no writable callback, so no POLLOUT toggling, for a socket that takes it all. What the
 * socket does not take, libwebsockets keeps and the writable callback continues. */

static gw_conn *flush_list;
static struct event *flush_ev;
static int flush_armed;

#define WBUF_MAX 65536
static unsigned char wbuf[LWS_PRE + WBUF_MAX];

static size_t frame_header(unsigned char *h, int binary, size_t len) {
    h[0] = (unsigned char)(0x80 | (binary ? 2 : 1));
    if (len < 126) {
        h[1] = (unsigned char)len;
        return 2;
    }
    if (len < 65536) {
        h[1] = 126;
        h[2] = (unsigned char)(len >> 8);
        h[3] = (unsigned char)len;
        return 4;
    }
    h[1] = 127;
    for (int i = 0; i < 8; i++) h[2 + i] = (unsigned char)((uint64_t)len >> (56 - 8 * i));
    return 10;
}

static void outq_pop(gw_conn *c) {
    gw_outq_item *it = c->outq_head;
    c->outq_head = it->next;
    if (!c->outq_head) c->outq_tail = NULL;
    c->outq_msgs--;
    c->outq_bytes -= it->buf->len;
    gw_buf_unref(it->buf);
    kf_free(it);
}

/* Writes queued frames while the socket takes them whole. Returns -1 when the connection must
 * close (a write failed), else 0; frames left mean the caller asks for the writable callback. */
static int outq_write(gw_conn *c, struct lws *wsi) {
    while (c->outq_head && !lws_partial_buffered(wsi)) {
        gw_buf *b = c->outq_head->buf;
        if (b->len + 10 > WBUF_MAX) {
            /* larger than the gathering buffer: alone, framed by lws */
            int w = lws_write(wsi, (unsigned char *)b->data + LWS_PRE, b->len,
                              b->binary ? LWS_WRITE_BINARY : LWS_WRITE_TEXT);
            outq_pop(c);
            if (w < 0) return -1;
            GW_M->frames_out++;
            continue;
        }
        size_t n = 0;
        unsigned char *out = wbuf + LWS_PRE;
        while (c->outq_head) {
            b = c->outq_head->buf;
            if (n + b->len + 10 > WBUF_MAX) break;
            n += frame_header(out + n, b->binary, b->len);
            memcpy(out + n, b->data + LWS_PRE, b->len);
            n += b->len;
            outq_pop(c);
            GW_M->frames_out++;
        }
        if (lws_write(wsi, out, n, LWS_WRITE_RAW) < 0) return -1;
    }
    return 0;
}

static void on_flush(evutil_socket_t fd, short what, void *arg) {
    (void)fd, (void)what, (void)arg;
    flush_armed = 0;
    gw_conn *list = flush_list;
    flush_list = NULL;
    while (list) {
        gw_conn *c = list;
        list = c->flush_next;
        c->in_flush = 0;
        if (c->state != CONN_CLOSED && c->outq_head) {
            if (c->want_ping || lws_partial_buffered(c->wsi)) {
                lws_callback_on_writable(c->wsi);
            } else if (outq_write(c, c->wsi) < 0) {
                /* lws closes it at the next service of the socket */
                outq_clear(c);
                conn_cut(c);
            } else if (c->outq_head || c->state == CONN_CLOSING) {
                lws_callback_on_writable(c->wsi);
            }
        }
        gw_conn_unref(c);
    }
}

void gw_conn_send_buf(gw_conn *c, gw_buf *b) {
    if (!gw_conn_open(c)) return;
    /* A frame larger than the byte limit (a full history page) still goes out alone. */
    if (c->outq_msgs > 0 && (c->outq_msgs + 1 > (uint64_t)gw->opt.outq_max_msgs ||
                             c->outq_bytes + b->len > (uint64_t)gw->opt.outq_max_bytes)) {
        GW_M->outq_dropped++;
        gw_conn_close(c, CLOSE_SLOW_CONSUMER, 4508, "slow consumer");
        return;
    }
    gw_outq_item *it = kf_malloc(sizeof(*it));
    it->next = NULL;
    it->buf = b;
    gw_buf_ref(b);
    if (c->outq_tail)
        c->outq_tail->next = it;
    else
        c->outq_head = it;
    c->outq_tail = it;
    c->outq_msgs++;
    c->outq_bytes += b->len;
    GW_M->bytes_out += b->len;
    if (!c->in_flush) {
        /* written at the end of this loop iteration, with everything else queued meanwhile */
        c->in_flush = 1;
        gw_conn_ref(c);
        c->flush_next = flush_list;
        flush_list = c;
        if (!flush_armed) {
            flush_armed = 1;
            event_active(flush_ev, EV_TIMEOUT, 0);
        }
    }
}

void gw_conn_send(gw_conn *c, const json_t *obj) {
    char *out;
    size_t len;
    if (kf_codec_encode(c->fmt, obj, LWS_PRE, &out, &len) < 0) {
        kf_error("conn %llu: cannot encode a frame", (unsigned long long)c->id);
        return;
    }
    gw_buf *b = gw_buf_new(out, len, c->fmt == KF_FMT_MSGPACK);
    gw_conn_send_buf(c, b);
    gw_buf_unref(b);
}

static gw_conn *conn_new(struct lws *wsi) {
    gw_conn *c = kf_calloc(1, sizeof(*c));
    c->id = ++gw->next_conn_id;
    c->wsi = wsi;
    c->refs = 1;
    c->state = CONN_NEW;
    c->created_ms = c->last_rx_ms = c->tokens_ms = c->abuse_window_ms = gw_clock_ms();
    c->tokens = (float)gw->opt.rate_burst;
    c->next = gw->conns;
    if (gw->conns) gw->conns->prev = c;
    gw->conns = c;
    gw->nconns++;
    GW_M->conns_by_role[0]++;
    return c;
}

/* lws is done with the connection: count the close, leave the indexes, drop lws's reference. */
static void conn_gone(struct pss *pss, struct lws *wsi) {
    gw_conn *c = pss->c;
    if (!c) return;
    pss->c = NULL;
    if (c->close_reason == CLOSE_NONE && wsi && lws_get_close_length(wsi) >= 2) {
        /* lws put a close status of its own in the close buffer: a protocol violation (1002:
         * unmasked or reserved bits, bad opcode or fragment, ...) */
        const unsigned char *cp = lws_get_close_payload(wsi);
        if ((cp[0] << 8 | cp[1]) == LWS_CLOSE_STATUS_PROTOCOL_ERR) c->close_reason = CLOSE_PROTOCOL;
    }
    if (c->close_reason == CLOSE_NONE) c->close_reason = CLOSE_PEER;
    GW_M->closes[c->close_reason]++;
    GW_M->conns_by_role[c->ident.role]--;
    kf_debug("conn %llu: closed (%s)", (unsigned long long)c->id,
             gw_close_reason_names[c->close_reason]);
    if (c->user) gw_router_detach(c);
    if (c->rx_paused) {
        c->rx_paused = 0;
        GW_M->rx_paused--;
    }
    c->wsi = NULL;
    gw_conn_set_state(c, CONN_CLOSED);
    outq_clear(c);
    if (c->prev)
        c->prev->next = c->next;
    else
        gw->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    gw->nconns--;
    gw_conn_unref(c);
}

/* Token bucket; returns 1 when the frame may be handled. */
static int rate_allow(gw_conn *c) {
    uint32_t now = gw_clock_ms();
    double rate = (double)gw->opt.rate_per_s, burst = (double)gw->opt.rate_burst;
    double t = c->tokens + (double)(uint32_t)(now - c->tokens_ms) * rate / 1000.0;
    c->tokens = (float)(t > burst ? burst : t);
    c->tokens_ms = now;
    if (c->tokens >= 1.0f) {
        c->tokens -= 1.0f;
        return 1;
    }
    if ((uint32_t)(now - c->abuse_window_ms) > 60000) {
        c->abuse_window_ms = now;
        c->abuse_count = 0;
    }
    if (++c->abuse_count > (uint64_t)gw->opt.rate_abuse_limit)
        gw_conn_close(c, CLOSE_RATE_ABUSE, 4429, "rate limit abuse");
    return 0;
}

static size_t backlog(void) {
    return kf_redis_pending(gw->redis) + gw_route_backlog() + gw_send_backlog();
}

/* ---- backpressure: stop reading clients while Redis work is over the bound ----
 * Commands in flight plus routes waiting to go out plus messages gathered or in flight in
 * msg.send batches: above redis_inflight_max, a connection that delivers a request stops being
 * read (TCP then pushes back on its sender) until the backlog is under half the bound. Only
 * connections that actually send are paused. */

static struct event *rx_resume_ev;

/* Connections paused, oldest first (entries whose connection was resumed or re-paused since are
 * skipped by their time), each holding a reference. */
struct paused_ent {
    gw_conn *c;
    uint32_t ms;
};
static struct paused_ent *paused;
static size_t paused_head, paused_len, paused_cap;

/* An overload episode: from the first connection shed to the backlog falling under half the
 * bound. Connections shed in it carry its number (1..255). */
static uint8_t shed_epoch = 1, shedding;

/* Sticky for the episode, so that a connection's messages are not accepted and refused by
 * turns as the backlog crosses the bound (a refused one, retried later, would be stored after
 * one sent after it). */
int gw_conn_shed(const gw_conn *c) { return shedding && c->shed_epoch == shed_epoch; }

static void paused_push(gw_conn *c) {
    if (paused_len == paused_cap) {
        size_t cap = paused_cap ? paused_cap * 2 : 256;
        struct paused_ent *nb = kf_malloc(sizeof(*nb) * cap);
        for (size_t i = 0; i < paused_len; i++) nb[i] = paused[(paused_head + i) % paused_cap];
        kf_free(paused);
        paused = nb;
        paused_cap = cap;
        paused_head = 0;
    }
    gw_conn_ref(c);
    paused[(paused_head + paused_len++) % paused_cap] = (struct paused_ent){c, c->paused_ms};
}

static void paused_pop(void) {
    gw_conn_unref(paused[paused_head].c);
    paused_head = (paused_head + 1) % paused_cap;
    paused_len--;
}

static void rx_resume_one(gw_conn *c) {
    c->rx_paused = 0;
    GW_M->rx_paused--;
    if (c->state != CONN_CLOSED) lws_rx_flow_control(c->wsi, 1);
}

static void rx_resume_arm(void) {
    struct timeval tv = {0, 1000};
    evtimer_add(rx_resume_ev, &tv);
}

static void rx_maybe_pause(gw_conn *c) {
    if (c->rx_paused || c->state == CONN_CLOSED ||
        backlog() <= (size_t)gw->opt.redis_inflight_max)
        return;
    if (c->shed_refused) {
        c->shed_refused = 0; /* it sent a msg.send that was refused: read on, to refuse more */
        return;
    }
    if (lws_rx_flow_control(c->wsi, 0) < 0) return;
    c->rx_paused = 1;
    c->paused_ms = gw_clock_ms();
    GW_M->rx_paused++;
    GW_M->rx_pauses++;
    if (gw->opt.overload_shed_ms > 0) paused_push(c);
    if (!evtimer_pending(rx_resume_ev, NULL)) rx_resume_arm();
}

/* Every millisecond while connections are paused: all of them are read again once the backlog
 * is under half the bound; before that, those held for overload_shed_ms are read again but
 * their msg.send refused (overloaded, retry_ms), so what a client sends during a long overload
 * gets an answer within about that time instead of waiting in its socket. */
static void on_rx_resume(evutil_socket_t fd, short what, void *arg) {
    (void)fd, (void)what, (void)arg;
    if (backlog() <= (size_t)gw->opt.redis_inflight_max / 2) {
        if (shedding) {
            shedding = 0;
            if (++shed_epoch == 0) shed_epoch = 1;
        }
        while (paused_len) paused_pop();
        for (gw_conn *c = gw->conns; c && GW_M->rx_paused > 0; c = c->next)
            if (c->rx_paused) rx_resume_one(c);
        return;
    }
    uint32_t now = gw_clock_ms();
    while (paused_len) {
        struct paused_ent *e = &paused[paused_head];
        gw_conn *c = e->c;
        if (c->rx_paused && c->paused_ms == e->ms) {
            if ((uint32_t)(now - e->ms) < (uint64_t)gw->opt.overload_shed_ms) break;
            if (!shedding) {
                shedding = 1;
                kf_warn("overload: connections held unread for %lld ms; their msg.send are "
                        "answered overloaded until Redis work is under %lld",
                        gw->opt.overload_shed_ms, gw->opt.redis_inflight_max / 2);
            }
            c->shed_epoch = shed_epoch;
            rx_resume_one(c);
        }
        paused_pop();
    }
    if (GW_M->rx_paused || shedding) rx_resume_arm();
}

/* A complete message arrived. Returns -1 when lws must close the connection now. */
static int conn_on_message(gw_conn *c, const char *data, size_t len, int binary) {
    GW_M->frames_in++;
    GW_M->bytes_in += len;
    if (c->state == CONN_CLOSING) return 0;
    if (!binary && !kf_utf8_valid(data, len)) {
        c->close_reason = CLOSE_INVALID_UTF8;
        lws_close_reason(c->wsi, LWS_CLOSE_STATUS_INVALID_PAYLOAD,
                         (unsigned char *)"invalid utf-8", 13);
        return -1;
    }
    if (!binary && c->fmt == KF_FMT_JSON && c->state == CONN_READY && len > 40 &&
        c->tokens >= 1.0f && memmem(data, len, "\"msg.send\"", 10)) {
        /* the hot request, in one pass (gateway/fastpath.c); anything unusual falls through */
        if (gw_fast_msg_send(c, data, len)) {
            rate_allow(c); /* a token is there (checked above): take it */
            rx_maybe_pause(c);
            return 0;
        }
    }
    json_t *msg = NULL;
    const char *err = NULL;
    if (binary == (c->fmt == KF_FMT_MSGPACK)) msg = kf_codec_decode(c->fmt, data, len, &err);
    if (!rate_allow(c)) {
        if (c->state != CONN_CLOSING)
            gw_reply_error(c, msg ? json_object_get(msg, "req") : NULL, "rate_limited",
                           "too many frames: slow down");
        if (msg) json_decref(msg);
        return 0;
    }
    if (binary != (c->fmt == KF_FMT_MSGPACK)) {
        gw_reply_error(c, NULL, "bad_request",
                       binary ? "binary frame on kefu.v1.json" : "text frame on kefu.v1.msgpack");
        return 0;
    }
    if (!msg) {
        json_t *req = kf_codec_recover_req((kf_format)c->fmt, data, len);
        gw_reply_error(c, req, "bad_request", err ? err : "cannot decode frame");
        if (req) json_decref(req);
        return 0;
    }
    gw_handle_frame(c, msg);
    rx_maybe_pause(c);
    return 0;
}

static int conn_on_receive(gw_conn *c, struct lws *wsi, const char *in, size_t len) {
    c->last_rx_ms = gw_clock_ms();
    int binary = lws_frame_is_binary(wsi);
    int final = lws_is_final_fragment(wsi);
    size_t limit = (size_t)gw->opt.max_message_bytes;
    if (c->rx_len + len > limit || lws_remaining_packet_payload(wsi) > limit - c->rx_len - len) {
        kf_free(c->rx);
        c->rx = NULL;
        c->rx_len = c->rx_cap = 0;
        c->close_reason = CLOSE_TOO_LARGE;
        lws_close_reason(wsi, LWS_CLOSE_STATUS_MESSAGE_TOO_LARGE,
                         (unsigned char *)"message too large", 17);
        return -1;
    }
    if (c->rx_len == 0 && final) return conn_on_message(c, in, len, binary); /* no copy */
    if (c->rx_len == 0) c->rx_binary = (uint8_t)binary;
    if (c->rx_len + len > c->rx_cap) {
        size_t cap = c->rx_cap ? c->rx_cap : 1024;
        while (cap < c->rx_len + len) cap *= 2;
        if (cap > limit) cap = limit;
        c->rx = kf_realloc(c->rx, cap);
        c->rx_cap = (uint32_t)cap;
    }
    memcpy(c->rx + c->rx_len, in, len);
    c->rx_len += (uint32_t)len;
    if (!final) return 0;
    char *msg = c->rx;
    size_t mlen = c->rx_len;
    c->rx = NULL;
    c->rx_len = c->rx_cap = 0;
    int rc = conn_on_message(c, msg, mlen, c->rx_binary);
    kf_free(msg);
    return rc;
}

static int conn_on_writeable(gw_conn *c, struct lws *wsi) {
    /* Frames queued before the close (an error answer, pending pushes) go out first. */
    if (c->state == CONN_CLOSING && !c->outq_head) {
        lws_close_reason(wsi, (enum lws_close_status)c->close_code, (unsigned char *)c->close_text,
                         strlen(c->close_text));
        return -1;
    }
    if (c->want_ping) {
        /* lws 4.1 swallows empty pongs without a callback, so the ping carries a payload for
         * the peer to echo. */
        unsigned char ping[LWS_PRE + 4];
        memcpy(ping + LWS_PRE, "kefu", 4);
        c->want_ping = 0;
        if (lws_write(wsi, ping + LWS_PRE, 4, LWS_WRITE_PING) < 0) return -1;
        if (c->outq_head) lws_callback_on_writable(wsi);
        return 0;
    }
    if (outq_write(c, wsi) < 0) return -1;
    if (c->outq_head || c->state == CONN_CLOSING) lws_callback_on_writable(wsi);
    return 0;
}

/* ---- HTTP endpoints ---- */

struct http_pss {
    gw_conn *unused; /* same layout start as struct pss */
    char *body;
    size_t len;
};

static int http_reply(struct lws *wsi, struct http_pss *hp, unsigned status, const char *ctype,
                      char *body_with_pre, size_t len) {
    unsigned char hdr[LWS_PRE + 512], *start = hdr + LWS_PRE, *p = start, *end = hdr + sizeof(hdr);
    hp->body = body_with_pre;
    hp->len = len;
    if (lws_add_http_common_headers(wsi, status, ctype, (lws_filepos_t)len, &p, end) ||
        lws_finalize_write_http_header(wsi, start, &p, end))
        return 1;
    lws_callback_on_writable(wsi);
    return 0;
}

static char *text_body(const char *s, size_t *len) {
    *len = strlen(s);
    char *b = kf_malloc(LWS_PRE + *len + 1);
    memcpy(b + LWS_PRE, s, *len + 1);
    return b;
}

static int http_request(struct lws *wsi, struct http_pss *hp, const char *uri) {
    size_t len = 0;
    unsigned status = 200;
    const char *ctype = "text/plain";
    char *body;
    if (strcmp(uri, "/metrics") == 0) {
        body = gw_metrics_render(LWS_PRE, &len);
        ctype = "text/plain; version=0.0.4";
    } else if (strcmp(uri, "/healthz") == 0) {
        body = text_body("ok\n", &len);
    } else if (strcmp(uri, "/readyz") == 0) {
        /* the host as a whole: ready only when every process is; the coverage is that of the
         * least covered process */
        gw_readiness r;
        gw_metrics_readiness(&r);
        int draining = gw->draining || r.draining > 0;
        int ready = GW_M->ready && !draining && gw_metrics_all_ready();
        status = ready ? 200 : 503;
        ctype = "application/json";
        char js[256];
        snprintf(js, sizeof(js),
                 "{\"status\":\"%s\",\"processes\":%d,\"processes_ready\":%d,"
                 "\"processes_draining\":%d,\"slots_covered\":%u,\"slots\":%d,"
                 "\"masters_up\":%u,\"masters\":%u}\n",
                 ready ? "ready" : draining ? "draining" : "not ready", r.procs, r.ready,
                 r.draining, r.slots_up, KF_SLOTS, r.masters_up, r.masters);
        body = text_body(js, &len);
    } else if (strcmp(uri, "/ws") == 0) {
        status = 426;
        body = text_body("WebSocket upgrade required\n", &len);
    } else {
        int w = gw_web_request(wsi, uri, &body, &len); /* web.c */
        if (w > 0) return -1;
        if (w == 0) {
            if (body) {
                hp->body = body;
                hp->len = len;
                lws_callback_on_writable(wsi);
                return 0;
            }
            return lws_http_transaction_completed(wsi) ? -1 : 0;
        }
        status = 404;
        body = text_body("not found\n", &len);
    }
    return http_reply(wsi, hp, status, ctype, body, len);
}

/* ---- the lws protocol callback ---- */

/* RFC 6455 4.2.1: what an opening handshake must carry beyond what lws checks. Returns the
 * 400 answer's body, or NULL when the request is acceptable. */
static const char *upgrade_fault(struct lws *wsi) {
    char v[8], key[64];
    if (lws_hdr_copy(wsi, v, sizeof(v), WSI_TOKEN_VERSION) <= 0 || strcmp(v, "13") != 0)
        return "unsupported Sec-WebSocket-Version (13 required)\n";
    /* The key is 16 random bytes in base64: 22 symbols and "==". */
    int n = lws_hdr_copy(wsi, key, sizeof(key), WSI_TOKEN_KEY);
    if (n != 24 || key[22] != '=' || key[23] != '=') return "bad Sec-WebSocket-Key\n";
    for (int i = 0; i < 22; i++)
        if (!isalnum((unsigned char)key[i]) && key[i] != '+' && key[i] != '/')
            return "bad Sec-WebSocket-Key\n";
    /* the last symbol carries 2 bits of the 16th byte and 4 zero bits */
    if (!strchr("AQgw", key[21])) return "bad Sec-WebSocket-Key\n";
    return NULL;
}

static int callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                    size_t len) {
    struct pss *pss = user;
    switch (reason) {
    case LWS_CALLBACK_HTTP_CONFIRM_UPGRADE: {
        char uri[64];
        unsigned status = 0;
        const char *body = NULL;
        if (lws_hdr_copy(wsi, uri, sizeof(uri), WSI_TOKEN_GET_URI) <= 0 || strcmp(uri, "/ws") != 0)
            status = 404, body = "not found\n";
        else if ((body = upgrade_fault(wsi)))
            status = 400;
        else if (gw->draining)
            status = 503, body = "draining\n";
        if (!status) return 0;
        /* lws has not parsed the HTTP version yet here and would answer HTTP/1.0, which some
         * WebSocket clients refuse; the answer is small, so write it whole. */
        char resp[LWS_PRE + 256];
        int n = snprintf(resp + LWS_PRE, sizeof(resp) - LWS_PRE,
                         "HTTP/1.1 %u %s\r\ncontent-type: text/plain\r\ncontent-length: %zu\r\n"
                         "%sconnection: close\r\n\r\n%s",
                         status,
                         status == 404   ? "Not Found"
                         : status == 400 ? "Bad Request"
                                         : "Service Unavailable",
                         strlen(body),
                         /* 503: this host is going away; a balancer tries another at once, a
                          * client connecting directly comes back in a second */
                         status == 400   ? "sec-websocket-version: 13\r\n"
                         : status == 503 ? "retry-after: 1\r\n"
                                         : "",
                         body);
        lws_write(wsi, (unsigned char *)resp + LWS_PRE, (size_t)n, LWS_WRITE_HTTP_HEADERS);
        return -1;
    }
    case LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION: {
        char uri[64];
        if (gw->draining) return 1;
        if (lws_hdr_copy(wsi, uri, sizeof(uri), WSI_TOKEN_GET_URI) <= 0 || strcmp(uri, "/ws") != 0)
            return 1;
        if (gw->opt.max_connections && gw->nconns >= (size_t)gw->opt.max_connections) {
            kf_warn("connection refused: %zu connections open (max_connections)", gw->nconns);
            return 1;
        }
        pss->c = conn_new(wsi);
        pss->c->fmt = lws_get_protocol(wsi)->id == 1 ? KF_FMT_MSGPACK : KF_FMT_JSON;
        return 0;
    }
    case LWS_CALLBACK_ESTABLISHED: {
        gw_conn *c = pss->c;
        if (!c) return -1;
        char tok[4200];
        const char *t = lws_get_urlarg_by_name(wsi, "token=", tok, sizeof(tok));
        if (t) gw_conn_authenticate(c, t, strlen(t), NULL); /* auth.c */
        return 0;
    }
    case LWS_CALLBACK_RECEIVE:
        if (!pss->c || pss->c->state == CONN_CLOSED) return -1;
        return conn_on_receive(pss->c, wsi, in, len);
    case LWS_CALLBACK_RECEIVE_PONG:
        if (pss->c) pss->c->last_rx_ms = gw_clock_ms();
        return 0;
    case LWS_CALLBACK_SERVER_WRITEABLE:
        if (!pss->c) return -1;
        return conn_on_writeable(pss->c, wsi);
    case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
        if (pss->c && pss->c->close_reason == CLOSE_NONE) pss->c->close_reason = CLOSE_PEER;
        return 0;
    case LWS_CALLBACK_CLOSED:
        conn_gone(pss, wsi);
        return 0;
    case LWS_CALLBACK_HTTP: {
        struct http_pss *hp = user;
        if (!hp) return -1;
        return http_request(wsi, hp, in ? (const char *)in : "");
    }
    case LWS_CALLBACK_HTTP_WRITEABLE: {
        struct http_pss *hp = user;
        if (!hp || !hp->body) return -1;
        int w = lws_write(wsi, (unsigned char *)hp->body + LWS_PRE, hp->len, LWS_WRITE_HTTP_FINAL);
        kf_free(hp->body);
        hp->body = NULL;
        if (w < 0) return -1;
        return lws_http_transaction_completed(wsi) ? -1 : 0;
    }
    case LWS_CALLBACK_HTTP_DROP_PROTOCOL:
    case LWS_CALLBACK_CLOSED_HTTP: {
        struct http_pss *hp = user;
        if (hp && hp->body) {
            kf_free(hp->body);
            hp->body = NULL;
        }
        return 0;
    }
    case LWS_CALLBACK_WSI_DESTROY:
        if (pss) conn_gone(pss, NULL);
        return 0;
    default:
        return 0;
    }
}

/* The upgrade picks the protocol by subprotocol; no subprotocol means the first (JSON). */
static struct lws_protocols protocols[] = {
    {"kefu.v1.json", callback, sizeof(struct http_pss), 512, 0, NULL, 0},
    {"kefu.v1.msgpack", callback, sizeof(struct http_pss), 512, 1, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0}};

/* The validity timer of lws walks a linear list per connection; we never arm it and run pings
 * and idle checks from our own sweep instead. */
static const lws_retry_bo_t no_validity = {.secs_since_valid_ping = 0, .secs_since_valid_hangup = 0};

/* ---- accepting: our own SO_REUSEPORT listener, sockets adopted into lws ---- */

static struct evconnlistener *listener;
static struct lws_vhost *vhost;
static struct event *accept_resume_ev;

static void on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen,
                      void *arg) {
    (void)l, (void)sa, (void)salen, (void)arg;
    /* While draining (the listener is then kept only when the whole host stops), connections
     * are still taken: /readyz answers 503 draining and an upgrade 503, instead of a refused
     * connection that a health check cannot tell from a dead host. */
    if (gw->opt.max_connections && gw->nconns >= (size_t)gw->opt.max_connections) {
        GW_M->accept_rejected++;
        evutil_closesocket(fd);
        return;
    }
    /* Frames are gathered per loop iteration and written with one send(), so Nagle has nothing
     * left to merge; without TCP_NODELAY a write that follows an unacknowledged one waits for
     * the peer's delayed ACK (up to 40 ms). */
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    /* A fixed send buffer (the kernel doubles it: 128 KiB) instead of autotuning up to
     * tcp_wmem's 4 MiB: what a client does not read then stays in our output queue, where
     * outq_max_bytes / outq_max_msgs bound it and find the slow consumer. */
    int sndbuf = 65536;
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));

    if (!lws_adopt_socket_vhost(vhost, fd)) {
        GW_M->accept_rejected++;
        kf_warn("libwebsockets did not adopt a connection");
        evutil_closesocket(fd);
    }
}

static void on_accept_resume(evutil_socket_t fd, short what, void *arg) {
    (void)fd, (void)what, (void)arg;
    if (listener) evconnlistener_enable(listener);
}

/* accept() failed: out of descriptors most likely. Pause accepting briefly instead of spinning. */
static void on_accept_error(struct evconnlistener *l, void *arg) {
    (void)arg;
    int err = EVUTIL_SOCKET_ERROR();
    GW_M->accept_errors++;
    kf_warn("accept: %s; pausing accepts for 100 ms", evutil_socket_error_to_string(err));
    evconnlistener_disable(l);
    struct timeval tv = {0, 100000};
    event_add(accept_resume_ev, &tv);
}

static int listen_start(const gw_options *opt) {
    struct sockaddr_in sin;
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_port = htons((uint16_t)opt->port);
    if (inet_pton(AF_INET, opt->bind, &sin.sin_addr) != 1) {
        kf_error("bind: '%s' is not an IPv4 address", opt->bind);
        return -1;
    }
    listener = evconnlistener_new_bind(
        gw->base, on_accept, NULL,
        LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_REUSEABLE_PORT | LEV_OPT_CLOSE_ON_EXEC,
        4096, (struct sockaddr *)&sin, sizeof(sin));
    if (!listener) {
        kf_error("cannot listen on %s:%lld: %s", opt->bind, opt->port, strerror(errno));
        return -1;
    }
    /* A fixed receive buffer for every connection (set on the listener: its SYN-ACK already
     * offers a window of that size, and accepted sockets inherit it). While backpressure holds
     * a connection, what its client sends waits there unread, aging; the default (tcp_rmem:
     * 128 KiB, about 800 chat frames) made a long hidden queue. Small, the rest stays with the
     * client, whom TCP's window tells to wait. */
    if (opt->rcvbuf_bytes > 0) {
        int rcvbuf = (int)opt->rcvbuf_bytes;
        setsockopt(evconnlistener_get_fd(listener), SOL_SOCKET, SO_RCVBUF, &rcvbuf,
                   sizeof(rcvbuf));
    }
    evconnlistener_set_error_cb(listener, on_accept_error);
    accept_resume_ev = evtimer_new(gw->base, on_accept_resume, NULL);
    return 0;
}

/* ---- timers, signals, draining ---- */

static void finish_drain(void) {
    kf_info("drained; exiting");
    event_base_loopbreak(gw->base);
}

/* Once a second: authentication deadlines, pings, idle timeouts, readiness, drain progress. */
static void on_sweep(evutil_socket_t fd, short what, void *arg) {
    (void)fd, (void)what, (void)arg;
    int64_t now = gw_now_ms();
    uint32_t clk = gw_clock_ms();
    for (gw_conn *c = gw->conns, *next; c; c = next) {
        next = c->next;
        if (c->state == CONN_CLOSED) continue;
        if (c->state == CONN_CLOSING) {
            if ((uint32_t)(clk - c->closing_ms) > 3000) conn_cut(c);
            continue;
        }
        if (gw_conn_authenticating(c) &&
            (uint32_t)(clk - c->created_ms) > (uint64_t)gw->opt.auth_timeout_ms) {
            gw_conn_close(c, CLOSE_AUTH_TIMEOUT, 4408, "authentication timeout");
        } else if ((uint32_t)(clk - c->last_rx_ms) > (uint64_t)gw->opt.idle_timeout_ms) {
            gw_conn_close(c, CLOSE_IDLE_TIMEOUT, 4409, "idle timeout");
        } else if ((uint32_t)(clk - c->last_rx_ms) > (uint64_t)gw->opt.ping_interval_ms &&
                   (uint32_t)(clk - c->last_ping_ms) > (uint64_t)gw->opt.ping_interval_ms) {
            c->last_ping_ms = clk;
            c->want_ping = 1;
            lws_callback_on_writable(c->wsi);
        }
    }
    gw_router_check();
    const kf_redis_stats *st = kf_redis_get_stats(gw->redis);
    GW_M->redis_commands = st->commands;
    GW_M->redis_failures = st->failures;
    GW_M->redis_latency_us_sum = st->latency_us_sum;
    memcpy(GW_M->redis_latency_bucket, st->latency_bucket, sizeof(st->latency_bucket));
    GW_M->redis_moved = st->moved;
    GW_M->redis_ask = st->ask;
    GW_M->redis_retried = st->retried;
    GW_M->redis_map_refreshes = st->map_refreshes;
    GW_M->redis_unreplicated = st->unreplicated;
    unsigned mup;
    GW_M->redis_masters = kf_redis_masters(gw->redis, &mup);
    GW_M->redis_masters_up = mup;
    GW_M->redis_slots_up = kf_redis_slots_up(gw->redis);
    /* Ready: not draining, the inbox reader has its starting point (so nothing sent to this
     * node from now on is skipped) and this process reaches the masters of more than half of
     * the slots. One master down (until its replica takes over) leaves every gateway short of
     * the same slots: it does not take the process out of a load balancer's pool, even when it
     * holds this node's inbox (read again, from where it stopped, once served), since a whole
     * pool of hosts marked down at once would drop every client (kefu_redis_slots_up and
     * kefu_inbox_lag_ms show the outage). A gateway that reaches no Redis, or less than half of
     * the cluster while the others reach it (its own network), is out; with most masters
     * down the cluster itself cannot fail over and every gateway is out. */
    GW_M->ready = !gw->draining && gw->inbox_ready && GW_M->redis_slots_up > KF_SLOTS / 2;
    if (gw->draining) {
        if ((gw->nconns == 0 && kf_redis_pending(gw->redis) == 0) || now >= gw->drain_deadline_ms)
            finish_drain();
    }
}

static void start_drain(void) {
    if (gw->draining) return;
    gw->draining = 1;
    GW_M->ready = 0;
    GW_M->draining = 1;
    if (!gw_metrics_host_stopping()) {
        /* Only this process stops (the master restarts it): close the listening socket, and
         * the kernel sends new connections to the other processes on the port. */
        if (listener) evconnlistener_free(listener);
        listener = NULL;
    }
    /* The whole host stops: keep accepting until the process exits, so that a health check
     * gets /readyz 503 draining and an upgrade 503 (a balancer tries another host) rather
     * than a refused connection. */
    gw->drain_deadline_ms = gw_now_ms() + gw->opt.drain_timeout_ms;
    kf_info("draining: closing %zu connections with 1001", gw->nconns);
    for (gw_conn *c = gw->conns; c; c = c->next)
        gw_conn_close(c, CLOSE_SHUTDOWN, LWS_CLOSE_STATUS_GOINGAWAY, "server shutting down");
    struct timeval tv = {0, 50000};
    event_del(gw->sweep_ev);
    event_add(gw->sweep_ev, &tv);
}

/* Replaces the secret list; an option that holds no secret leaves the old list in force. */
static int load_secrets(void) {
    char **old = gw->secrets;
    size_t nold = gw->nsecrets;
    gw->secrets = NULL;
    gw->nsecrets = 0;
    const char *list = gw->opt.jwt_secrets && *gw->opt.jwt_secrets ? gw->opt.jwt_secrets : "";
    /* at start only (without it the master refused to start): a reload that leaves no
     * secret keeps the running list below, never switches to the public one */
    if (!*list && gw->opt.dev_secret && !old) {
        kf_warn("no jwt_secrets configured: using the built-in development secret; "
                "never do this in production");
        list = "kefu-dev-secret-change-me";
    }
    char *copy = kf_strdup(list), *save = NULL;
    for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        gw->secrets = kf_realloc(gw->secrets, sizeof(char *) * (gw->nsecrets + 1));
        gw->secrets[gw->nsecrets++] = kf_strdup(t);
    }
    kf_free(copy);
    if (!gw->nsecrets && old) {
        kf_error("jwt_secrets holds no secret; keeping the previous %zu", nold);
        gw->secrets = old;
        gw->nsecrets = nold;
        return -1;
    }
    for (size_t i = 0; i < nold; i++) kf_free(old[i]);
    kf_free(old);
    return gw->nsecrets ? 0 : -1;
}

static void apply_log_level(void) {
    int lvl = kf_log_parse_level(gw->opt.log_level);
    if (lvl >= 0) kf_log_level = lvl;
}

static void reload(void) {
    gw_options fresh = gw->opt;
    /* Only reloadable options change; strings of the others stay shared with the old set. */
    char *old_secrets = fresh.jwt_secrets, *old_level = fresh.log_level;
    fresh.jwt_secrets = NULL;
    fresh.log_level = NULL;
    char err[512];
    static const char *const passthru[] = {"config", NULL};
    if (kf_config_load(gw_option_table, &fresh, gw->config_file, gw->argc, gw->argv, passthru, 1,
                       err, sizeof(err)) < 0) {
        kf_free(fresh.jwt_secrets);
        kf_free(fresh.log_level);
        kf_error("SIGHUP: configuration not reloaded: %s", err);
        return;
    }
    kf_free(old_secrets);
    kf_free(old_level);
    gw->opt = fresh;
    apply_log_level();
    load_secrets();
    kf_info("SIGHUP: configuration reloaded (%zu jwt secrets)", gw->nsecrets);
    gw_bot_reload();
}

static void on_signal(evutil_socket_t sig, short what, void *arg) {
    (void)what, (void)arg;
    if (sig == SIGHUP)
        reload();
    else
        start_drain();
}

static void raise_nofile(void) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0) kf_warn("cannot raise RLIMIT_NOFILE: %s", strerror(errno));
    }
}

static void lws_log_bridge(int level, const char *line) {
    size_t n = strlen(line);
    while (n && line[n - 1] == '\n') n--;
    kf_log(level == LLL_ERR ? KF_LOG_ERROR : level == LLL_WARN ? KF_LOG_WARN : KF_LOG_DEBUG,
           "lws: %.*s", (int)n, line);
}

int gw_server_run(int proc_index, const gw_options *opt, const char *config_file, int argc,
                  char **argv) {
    gw = kf_calloc(1, sizeof(*gw));
    gw->argc = argc;
    gw->argv = argv;
    gw->opt = *opt;
    gw->config_file = config_file;
    gw->proc_index = proc_index;
    snprintf(gw->node, sizeof(gw->node), "%s-%d", opt->node_name, proc_index);
    kf_log_set_ident(gw->node);
    apply_log_level();
    gw_metrics_bind(proc_index);
    if (load_secrets() < 0) {
        kf_error("jwt_secrets holds no secret");
        return 1;
    }
    raise_nofile();
    if (!gw->opt.max_connections) {
        /* Leave room for Redis connections, the listener and the odd file. */
        struct rlimit rl;
        long long lim = getrlimit(RLIMIT_NOFILE, &rl) == 0 ? (long long)rl.rlim_cur : 1024;
        gw->opt.max_connections = lim > 128 ? lim - 64 : lim / 2;
    }
    signal(SIGPIPE, SIG_IGN);

    gw->base = event_base_new();
    if (!gw->base) {
        kf_error("event_base_new failed");
        return 1;
    }
    char err[256];
    gw->redis = kf_redis_new(gw->base, opt->redis, (int)opt->redis_timeout_ms, err, sizeof(err));
    if (!gw->redis) {
        kf_error("%s", err);
        return 1;
    }
    kf_redis_set_durable(gw->redis, (int)opt->ack_replicas, (int)opt->ack_timeout_ms);
    kf_redis_use_module(gw->redis, (int)opt->redis_module);
    /* XREAD BLOCK 1000: a reply may take a second longer than any other */
    gw->reader = kf_redis_new(gw->base, opt->redis, (int)opt->redis_timeout_ms + 1000, err,
                              sizeof(err));

    lws_set_log_level(LLL_ERR | LLL_WARN, lws_log_bridge);
    for (int i = 0; i < 2; i++) {
        protocols[i].rx_buffer_size = (size_t)opt->rx_buffer_bytes;
        protocols[i].tx_packet_size = (size_t)opt->max_message_bytes + 64;
    }
    struct lws_context_creation_info info;
    memset(&info, 0, sizeof(info));
    void *loops[1] = {gw->base};
    /* lws 4.1 sets SO_REUSEPORT only with several service threads, so we listen ourselves and
     * hand accepted sockets to a listen-less vhost. */
    info.port = CONTEXT_PORT_NO_LISTEN_SERVER;
    info.protocols = protocols;
    info.options = LWS_SERVER_OPTION_LIBEVENT | LWS_SERVER_OPTION_DISABLE_IPV6;
    info.foreign_loops = loops;
    info.retry_and_idle_policy = &no_validity;
    info.timeout_secs = 10;
    info.gid = (gid_t)-1;
    info.uid = (uid_t)-1;
    info.count_threads = 1;
    info.pt_serv_buf_size = 4096;
    gw->lws = lws_create_context(&info);
    vhost = gw->lws ? lws_get_vhost_by_name(gw->lws, "default") : NULL;
    if (!vhost) {
        kf_error("cannot create the libwebsockets context");
        return 1;
    }
    if (listen_start(opt) < 0) return 1;

    rx_resume_ev = evtimer_new(gw->base, on_rx_resume, NULL);
    flush_ev = event_new(gw->base, -1, 0, on_flush, NULL);
    gw_router_start();
    gw_staff_start();
    gw_bot_start();
    gw->sweep_ev = event_new(gw->base, -1, EV_PERSIST, on_sweep, NULL);
    struct timeval sec = {1, 0};
    event_add(gw->sweep_ev, &sec);
    gw->sig_term_ev = evsignal_new(gw->base, SIGTERM, on_signal, NULL);
    gw->sig_int_ev = evsignal_new(gw->base, SIGINT, on_signal, NULL);
    gw->sig_hup_ev = evsignal_new(gw->base, SIGHUP, on_signal, NULL);
    event_add(gw->sig_term_ev, NULL);
    event_add(gw->sig_int_ev, NULL);
    event_add(gw->sig_hup_ev, NULL);
    kf_info("node %s listening on %s:%lld (redis %s)", gw->node, opt->bind, opt->port, opt->redis);

    event_base_dispatch(gw->base);

    if (listener) evconnlistener_free(listener);
    listener = NULL;
    if (accept_resume_ev) event_free(accept_resume_ev);
    lws_context_destroy(gw->lws);
    while (gw->conns) {
        struct pss p = {gw->conns};
        conn_gone(&p, NULL);
    }
    gw_bot_stop();
    gw_staff_stop();
    gw_msg_send_stop();
    gw_redis_kept_stop();
    gw_router_stop();
    event_free(gw->sweep_ev);
    event_free(rx_resume_ev);
    rx_resume_ev = NULL;
    while (paused_len) paused_pop();
    kf_free(paused);
    paused = NULL;
    paused_cap = 0;
    on_flush(-1, 0, NULL); /* drop the references of connections still listed */
    event_free(flush_ev);
    flush_ev = NULL;
    event_free(gw->sig_term_ev);
    event_free(gw->sig_int_ev);
    event_free(gw->sig_hup_ev);
    kf_redis_free(gw->redis);
    event_base_free(gw->base);
    for (size_t i = 0; i < gw->nsecrets; i++) kf_free(gw->secrets[i]);
    kf_free(gw->secrets);
    kf_config_free(gw_option_table, &gw->opt);
    kf_free(gw);
    gw = NULL;
    return 0;
}
