/* The worker's HTTP listener on its own libevent loop: /healthz (liveness), /readyz (can it do
 * its job) and /metrics (Prometheus text), plus the client side of --wait-ready, which asks
 * /readyz of a running worker until it is ready. */
#include <errno.h>
#include <event2/buffer.h>
#include <event2/http.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "kefu/log.h"
#include "kefu/redis.h"
#include "wk.h"

static struct evhttp *http;

const char *wk_ready_reason(void) {
    static char why[96];
    if (wk.draining || wk.stopping) return "stopping";
    /* Every slot: the worker's work touches {staff}, every partition of the lifecycle stream
     * and of the deadlines, and every conversation's keys, so a worker missing some of them
     * cannot be relied on to do all of it. */
    unsigned up = kf_redis_slots_up(wk.redis);
    if (up < 16384) {
        snprintf(why, sizeof(why), "redis: %u of 16384 slots reachable", up);
        return why;
    }
    if (!wk_events_reading()) return "not reading the lifecycle stream (consumer group) yet";
    if (!wk_config_published()) return "configuration not published yet";
    return NULL;
}

static void reply_text(struct evhttp_request *req, int code, const char *reason, const char *text) {
    struct evbuffer *body = evbuffer_new();
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                      "text/plain; charset=utf-8");
    evbuffer_add_printf(body, "%s\n", text);
    evhttp_send_reply(req, code, reason, body);
    evbuffer_free(body);
}

static void on_request(struct evhttp_request *req, void *arg) {
    (void)arg;
    enum evhttp_cmd_type m = evhttp_request_get_command(req);
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
    if (!path) path = "";
    int known = !strcmp(path, "/healthz") || !strcmp(path, "/readyz") || !strcmp(path, "/metrics");
    if (!known) {
        reply_text(req, HTTP_NOTFOUND, "Not Found", "not found");
        return;
    }
    if (m != EVHTTP_REQ_GET && m != EVHTTP_REQ_HEAD) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "GET, HEAD");
        reply_text(req, HTTP_BADMETHOD, "Method Not Allowed", "method not allowed");
        return;
    }
    if (!strcmp(path, "/healthz")) {
        /* answering at all shows the loop turns */
        reply_text(req, HTTP_OK, "OK", "ok");
    } else if (!strcmp(path, "/readyz")) {
        const char *why = wk_ready_reason();
        if (why)
            reply_text(req, 503, "Service Unavailable", why);
        else
            reply_text(req, HTTP_OK, "OK", "ready");
    } else {
        struct evbuffer *body = evbuffer_new();
        wk_metrics_render(body);
        evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                          "text/plain; version=0.0.4; charset=utf-8");
        evhttp_send_reply(req, HTTP_OK, "OK", body);
        evbuffer_free(body);
    }
}

int wk_http_start(char *err, size_t errlen) {
    if (wk.opt.http_port == 0) return 0;
    http = evhttp_new(wk.base);
    if (!http) {
        snprintf(err, errlen, "http: cannot create the listener");
        return -1;
    }
    /* Every method reaches on_request, which answers 405 itself (evhttp would say 501). */
    evhttp_set_allowed_methods(http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD | EVHTTP_REQ_POST |
                                         EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE | EVHTTP_REQ_OPTIONS |
                                         EVHTTP_REQ_TRACE | EVHTTP_REQ_CONNECT | EVHTTP_REQ_PATCH);
    /* probes and scrapers send small requests; nobody keeps a slow one open for long */
    evhttp_set_max_headers_size(http, 8192);
    evhttp_set_max_body_size(http, 4096);
    evhttp_set_timeout(http, 10);
    evhttp_set_gencb(http, on_request, NULL);
    if (!evhttp_bind_socket_with_handle(http, wk.opt.http_bind, (ev_uint16_t)wk.opt.http_port)) {
        snprintf(err, errlen, "http: cannot listen on %s port %lld: %s", wk.opt.http_bind,
                 wk.opt.http_port, strerror(errno));
        evhttp_free(http);
        http = NULL;
        return -1;
    }
    kf_info("http: /healthz /readyz /metrics on %s port %lld", wk.opt.http_bind,
            wk.opt.http_port);
    return 0;
}

void wk_http_stop(void) {
    if (http) evhttp_free(http);
    http = NULL;
}

/* ---- --wait-ready ---- */

static double mono_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* One GET /readyz with a one-second bound on each step. Returns the HTTP status, or -1 with
 * the reason in why. */
static int probe(const char *host, int port, char *why, size_t whylen) {
    /* a wildcard listener is reached over loopback */
    if (!strcmp(host, "0.0.0.0") || !*host) host = "127.0.0.1";
    if (!strcmp(host, "::")) host = "::1";
    char portstr[8];
    snprintf(portstr, sizeof(portstr), "%d", port);
    struct addrinfo hints = {0}, *ai = NULL;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    int rc = getaddrinfo(host, portstr, &hints, &ai);
    if (rc != 0) {
        snprintf(why, whylen, "%s: %s", host, gai_strerror(rc));
        return -1;
    }
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    int status = -1;
    if (fd < 0) {
        snprintf(why, whylen, "socket: %s", strerror(errno));
        goto out;
    }
    struct pollfd p = {fd, POLLOUT, 0};
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0 && errno != EINPROGRESS) {
        snprintf(why, whylen, "connect to %s port %d: %s", host, port, strerror(errno));
        goto out;
    }
    int soerr = 0;
    socklen_t sl = sizeof(soerr);
    if (poll(&p, 1, 1000) != 1 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0 || soerr) {
        snprintf(why, whylen, "connect to %s port %d: %s", host, port,
                 soerr ? strerror(soerr) : "timed out");
        goto out;
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    struct timeval tv = {1, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    char req[512];
    int n = snprintf(req, sizeof(req),
                     "GET /readyz HTTP/1.0\r\nHost: %s\r\nConnection: close\r\n\r\n", host);
    if (n < 0 || (size_t)n >= sizeof(req)) { /* a host name longer than HTTP wants */
        snprintf(why, whylen, "http_bind '%.64s...' is too long", host);
        goto out;
    }
    if (send(fd, req, (size_t)n, MSG_NOSIGNAL) != n) {
        snprintf(why, whylen, "sending the request: %s", strerror(errno));
        goto out;
    }
    char buf[2048];
    size_t len = 0;
    ssize_t got;
    while (len < sizeof(buf) - 1 && (got = recv(fd, buf + len, sizeof(buf) - 1 - len, 0)) > 0)
        len += (size_t)got;
    buf[len] = '\0';
    int code;
    if (sscanf(buf, "HTTP/%*d.%*d %d", &code) != 1) {
        snprintf(why, whylen, "no HTTP answer from %s port %d", host, port);
        goto out;
    }
    status = code;
    const char *body = strstr(buf, "\r\n\r\n");
    body = body ? body + 4 : "";
    snprintf(why, whylen, "%d %.*s", code, (int)strcspn(body, "\r\n"), body);
out:
    if (fd >= 0) close(fd);
    freeaddrinfo(ai);
    return status;
}

int wk_http_wait_ready(const char *host, int port, double timeout_s) {
    double deadline = mono_s() + timeout_s;
    char why[256] = "";
    for (;;) {
        if (probe(host, port, why, sizeof(why)) == 200) return 0;
        if (mono_s() >= deadline) break;
        usleep(100000);
    }
    fprintf(stderr, "kefu-worker: not ready after %g s: %s\n", timeout_s, why);
    return 1;
}
