/* Tests of kefu-load's building blocks: WebSocket framing helpers, the client against a scripted
 * loopback server (fragments, control frames, 16/64-bit lengths, close), the histogram and the
 * frame views/writer (cross-checked with kefu's jansson codec). */
#include <arpa/inet.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "hist.h"
#include "kefu/codec.h"
#include "proto.h"
#include "wsclient.h"

static int failures;

#define CHECK(cond)                                                          \
    do {                                                                     \
        if (!(cond)) {                                                       \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
            failures++;                                                      \
        }                                                                    \
    } while (0)

/* ---- pure helpers ---- */

static void test_accept_key(void) {
    char out[29];
    ws_accept_for_key("dGhlIHNhbXBsZSBub25jZQ==", out); /* RFC 6455 section 1.3 */
    CHECK(strcmp(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=") == 0);
}

static void test_frame_header(void) {
    uint8_t h[14], mask[4] = {1, 2, 3, 4};
    CHECK(ws_frame_header(h, 1, WS_OP_TEXT, 5, mask) == 6);
    CHECK(h[0] == 0x81 && h[1] == 0x85 && h[2] == 1 && h[5] == 4);
    CHECK(ws_frame_header(h, 0, WS_OP_BINARY, 300, mask) == 8);
    CHECK(h[0] == 0x02 && h[1] == (0x80 | 126) && h[2] == 1 && h[3] == 44);
    CHECK(ws_frame_header(h, 1, WS_OP_BINARY, 70000, mask) == 14);
    CHECK(h[1] == (0x80 | 127) && h[7] == 0x01 && h[8] == 0x11 && h[9] == 0x70);
    uint8_t buf[37], orig[37];
    for (int i = 0; i < 37; i++) buf[i] = orig[i] = (uint8_t)(i * 7);
    ws_mask_bytes(buf, 37, mask, 0);
    for (int i = 0; i < 37; i++) CHECK(buf[i] == (orig[i] ^ mask[i & 3]));
    ws_mask_bytes(buf, 37, mask, 0);
    CHECK(memcmp(buf, orig, 37) == 0);
}

static void test_hist(void) {
    for (uint64_t v = 0; v < 5000000; v = v * 3 / 2 + 1) {
        size_t i = kl_hist_index(v);
        CHECK(i < KL_HIST_BUCKETS);
        CHECK(kl_hist_lo(i) <= v && v <= kl_hist_hi(i));
        if (i + 1 < KL_HIST_BUCKETS) CHECK(kl_hist_hi(i) + 1 == kl_hist_lo(i + 1));
    }
    CHECK(kl_hist_index(UINT64_MAX) == KL_HIST_BUCKETS - 1);
    static kl_hist h, h2, d;
    kl_hist_init(&h);
    for (uint64_t v = 1; v <= 100000; v++) kl_hist_add(&h, v * 1000); /* 1 us .. 100 ms */
    uint64_t p50 = kl_hist_quantile(&h, 0.5), p99 = kl_hist_quantile(&h, 0.99);
    CHECK(p50 > 48000000 && p50 < 52000000);
    CHECK(p99 > 96000000 && p99 < 102000000);
    CHECK(kl_hist_quantile(&h, 1.0) == 100000000);
    CHECK(h.count == 100000 && h.min == 1000 && h.max == 100000000);
    h2 = h;
    for (int i = 0; i < 10; i++) kl_hist_add(&h2, 7);
    kl_hist_diff(&d, &h2, &h);
    CHECK(d.count == 10 && kl_hist_quantile(&d, 0.99) == 7);
}

/* ---- frame views ---- */

static void test_views(void) {
    const char *js = "{\"type\":\"msg\",\"conv\":\"abc\",\"id\":\"17-0\",\"from\":{\"id\":\"u1\",\"role\":"
                     "\"agent\",\"name\":\"A \\\"B\\\"\"},\"text\":\"hi \\u00e9\\n\",\"ts\":17,\"cid\":\"c1\","
                     "\"extra\":[1,2,{\"x\":null}],\"dup\":false,\"req\":-42}";
    kl_view v;
    CHECK(kl_view_parse(0, js, strlen(js), &v) == 0);
    CHECK(kl_span_eq(v.type, "msg") && kl_span_eq(v.conv, "abc") && kl_span_eq(v.id, "17-0"));
    CHECK(kl_span_eq(v.from_id, "u1") && kl_span_eq(v.cid, "c1"));
    CHECK(v.has_ts && v.ts == 17 && v.has_req && v.req == -42 && v.dup == 0 && v.more == -1);
    char text[32];
    CHECK(kl_span_copy(v.text, text, sizeof(text)) == 6 && strcmp(text, "hi \xc3\xa9\n") == 0);
    CHECK(kl_view_parse(0, "{\"type\":\"x\"", 11, &v) < 0);
    CHECK(kl_view_parse(0, "{\"type\":\"x\"} x", 14, &v) < 0);
    CHECK(kl_view_parse(0, "[1]", 3, &v) < 0);

    /* The same object through jansson + kefu's msgpack encoder must give the same view. */
    json_error_t jerr;
    json_t *obj = json_loads(js, 0, &jerr);
    CHECK(obj != NULL);
    char *mp;
    size_t mplen;
    CHECK(kf_codec_encode(KF_FMT_MSGPACK, obj, 0, &mp, &mplen) == 0);
    CHECK(kl_view_parse(1, mp, mplen, &v) == 0);
    CHECK(kl_span_eq(v.type, "msg") && kl_span_eq(v.from_id, "u1") && v.ts == 17 && v.req == -42);
    CHECK(kl_span_copy(v.text, text, sizeof(text)) == 6 && strcmp(text, "hi \xc3\xa9\n") == 0);
    CHECK(kl_view_parse(1, mp, mplen - 1, &v) < 0);
    free(mp);
    json_decref(obj);

    /* history page: iterate msgs in both formats */
    const char *hist = "{\"type\":\"ok\",\"req\":3,\"more\":true,\"msgs\":[{\"id\":\"1-0\",\"cid\":\"a\"},"
                       "{\"id\":\"2-0\",\"cid\":\"b\"}]}";
    for (int fmt = 0; fmt < 2; fmt++) {
        char *buf = (char *)hist;
        size_t len = strlen(hist);
        if (fmt) {
            json_t *o = json_loads(hist, 0, &jerr);
            CHECK(kf_codec_encode(KF_FMT_MSGPACK, o, 0, &buf, &len) == 0);
            json_decref(o);
        }
        CHECK(kl_view_parse(fmt, buf, len, &v) == 0);
        CHECK(v.more == 1 && v.req == 3);
        kl_iter it;
        kl_view m;
        CHECK(kl_iter_init(&it, fmt, v.msgs) == 0);
        CHECK(kl_iter_next(&it, &m) == 1 && kl_span_eq(m.id, "1-0") && kl_span_eq(m.cid, "a"));
        CHECK(kl_iter_next(&it, &m) == 1 && kl_span_eq(m.id, "2-0") && kl_span_eq(m.cid, "b"));
        CHECK(kl_iter_next(&it, &m) == 0);
        if (fmt) free(buf);
    }

    /* writer -> jansson decoder, both formats */
    for (int fmt = 0; fmt < 2; fmt++) {
        char buf[256];
        kl_enc e;
        kl_enc_begin(&e, fmt, buf, sizeof(buf), 4);
        kl_enc_str(&e, "type", "msg.send", 8);
        kl_enc_int(&e, "req", 300000);
        kl_enc_int(&e, "neg", -5000);
        kl_enc_str(&e, "text", "q\"\\\x01z", 5);
        size_t n = kl_enc_end(&e);
        CHECK(n > 0);
        const char *err = NULL;
        json_t *o = kf_codec_decode(fmt ? KF_FMT_MSGPACK : KF_FMT_JSON, buf, n, &err);
        CHECK(o != NULL);
        if (o) {
            CHECK(strcmp(json_string_value(json_object_get(o, "type")), "msg.send") == 0);
            CHECK(json_integer_value(json_object_get(o, "req")) == 300000);
            CHECK(json_integer_value(json_object_get(o, "neg")) == -5000);
            CHECK(strcmp(json_string_value(json_object_get(o, "text")), "q\"\\\x01z") == 0);
            json_decref(o);
        }
        kl_enc_begin(&e, fmt, buf, 8, 1);
        kl_enc_str(&e, "type", "far too long for the buffer", 27);
        CHECK(kl_enc_end(&e) == 0);
    }
}

/* ---- the client against a scripted server ---- */

struct srv {
    int lfd;
    int port;
    char got[256];     /* unmasked payload of the client's first frame */
    int got_len;
    char frag[64];     /* the fragmented message, reassembled */
    int frag_len;
    int close_code;    /* from the client's close frame */
};

static int read_full(int fd, void *buf, size_t n) {
    size_t o = 0;
    while (o < n) {
        ssize_t r = read(fd, (char *)buf + o, n - o);
        if (r <= 0) return -1;
        o += (size_t)r;
    }
    return 0;
}

static void send_frame(int fd, int fin, int op, const void *p, size_t n) {
    uint8_t h[10];
    size_t hl = 2;
    h[0] = (uint8_t)((fin ? 0x80 : 0) | op);
    if (n < 126) {
        h[1] = (uint8_t)n;
    } else if (n < 65536) {
        h[1] = 126, h[2] = (uint8_t)(n >> 8), h[3] = (uint8_t)n, hl = 4;
    } else {
        h[1] = 127;
        for (int i = 0; i < 8; i++) h[2 + i] = (uint8_t)((uint64_t)n >> (56 - 8 * i));
        hl = 10;
    }
    CHECK(write(fd, h, hl) == (ssize_t)hl);
    if (n) CHECK(write(fd, p, n) == (ssize_t)n);
}

/* Reads one masked client frame; returns its opcode and unmasks into out (fin into *fin). */
static int read_frame_fin(int fd, char *out, int *len, int *fin) {
    uint8_t h[2], m[4];
    if (read_full(fd, h, 2) < 0) return -1;
    CHECK(h[1] & 0x80);
    int n = h[1] & 0x7f;
    CHECK(n < 126);
    if (read_full(fd, m, 4) < 0 || read_full(fd, out, (size_t)n) < 0) return -1;
    for (int i = 0; i < n; i++) out[i] ^= (char)m[i & 3];
    *len = n;
    *fin = h[0] >> 7;
    return h[0] & 0x0f;
}

static int read_frame(int fd, char *out, int *len) {
    int fin;
    return read_frame_fin(fd, out, len, &fin);
}

static void *server(void *arg) {
    struct srv *s = arg;
    int fd = accept(s->lfd, NULL, NULL);
    if (fd < 0) return NULL;
    char req[2048];
    size_t n = 0;
    while (n < sizeof(req) - 1) {
        ssize_t r = read(fd, req + n, 1);
        if (r <= 0) break;
        n++;
        if (n >= 4 && memcmp(req + n - 4, "\r\n\r\n", 4) == 0) break;
    }
    req[n] = '\0';
    CHECK(strncmp(req, "GET /ws?x=1 HTTP/1.1\r\n", 22) == 0);
    CHECK(strstr(req, "Sec-WebSocket-Protocol: kefu.v1.json\r\n") != NULL);
    char *k = strstr(req, "Sec-WebSocket-Key: ");
    char key[64] = "", acc[29];
    if (k) sscanf(k + 19, "%63[^\r]", key);
    ws_accept_for_key(key, acc);
    char resp[512];
    int rl = snprintf(resp, sizeof(resp),
                      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                      "Sec-WebSocket-Accept: %s\r\nSec-WebSocket-Protocol: kefu.v1.json\r\n\r\n", acc);
    CHECK(write(fd, resp, (size_t)rl) == rl);
    /* a fragmented text message with a ping in the middle */
    send_frame(fd, 0, 1, "hel", 3);
    send_frame(fd, 1, 9, "p1", 2);
    send_frame(fd, 0, 0, "lo ", 3);
    send_frame(fd, 1, 0, "world", 5);
    char pong[16];
    int pl;
    CHECK(read_frame(fd, pong, &pl) == 10 && pl == 2 && memcmp(pong, "p1", 2) == 0);
    static char big[70000];
    memset(big, 'b', sizeof(big));
    send_frame(fd, 1, 2, big, 300);
    send_frame(fd, 1, 2, big, sizeof(big));
    s->got_len = 0;
    CHECK(read_frame(fd, s->got, &s->got_len) == 1);
    /* then the same text in fragments of 2 bytes: "ec" "ho" "!" */
    char part[16];
    int pl2, fin, fop, nfrag = 0;
    s->frag_len = 0;
    do {
        fop = read_frame_fin(fd, part, &pl2, &fin);
        CHECK(fop == (nfrag ? 0 : 1));
        memcpy(s->frag + s->frag_len, part, (size_t)pl2);
        s->frag_len += pl2;
        nfrag++;
    } while (!fin && fop >= 0 && nfrag < 8);
    CHECK(nfrag == 3);
    send_frame(fd, 1, 8, "\x03\xe8" "done", 6);
    char cl[16];
    int cll;
    CHECK(read_frame(fd, cl, &cll) == 8 && cll >= 2);
    s->close_code = ((uint8_t)cl[0] << 8) | (uint8_t)cl[1];
    close(fd);
    return NULL;
}

struct cli {
    struct event_base *base;
    int opened, msgs, closed;
    size_t sizes[4];
    char first[32];
    ws_close_info ci;
};

static void c_open(ws_conn *c, void *ud) {
    (void)c;
    ((struct cli *)ud)->opened++;
}

static void c_msg(ws_conn *c, void *ud, int binary, const char *d, size_t n) {
    struct cli *x = ud;
    if (x->msgs == 0) {
        CHECK(!binary);
        snprintf(x->first, sizeof(x->first), "%.*s", (int)n, d);
    }
    if (x->msgs < 4) x->sizes[x->msgs] = n;
    x->msgs++;
    if (x->msgs == 3) {
        CHECK(ws_send(c, WS_OP_TEXT, "echo!", 5) == 0);
        CHECK(ws_send_fragmented(c, WS_OP_TEXT, "echo!", 5, 2) == 0);
    }
}

static void c_close(ws_conn *c, void *ud, const ws_close_info *ci) {
    struct cli *x = ud;
    x->closed++;
    x->ci = *ci;
    ws_conn_free(c);
    event_base_loopbreak(x->base);
}

static void test_client(void) {
    struct srv s = {0};
    s.lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CHECK(bind(s.lfd, (struct sockaddr *)&a, sizeof(a)) == 0);
    socklen_t al = sizeof(a);
    getsockname(s.lfd, (struct sockaddr *)&a, &al);
    CHECK(listen(s.lfd, 4) == 0);
    pthread_t th;
    pthread_create(&th, NULL, server, &s);

    struct cli x = {0};
    x.base = event_base_new();
    ws_handlers h = {c_open, c_msg, NULL, c_close};
    ws_ctx *ctx = ws_ctx_new(x.base, &h, NULL);
    char url[64], target[64];
    snprintf(url, sizeof(url), "ws://127.0.0.1:%d/ws?x=1", ntohs(a.sin_port));
    struct sockaddr_in dst;
    const char *err;
    CHECK(ws_parse_url(url, &dst, target, sizeof(target), &err) == 0);
    CHECK(ws_parse_url("ws://10.0.0.1:80/ws", &dst, target, sizeof(target), &err) < 0);
    CHECK(ws_parse_url(url, &dst, target, sizeof(target), &err) == 0);
    ws_conn *c = ws_connect(ctx, &dst, NULL, "127.0.0.1", target, "kefu.v1.json", &x);
    CHECK(c != NULL);
    struct timeval tv = {5, 0};
    event_base_loopexit(x.base, &tv);
    event_base_dispatch(x.base);
    pthread_join(th, NULL);
    CHECK(x.opened == 1);
    CHECK(x.msgs == 3 && strcmp(x.first, "hello world") == 0);
    CHECK(x.sizes[1] == 300 && x.sizes[2] == 70000);
    CHECK(s.got_len == 5 && memcmp(s.got, "echo!", 5) == 0);
    CHECK(s.frag_len == 5 && memcmp(s.frag, "echo!", 5) == 0);
    CHECK(x.closed == 1 && x.ci.clean && x.ci.code == 1000 && strcmp(x.ci.text, "done") == 0);
    CHECK(s.close_code == 1000);
    CHECK(ws_ctx_count(ctx) == 0);
    ws_ctx_free(ctx);
    event_base_free(x.base);
    close(s.lfd);
}

int main(void) {
    test_accept_key();
    test_frame_header();
    test_hist();
    test_views();
    test_client();
    if (failures) {
        fprintf(stderr, "%d check(s) failed\n", failures);
        return 1;
    }
    printf("load tools: all checks passed\n");
    return 0;
}
