/* WebSocket client connections on a libevent loop (see wsclient.h). */
#include "wsclient.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <netinet/tcp.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "kefu/alloc.h"
#include "kefu/utf8.h"

#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#define SCRATCH_BYTES (256 * 1024)
#define HTTP_RESPONSE_MAX 8192
#define READS_PER_WAKEUP 8   /* bound the work one readable socket may take per wake-up */
#define PROTO_MAX 31

enum { LIST_NONE = 0, LIST_DEADLINE, LIST_NOTIFY };

struct ws_conn {
    ws_ctx *x;
    void *ud;
    struct event *ev;
    int fd;
    uint8_t state;        /* ws_state */
    uint8_t ev_flags;     /* EV_READ / EV_WRITE currently registered */
    uint8_t corked;
    uint8_t busy;         /* inside an event handler: freeing is deferred */
    uint8_t dead;         /* ws_conn_free was called */
    uint8_t list;         /* LIST_* membership of prev/next */
    uint8_t frag_op;      /* opcode of a message being reassembled, 0 when none */
    uint8_t close_sent;
    int64_t deadline_ms;
    ws_conn *prev, *next;
    /* input: bytes of an incomplete HTTP response or frame */
    uint8_t *in;
    uint32_t in_len, in_cap;
    /* reassembly of a fragmented message */
    uint8_t *frag;
    uint32_t frag_len, frag_cap;
    /* output not yet taken by the socket */
    uint8_t *out;
    uint32_t out_off, out_len, out_cap;
    /* the end: filled when the connection terminates, handed to on_close */
    ws_close_info *ci;
    char accept[29];      /* expected Sec-WebSocket-Accept during the upgrade */
    char proto[PROTO_MAX + 1];
};

struct ws_ctx {
    struct event_base *base;
    ws_handlers h;
    ws_options o;
    struct event *sweep_ev, *notify_ev;
    ws_conn *deadlines;   /* connections with a deadline (connecting, upgrading, closing) */
    ws_conn *notify_head, *notify_tail; /* terminated connections awaiting on_close */
    size_t count;
    ws_stats st;
    uint8_t *scratch;     /* shared read buffer */
    uint8_t *wbuf;        /* frame assembly buffer */
    size_t wbuf_cap;
    uint64_t rng;
};

/* ---- small helpers ---- */

static int64_t mono_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* xorshift64*: masking keys and handshake nonces. RFC 6455 wants unpredictable masks to protect
 * proxies from cache poisoning; a load generator on loopback only needs them to vary. */
static uint64_t rng_next(ws_ctx *x) {
    x->rng ^= x->rng >> 12;
    x->rng ^= x->rng << 25;
    x->rng ^= x->rng >> 27;
    return x->rng * 2685821657736338717ull;
}

static void b64(const uint8_t *in, size_t n, char *out) {
    EVP_EncodeBlock((unsigned char *)out, in, (int)n);
}

void ws_accept_for_key(const char *key, char out[29]) {
    char buf[128];
    int n = snprintf(buf, sizeof(buf), "%s%s", key, WS_GUID);
    uint8_t md[SHA_DIGEST_LENGTH];
    SHA1((const unsigned char *)buf, (size_t)n, md);
    b64(md, sizeof(md), out);
}

size_t ws_frame_header(uint8_t *hdr, int fin, int opcode, uint64_t len, const uint8_t mask[4]) {
    size_t n = 0;
    hdr[n++] = (uint8_t)((fin ? 0x80 : 0) | (opcode & 0x0f));
    if (len < 126) {
        hdr[n++] = (uint8_t)(0x80 | len);
    } else if (len <= 0xffff) {
        hdr[n++] = 0x80 | 126;
        hdr[n++] = (uint8_t)(len >> 8);
        hdr[n++] = (uint8_t)len;
    } else {
        hdr[n++] = 0x80 | 127;
        for (int i = 7; i >= 0; i--) hdr[n++] = (uint8_t)(len >> (8 * i));
    }
    memcpy(hdr + n, mask, 4);
    return n + 4;
}

void ws_mask_bytes(uint8_t *buf, size_t len, const uint8_t mask[4], size_t phase) {
    uint8_t m[8];
    for (int i = 0; i < 8; i++) m[i] = mask[(phase + (size_t)i) & 3];
    uint64_t m64;
    memcpy(&m64, m, 8);
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        uint64_t v;
        memcpy(&v, buf + i, 8);
        v ^= m64;
        memcpy(buf + i, &v, 8);
    }
    for (; i < len; i++) buf[i] ^= m[i & 7];
}

/* ---- lists ---- */

static void list_unlink(ws_conn *c) {
    ws_ctx *x = c->x;
    if (c->list == LIST_DEADLINE) {
        if (c->prev) c->prev->next = c->next;
        else x->deadlines = c->next;
        if (c->next) c->next->prev = c->prev;
    } else if (c->list == LIST_NOTIFY) {
        if (c->prev) c->prev->next = c->next;
        else x->notify_head = c->next;
        if (c->next) c->next->prev = c->prev;
        else x->notify_tail = c->prev;
    }
    c->prev = c->next = NULL;
    c->list = LIST_NONE;
}

static void deadline_set(ws_conn *c, int64_t at) {
    c->deadline_ms = at;
    if (c->list == LIST_DEADLINE) return;
    list_unlink(c);
    c->list = LIST_DEADLINE;
    c->next = c->x->deadlines;
    if (c->next) c->next->prev = c;
    c->x->deadlines = c;
}

static void notify_push(ws_conn *c) {
    ws_ctx *x = c->x;
    list_unlink(c);
    c->list = LIST_NOTIFY;
    c->prev = x->notify_tail;
    if (x->notify_tail) x->notify_tail->next = c;
    else x->notify_head = c;
    x->notify_tail = c;
    event_active(x->notify_ev, EV_TIMEOUT, 0);
}

/* ---- teardown ---- */

static void conn_release_memory(ws_conn *c) {
    kf_free(c->in);
    kf_free(c->frag);
    kf_free(c->out);
    c->in = c->frag = c->out = NULL;
    c->in_len = c->in_cap = c->frag_len = c->frag_cap = 0;
    c->out_off = c->out_len = c->out_cap = 0;
}

static void conn_close_socket(ws_conn *c, int rst) {
    if (c->ev) {
        event_free(c->ev);
        c->ev = NULL;
    }
    if (c->fd >= 0) {
        if (rst) {
            struct linger lg = {1, 0};
            setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
        }
        close(c->fd);
        c->fd = -1;
    }
}

/* Ends the connection now and queues on_close. text (may be NULL) is the server's reason. */
static void conn_terminate(ws_conn *c, int clean, int code, const char *reason, const char *text,
                           size_t text_len, int rst) {
    if (c->state == WS_CLOSED) return;
    /* text may point into the input buffer: copy it before the buffers go */
    c->ci = kf_calloc(1, sizeof(*c->ci));
    c->ci->clean = clean;
    c->ci->code = code;
    c->ci->reason = reason;
    if (text) {
        if (text_len >= sizeof(c->ci->text)) text_len = sizeof(c->ci->text) - 1;
        memcpy(c->ci->text, text, text_len);
    }
    conn_close_socket(c, rst);
    conn_release_memory(c);
    c->state = WS_CLOSED;
    notify_push(c);
}

static void conn_destroy(ws_conn *c) {
    list_unlink(c);
    conn_close_socket(c, 0);
    conn_release_memory(c);
    kf_free(c->ci);
    c->x->count--;
    kf_free(c);
}

void ws_conn_free(ws_conn *c) {
    if (!c) return;
    c->dead = 1;
    if (c->busy) return;
    conn_destroy(c);
}

/* ---- events ---- */

static void on_event(evutil_socket_t fd, short what, void *arg);

static void events_set(ws_conn *c, uint8_t flags) {
    if (!c->ev || c->ev_flags == flags) return;
    event_del(c->ev);
    event_assign(c->ev, c->x->base, c->fd, (short)(flags | EV_PERSIST), on_event, c);
    event_add(c->ev, NULL);
    c->ev_flags = flags;
}

/* ---- output ---- */

static void out_append(ws_conn *c, const uint8_t *p, size_t n) {
    if (c->out_off && c->out_off == c->out_len) c->out_off = c->out_len = 0;
    if (c->out_len + n > c->out_cap) {
        if (c->out_off) {
            memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
            c->out_len -= c->out_off;
            c->out_off = 0;
        }
        if (c->out_len + n > c->out_cap) {
            size_t cap = c->out_cap ? c->out_cap : 256;
            while (cap < c->out_len + n) cap *= 2;
            c->out = kf_realloc(c->out, cap);
            c->out_cap = (uint32_t)cap;
        }
    }
    memcpy(c->out + c->out_len, p, n);
    c->out_len += (uint32_t)n;
}

/* Writes what the socket takes. Returns 0, or -1 after terminating the connection. */
static int out_flush(ws_conn *c) {
    while (c->out_off < c->out_len) {
        ssize_t w = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) break;
            conn_terminate(c, 0, 0, "write error", strerror(errno), strlen(strerror(errno)), 0);
            return -1;
        }
        c->x->st.bytes_out += (uint64_t)w;
        c->out_off += (uint32_t)w;
    }
    if (c->out_off == c->out_len) {
        /* Drained: an idle connection keeps no buffer. */
        kf_free(c->out);
        c->out = NULL;
        c->out_off = c->out_len = c->out_cap = 0;
        if (c->state != WS_CONNECTING) events_set(c, EV_READ);
    } else {
        if (!(c->ev_flags & EV_WRITE)) c->x->st.write_blocked++;
        events_set(c, EV_READ | EV_WRITE);
    }
    return 0;
}

/* Writes bytes now when nothing is queued before them, else queues them. */
static int out_write(ws_conn *c, const uint8_t *p, size_t n) {
    if (c->out_len == 0 && !c->corked && c->state != WS_CONNECTING) {
        while (n > 0) {
            ssize_t w = send(c->fd, p, n, MSG_NOSIGNAL);
            if (w < 0) {
                if (errno == EINTR) continue;
                if (errno == EAGAIN || errno == EWOULDBLOCK) break;
                conn_terminate(c, 0, 0, "write error", strerror(errno), strlen(strerror(errno)), 0);
                return -1;
            }
            c->x->st.bytes_out += (uint64_t)w;
            p += w;
            n -= (size_t)w;
        }
        if (n == 0) return 0;
        out_append(c, p, n);
        c->x->st.write_blocked++;
        events_set(c, EV_READ | EV_WRITE);
        return 0;
    }
    out_append(c, p, n);
    return 0;
}

static int frame_write(ws_conn *c, int fin, int opcode, const void *data, size_t len) {
    ws_ctx *x = c->x;
    size_t need = len + 14;
    if (need > x->wbuf_cap) {
        size_t cap = x->wbuf_cap;
        while (cap < need) cap *= 2;
        x->wbuf = kf_realloc(x->wbuf, cap);
        x->wbuf_cap = cap;
    }
    uint64_t r = rng_next(x);
    uint8_t mask[4];
    memcpy(mask, &r, 4);
    size_t h = ws_frame_header(x->wbuf, fin, opcode, len, mask);
    if (len) {
        memcpy(x->wbuf + h, data, len);
        ws_mask_bytes(x->wbuf + h, len, mask, 0);
    }
    x->st.frames_out++;
    return out_write(c, x->wbuf, h + len);
}

int ws_send(ws_conn *c, int opcode, const void *data, size_t len) {
    if (c->dead || c->state != WS_OPEN) return -1;
    if (opcode >= WS_OP_CLOSE && len > 125) return -1;
    return frame_write(c, 1, opcode, data, len);
}

int ws_send_fragmented(ws_conn *c, int opcode, const void *data, size_t len, size_t frag) {
    if (c->dead || c->state != WS_OPEN || opcode >= WS_OP_CLOSE || frag == 0) return -1;
    const uint8_t *p = data;
    size_t off = 0;
    int first = 1;
    ws_cork(c);
    do {
        size_t n = len - off > frag ? frag : len - off;
        int fin = off + n == len;
        if (frame_write(c, fin, first ? opcode : WS_OP_CONT, p + off, n) < 0) return -1;
        first = 0;
        off += n;
    } while (off < len);
    ws_uncork(c);
    return 0;
}

void ws_cork(ws_conn *c) { c->corked = 1; }

void ws_uncork(ws_conn *c) {
    if (!c->corked) return;
    c->corked = 0;
    if (c->state == WS_OPEN || c->state == WS_CLOSING)
        if (c->out_len > c->out_off && !(c->ev_flags & EV_WRITE)) out_flush(c);
}

size_t ws_pending_bytes(const ws_conn *c) { return c->out_len - c->out_off; }

static void send_close_frame(ws_conn *c, uint16_t code, const char *reason, size_t rlen) {
    uint8_t body[125];
    size_t n = 0;
    if (code) {
        body[0] = (uint8_t)(code >> 8);
        body[1] = (uint8_t)code;
        if (rlen > sizeof(body) - 2) rlen = sizeof(body) - 2;
        if (rlen) memcpy(body + 2, reason, rlen);
        n = 2 + rlen;
    }
    c->corked = 0;
    c->close_sent = 1;
    frame_write(c, 1, WS_OP_CLOSE, body, n);
}

void ws_close(ws_conn *c, uint16_t code, const char *reason) {
    if (c->dead || c->state == WS_CLOSED || c->state == WS_CLOSING) return;
    if (c->state != WS_OPEN) {
        conn_terminate(c, 0, 0, "closed before open", NULL, 0, 0);
        return;
    }
    send_close_frame(c, code, reason, reason ? strlen(reason) : 0);
    if (c->state == WS_CLOSED) return; /* the write failed */
    c->state = WS_CLOSING;
    deadline_set(c, mono_ms() + c->x->o.close_timeout_ms);
}

void ws_abort(ws_conn *c, int rst) {
    if (c->dead || c->state == WS_CLOSED) return;
    conn_terminate(c, 0, 0, "aborted", NULL, 0, rst);
}

/* ---- input: the upgrade response ---- */

static int header_has_token(const char *v, size_t n, const char *tok) {
    size_t tl = strlen(tok);
    for (size_t i = 0; i + tl <= n; i++)
        if (strncasecmp(v + i, tok, tl) == 0) return 1;
    return 0;
}

/* Checks the 101 response in p[0..n) (ending with the blank line). Returns NULL or a reason. */
static const char *upgrade_check(ws_conn *c, const char *p, size_t n, char *detail, size_t dcap) {
    const char *end = p + n, *eol = memchr(p, '\n', n);
    if (!eol || n < 12 || memcmp(p, "HTTP/1.1 ", 9) != 0) return "upgrade: not an HTTP/1.1 response";
    if (memcmp(p + 9, "101", 3) != 0) {
        size_t l = (size_t)(eol - p);
        while (l && (p[l - 1] == '\r')) l--;
        snprintf(detail, dcap, "%.*s", (int)(l > 100 ? 100 : l), p);
        return "upgrade refused";
    }
    int up = 0, conn = 0, acc = 0, proto = 0;
    for (const char *line = eol + 1; line < end;) {
        const char *le = memchr(line, '\n', (size_t)(end - line));
        if (!le) break;
        size_t ll = (size_t)(le - line);
        if (ll && line[ll - 1] == '\r') ll--;
        if (ll == 0) break;
        const char *colon = memchr(line, ':', ll);
        if (colon) {
            size_t nl = (size_t)(colon - line);
            const char *v = colon + 1;
            size_t vl = ll - nl - 1;
            while (vl && (*v == ' ' || *v == '\t')) v++, vl--;
            while (vl && (v[vl - 1] == ' ' || v[vl - 1] == '\t')) vl--;
            if (nl == 7 && strncasecmp(line, "upgrade", 7) == 0)
                up = header_has_token(v, vl, "websocket");
            else if (nl == 10 && strncasecmp(line, "connection", 10) == 0)
                conn = header_has_token(v, vl, "upgrade");
            else if (nl == 20 && strncasecmp(line, "sec-websocket-accept", 20) == 0)
                acc = vl == 28 && memcmp(v, c->accept, 28) == 0;
            else if (nl == 22 && strncasecmp(line, "sec-websocket-protocol", 22) == 0)
                proto = c->proto[0] && vl == strlen(c->proto) && memcmp(v, c->proto, vl) == 0 ? 1 : -1;
            else if (nl == 24 && strncasecmp(line, "sec-websocket-extensions", 24) == 0)
                return "upgrade: unrequested extension";
        }
        line = le + 1;
    }
    if (!up || !conn) return "upgrade: missing Upgrade/Connection headers";
    if (!acc) return "upgrade: bad Sec-WebSocket-Accept";
    if (proto < 0) return "upgrade: unrequested subprotocol";
    if (c->proto[0] && proto != 1) return "upgrade: subprotocol not selected";
    return NULL;
}

/* ---- input: frames ---- */

static void protocol_error(ws_conn *c, uint16_t code, const char *why) {
    c->x->st.protocol_errors++;
    if (c->state == WS_OPEN && !c->close_sent) send_close_frame(c, code, why, strlen(why));
    conn_terminate(c, 0, code, "protocol error", why, strlen(why), 0);
}

static int still_here(const ws_conn *c) { return !c->dead && c->state != WS_CLOSED; }

static void deliver(ws_conn *c, int op, const uint8_t *p, size_t n) {
    ws_ctx *x = c->x;
    if (c->state != WS_OPEN) return; /* closing: what follows our close frame is dropped */
    if (op == WS_OP_TEXT && x->o.validate_utf8 > 0 && !kf_utf8_valid((const char *)p, n)) {
        protocol_error(c, 1007, "invalid utf-8");
        return;
    }
    if (x->h.on_message) x->h.on_message(c, c->ud, op == WS_OP_BINARY, (const char *)p, n);
}

static void on_close_frame(ws_conn *c, const uint8_t *p, size_t n) {
    int code = 0;
    if (n == 1) {
        protocol_error(c, 1002, "bad close frame");
        return;
    }
    if (n >= 2) code = (p[0] << 8) | p[1];
    if (!c->close_sent) send_close_frame(c, (uint16_t)(code ? code : 1000), NULL, 0);
    /* The server closes the TCP connection after the handshake; we need not wait for it. */
    conn_terminate(c, 1, code, "closed by server", n > 2 ? (const char *)p + 2 : NULL,
                   n > 2 ? n - 2 : 0, 0);
}

/* Parses frames from p[0..n). Returns the bytes consumed (the rest is an incomplete frame), or
 * -1 when the connection ended. */
static ssize_t frames_parse(ws_conn *c, const uint8_t *p, size_t n) {
    ws_ctx *x = c->x;
    size_t off = 0;
    while (n - off >= 2) {
        const uint8_t *f = p + off;
        size_t avail = n - off;
        int fin = f[0] & 0x80, rsv = f[0] & 0x70, op = f[0] & 0x0f, masked = f[1] & 0x80;
        uint64_t len = f[1] & 0x7f;
        size_t h = 2;
        if (len == 126) {
            if (avail < 4) break;
            len = ((uint64_t)f[2] << 8) | f[3];
            h = 4;
        } else if (len == 127) {
            if (avail < 10) break;
            len = 0;
            for (int i = 0; i < 8; i++) len = (len << 8) | f[2 + i];
            h = 10;
            if (len >> 63) {
                protocol_error(c, 1002, "bad frame length");
                return -1;
            }
        }
        if (rsv) {
            protocol_error(c, 1002, "reserved bits set");
            return -1;
        }
        if (masked) {
            protocol_error(c, 1002, "masked server frame");
            return -1;
        }
        if (op >= WS_OP_CLOSE) {
            if (!fin || len > 125) {
                protocol_error(c, 1002, "bad control frame");
                return -1;
            }
        } else if (len + c->frag_len > x->o.max_message) {
            protocol_error(c, 1009, "message too large");
            return -1;
        }
        if (avail - h < len) break;
        const uint8_t *pl = f + h;
        off += h + (size_t)len;
        x->st.frames_in++;
        switch (op) {
        case WS_OP_TEXT:
        case WS_OP_BINARY:
            if (c->frag_op) {
                protocol_error(c, 1002, "new message inside a fragmented one");
                return -1;
            }
            if (fin) {
                deliver(c, op, pl, (size_t)len);
            } else {
                c->frag_op = (uint8_t)op;
                c->frag_len = 0;
                goto append;
            }
            break;
        case WS_OP_CONT:
            if (!c->frag_op) {
                protocol_error(c, 1002, "continuation without a message");
                return -1;
            }
        append:
            if (c->frag_len + len > c->frag_cap) {
                size_t cap = c->frag_cap ? c->frag_cap : 1024;
                while (cap < c->frag_len + len) cap *= 2;
                c->frag = kf_realloc(c->frag, cap);
                c->frag_cap = (uint32_t)cap;
            }
            if (len) memcpy(c->frag + c->frag_len, pl, (size_t)len);
            c->frag_len += (uint32_t)len;
            if (fin && op == WS_OP_CONT) {
                int fop = c->frag_op;
                uint8_t *m = c->frag;
                size_t ml = c->frag_len;
                c->frag = NULL;
                c->frag_len = c->frag_cap = 0;
                c->frag_op = 0;
                deliver(c, fop, m, ml);
                kf_free(m);
            }
            break;
        case WS_OP_PING:
            if (c->state == WS_OPEN) frame_write(c, 1, WS_OP_PONG, pl, (size_t)len);
            break;
        case WS_OP_PONG:
            if (c->state == WS_OPEN && x->h.on_pong) x->h.on_pong(c, c->ud, (const char *)pl, (size_t)len);
            break;
        case WS_OP_CLOSE:
            on_close_frame(c, pl, (size_t)len);
            return -1;
        default:
            protocol_error(c, 1002, "unknown opcode");
            return -1;
        }
        if (!still_here(c)) return -1;
    }
    return (ssize_t)off;
}

/* Handles received bytes p[0..n) in UPGRADING or OPEN/CLOSING. Returns consumed or -1. */
static ssize_t input_process(ws_conn *c, const uint8_t *p, size_t n) {
    size_t off = 0;
    if (c->state == WS_UPGRADING) {
        const uint8_t *e = NULL;
        for (size_t i = 3; i < n; i++)
            if (p[i] == '\n' && p[i - 1] == '\r' && p[i - 2] == '\n' && p[i - 3] == '\r') {
                e = p + i + 1;
                break;
            }
        if (!e) {
            if (n > HTTP_RESPONSE_MAX) {
                conn_terminate(c, 0, 0, "upgrade: response too large", NULL, 0, 0);
                return -1;
            }
            return 0;
        }
        char detail[128] = "";
        const char *err = upgrade_check(c, (const char *)p, (size_t)(e - p), detail, sizeof(detail));
        if (err) {
            conn_terminate(c, 0, 0, err, detail, strlen(detail), 0);
            return -1;
        }
        off = (size_t)(e - p);
        c->state = WS_OPEN;
        list_unlink(c);
        if (c->x->h.on_open) c->x->h.on_open(c, c->ud);
        if (!still_here(c)) return -1;
    }
    ssize_t r = frames_parse(c, p + off, n - off);
    return r < 0 ? -1 : (ssize_t)off + r;
}

static void in_keep(ws_conn *c, const uint8_t *p, size_t n) {
    if (n == 0) {
        kf_free(c->in);
        c->in = NULL;
        c->in_len = c->in_cap = 0;
        return;
    }
    if (n > c->in_cap) {
        size_t cap = c->in_cap ? c->in_cap : 512;
        while (cap < n) cap *= 2;
        uint8_t *b = kf_malloc(cap);
        memcpy(b, p, n);
        kf_free(c->in);
        c->in = b;
        c->in_cap = (uint32_t)cap;
    } else if (c->in != p) {
        memmove(c->in, p, n);
    }
    c->in_len = (uint32_t)n;
}

static void on_readable(ws_conn *c) {
    ws_ctx *x = c->x;
    for (int round = 0; round < READS_PER_WAKEUP && still_here(c); round++) {
        uint8_t *buf;
        size_t have, room;
        if (c->in_len) {
            /* An incomplete frame is pending: read behind it in its own buffer. */
            size_t want = c->in_len + (c->in_len > 16384 ? c->in_len : 16384);
            if (want > c->in_cap) {
                c->in = kf_realloc(c->in, want);
                c->in_cap = (uint32_t)want;
            }
            buf = c->in;
            have = c->in_len;
            room = c->in_cap - c->in_len;
        } else {
            buf = x->scratch;
            have = 0;
            room = SCRATCH_BYTES;
        }
        ssize_t r = recv(c->fd, buf + have, room, 0);
        if (r < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) return;
            conn_terminate(c, 0, 0, "read error", strerror(errno), strlen(strerror(errno)), 0);
            return;
        }
        if (r == 0) {
            conn_terminate(c, c->state == WS_CLOSING, 0, "eof", NULL, 0, 0);
            return;
        }
        x->st.bytes_in += (uint64_t)r;
        size_t total = have + (size_t)r;
        ssize_t used = input_process(c, buf, total);
        if (used < 0) return;
        in_keep(c, buf + used, total - (size_t)used);
        if ((size_t)r < room) return;
    }
}

static void on_connected(ws_conn *c) {
    int err = 0;
    socklen_t el = sizeof(err);
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el) < 0) err = errno;
    if (err) {
        conn_terminate(c, 0, 0, "connect failed", strerror(err), strlen(strerror(err)), 0);
        return;
    }
    c->state = WS_UPGRADING;
    events_set(c, EV_READ);
    out_flush(c); /* the upgrade request */
}

static void on_event(evutil_socket_t fd, short what, void *arg) {
    (void)fd;
    ws_conn *c = arg;
    c->busy = 1;
    if (c->state == WS_CONNECTING) {
        on_connected(c);
    } else {
        if ((what & EV_WRITE) && still_here(c)) out_flush(c);
        if ((what & EV_READ) && still_here(c)) on_readable(c);
    }
    c->busy = 0;
    if (c->dead) conn_destroy(c);
}

/* ---- timers and notifications ---- */

static void on_sweep(evutil_socket_t fd, short what, void *arg) {
    (void)fd, (void)what;
    ws_ctx *x = arg;
    int64_t now = mono_ms();
    for (ws_conn *c = x->deadlines, *next; c; c = next) {
        next = c->next;
        if (c->deadline_ms > now) continue;
        const char *why = c->state == WS_CONNECTING ? "connect timeout"
                          : c->state == WS_UPGRADING ? "upgrade timeout"
                                                     : "close timeout";
        conn_terminate(c, 0, 0, why, NULL, 0, 0);
    }
}

static void on_notify(evutil_socket_t fd, short what, void *arg) {
    (void)fd, (void)what;
    ws_ctx *x = arg;
    /* Bounded: connections queued by the callbacks below wait for the next round. */
    size_t n = 0;
    for (ws_conn *c = x->notify_head; c; c = c->next) n++;
    while (n-- > 0 && x->notify_head) {
        ws_conn *c = x->notify_head;
        list_unlink(c);
        ws_close_info ci = *c->ci;
        c->busy = 1;
        if (x->h.on_close) x->h.on_close(c, c->ud, &ci);
        c->busy = 0;
        if (c->dead) conn_destroy(c);
    }
    if (x->notify_head) event_active(x->notify_ev, EV_TIMEOUT, 0);
}

ws_ctx *ws_ctx_new(struct event_base *base, const ws_handlers *h, const ws_options *opts) {
    ws_ctx *x = kf_calloc(1, sizeof(*x));
    x->base = base;
    x->h = *h;
    if (opts) x->o = *opts;
    if (!x->o.max_message) x->o.max_message = 1u << 20;
    if (!x->o.connect_timeout_ms) x->o.connect_timeout_ms = 10000;
    if (!x->o.close_timeout_ms) x->o.close_timeout_ms = 3000;
    if (!x->o.validate_utf8) x->o.validate_utf8 = 1;
    x->scratch = kf_malloc(SCRATCH_BYTES);
    x->wbuf_cap = 65536;
    x->wbuf = kf_malloc(x->wbuf_cap);
    if (getrandom(&x->rng, sizeof(x->rng), 0) != (ssize_t)sizeof(x->rng) || !x->rng)
        x->rng = 0x9e3779b97f4a7c15ull ^ (uint64_t)getpid();
    x->sweep_ev = event_new(base, -1, EV_PERSIST, on_sweep, x);
    x->notify_ev = event_new(base, -1, 0, on_notify, x);
    struct timeval tv = {0, 100000};
    if (!x->sweep_ev || !x->notify_ev || event_add(x->sweep_ev, &tv) < 0) {
        if (x->sweep_ev) event_free(x->sweep_ev);
        if (x->notify_ev) event_free(x->notify_ev);
        kf_free(x->scratch);
        kf_free(x->wbuf);
        kf_free(x);
        return NULL;
    }
    return x;
}

void ws_ctx_free(ws_ctx *x) {
    if (!x) return;
    event_free(x->sweep_ev);
    event_free(x->notify_ev);
    kf_free(x->scratch);
    kf_free(x->wbuf);
    kf_free(x);
}

const ws_stats *ws_ctx_stats(const ws_ctx *x) { return &x->st; }
size_t ws_ctx_count(const ws_ctx *x) { return x->count; }

/* ---- connecting ---- */

int ws_parse_url(const char *url, struct sockaddr_in *dst, char *target, size_t target_cap,
                 const char **err) {
    if (strncmp(url, "ws://", 5) != 0) {
        *err = "URL must start with ws://";
        return -1;
    }
    const char *h = url + 5, *slash = strchr(h, '/');
    const char *hend = slash ? slash : h + strlen(h);
    const char *colon = memchr(h, ':', (size_t)(hend - h));
    char host[64];
    size_t hl = (size_t)((colon ? colon : hend) - h);
    if (hl == 0 || hl >= sizeof(host)) {
        *err = "bad host in URL";
        return -1;
    }
    memcpy(host, h, hl);
    host[hl] = '\0';
    long port = 80;
    if (colon) {
        char *e;
        port = strtol(colon + 1, &e, 10);
        if (e != hend || port < 1 || port > 65535) {
            *err = "bad port in URL";
            return -1;
        }
    }
    memset(dst, 0, sizeof(*dst));
    dst->sin_family = AF_INET;
    dst->sin_port = htons((uint16_t)port);
    if (strcmp(host, "localhost") == 0) strcpy(host, "127.0.0.1");
    if (inet_pton(AF_INET, host, &dst->sin_addr) != 1) {
        *err = "host must be a numeric IPv4 address or localhost";
        return -1;
    }
    if ((ntohl(dst->sin_addr.s_addr) >> 24) != 127) {
        *err = "load tests target loopback only (127.0.0.0/8)";
        return -1;
    }
    const char *path = slash ? slash : "/";
    if (strlen(path) + 1 > target_cap) {
        *err = "URL path too long";
        return -1;
    }
    strcpy(target, path);
    return 0;
}

ws_conn *ws_connect(ws_ctx *x, const struct sockaddr_in *dst, const struct sockaddr_in *src,
                    const char *host, const char *target, const char *subprotocol, void *ud) {
    if (subprotocol && strlen(subprotocol) > PROTO_MAX) {
        errno = EINVAL;
        return NULL;
    }
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return NULL;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (x->o.rcvbuf > 0) setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &x->o.rcvbuf, sizeof(int));
    if (x->o.sndbuf > 0) setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &x->o.sndbuf, sizeof(int));
    if (src) {
        setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
        if (bind(fd, (const struct sockaddr *)src, sizeof(*src)) < 0) {
            int e = errno;
            close(fd);
            errno = e;
            return NULL;
        }
    }
    int rc = connect(fd, (const struct sockaddr *)dst, sizeof(*dst));
    if (rc < 0 && errno != EINPROGRESS) {
        int e = errno;
        close(fd);
        errno = e;
        return NULL;
    }
    ws_conn *c = kf_calloc(1, sizeof(*c));
    c->x = x;
    c->ud = ud;
    c->fd = fd;
    c->state = WS_CONNECTING;
    if (subprotocol) strcpy(c->proto, subprotocol);
    x->count++;

    uint8_t nonce[16];
    uint64_t r1 = rng_next(x), r2 = rng_next(x);
    memcpy(nonce, &r1, 8);
    memcpy(nonce + 8, &r2, 8);
    char key[25];
    b64(nonce, sizeof(nonce), key);
    ws_accept_for_key(key, c->accept);
    /* The target may be long (it can carry a token): appended on its own. */
    char head[512];
    int hn = snprintf(head, sizeof(head),
                      " HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                      "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n",
                      host, key);
    out_append(c, (const uint8_t *)"GET ", 4);
    out_append(c, (const uint8_t *)target, strlen(target));
    out_append(c, (const uint8_t *)head, (size_t)hn);
    if (subprotocol) {
        hn = snprintf(head, sizeof(head), "Sec-WebSocket-Protocol: %s\r\n", subprotocol);
        out_append(c, (const uint8_t *)head, (size_t)hn);
    }
    out_append(c, (const uint8_t *)"\r\n", 2);

    c->ev = event_new(x->base, fd, EV_WRITE | EV_PERSIST, on_event, c);
    c->ev_flags = EV_WRITE;
    if (!c->ev || event_add(c->ev, NULL) < 0) {
        conn_destroy(c);
        errno = ENOMEM;
        return NULL;
    }
    deadline_set(c, mono_ms() + x->o.connect_timeout_ms);
    return c;
}

ws_state ws_conn_state(const ws_conn *c) { return (ws_state)c->state; }
void *ws_conn_ud(const ws_conn *c) { return c->ud; }
void ws_conn_set_ud(ws_conn *c, void *ud) { c->ud = ud; }
const char *ws_conn_subprotocol(const ws_conn *c) { return c->proto; }
