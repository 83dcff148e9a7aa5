/* Serving the web assets: from the copy compiled into the binary (scripts/web_embed.cmake),
 * or, for development, from the directory `web_dir`, read again on every request.
 * GET and HEAD; ETag and If-None-Match; gzip when the client takes it; a Content-Security-
 * Policy on the pages. docs/web.md explains the headers to the sites that embed the widget. */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <libwebsockets.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gateway.h"
#include "kefu/alloc.h"
#include "kefu/log.h"
#include "web.h"

#define WEB_DIR_MAX_BYTES (8 << 20) /* a development directory; nothing that large belongs there */

static const char *content_type(const char *path) {
    static const struct {
        const char *ext, *type;
    } types[] = {
        {".html", "text/html; charset=utf-8"},  {".js", "text/javascript; charset=utf-8"},
        {".mjs", "text/javascript; charset=utf-8"}, {".css", "text/css; charset=utf-8"},
        {".json", "application/json"},          {".svg", "image/svg+xml"},
        {".png", "image/png"},                  {".ico", "image/x-icon"},
        {".webp", "image/webp"},                {".woff2", "font/woff2"},
        {".txt", "text/plain; charset=utf-8"},  {".md", "text/markdown; charset=utf-8"},
        {".mp3", "audio/mpeg"},                 {".ogg", "audio/ogg"},
        {".wav", "audio/wav"},
    };
    const char *slash = strrchr(path, '/'), *dot = strrchr(path, '.');
    if (dot && (!slash || dot > slash))
        for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++)
            if (strcasecmp(dot, types[i].ext) == 0) return types[i].type;
    return "application/octet-stream";
}

static const gw_web_asset *find_asset(const char *path) {
    for (const gw_web_asset *a = gw_web_assets; a->path; a++)
        if (strcmp(a->path, path) == 0) return a;
    return NULL;
}

/* A path we may look up: absolute, no segment starting with '.' (no "..", no dotfiles), no
 * backslash or control character. lws already collapses "/../" in the request line; this
 * also guards the web_dir case against anything it let through. */
static int path_ok(const char *p) {
    if (p[0] != '/') return 0;
    for (const char *s = p; *s; s++) {
        if ((unsigned char)*s < 0x20 || *s == '\\' || *s == 0x7f) return 0;
        if (*s == '/' && s[1] == '.') return 0;
    }
    return 1;
}

/* Reads web_dir + path whole. Refuses what resolves outside web_dir (a symlink out of it). */
static unsigned char *read_from_dir(const char *path, size_t *len, int *is_dir) {
    char full[PATH_MAX], root[PATH_MAX], real[PATH_MAX];
    *is_dir = 0;
    if (!realpath(gw->opt.web_dir, root)) return NULL;
    if (snprintf(full, sizeof(full), "%s%s", root, path) >= (int)sizeof(full)) return NULL;
    if (!realpath(full, real)) return NULL;
    size_t rl = strlen(root);
    if (strncmp(real, root, rl) != 0 || (real[rl] != '/' && real[rl] != '\0')) return NULL;
    int fd = open(real, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return NULL;
    struct stat st;
    unsigned char *buf = NULL;
    if (fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) *is_dir = 1;
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size <= WEB_DIR_MAX_BYTES) {
        buf = kf_malloc((size_t)st.st_size + 1);
        size_t got = 0;
        while (got < (size_t)st.st_size) {
            ssize_t n = read(fd, buf + got, (size_t)st.st_size - got);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) break;
            got += (size_t)n;
        }
        *len = got;
    }
    close(fd);
    return buf;
}

/* Does the If-None-Match list hold etag (or "*")? Weak tags compare equal (RFC 9110 13.1.2). */
static int etag_matches(const char *inm, const char *etag) {
    size_t el = strlen(etag);
    for (const char *s = inm; *s;) {
        while (*s == ' ' || *s == ',' || *s == '\t') s++;
        if (*s == '*') return 1;
        if (s[0] == 'W' && s[1] == '/') s += 2;
        if (strncmp(s, etag, el) == 0 && (s[el] == '\0' || s[el] == ',' || s[el] == ' ')) return 1;
        while (*s && *s != ',') s++;
    }
    return 0;
}

/* Does Accept-Encoding take gzip (a "gzip" coding whose q is not 0)? */
static int takes_gzip(const char *ae) {
    for (const char *s = ae; *s;) {
        while (*s == ' ' || *s == ',' || *s == '\t') s++;
        const char *tok = s;
        while (*s && *s != ',' && *s != ';' && *s != ' ') s++;
        size_t tl = (size_t)(s - tok);
        int gzip = (tl == 4 && strncasecmp(tok, "gzip", 4) == 0) || (tl == 1 && *tok == '*');
        double q = 1;
        const char *end = strchr(s, ',');
        const char *qp = strstr(s, "q=");
        if (qp && (!end || qp < end)) q = atof(qp + 2);
        if (gzip && q > 0) return 1;
        s = end ? end : s + strlen(s);
    }
    return 0;
}

static uint64_t fnv1a(const unsigned char *p, size_t n) {
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 1099511628211ULL;
    return h;
}

static int add(struct lws *wsi, const char *name, const char *value, unsigned char **p,
               unsigned char *end) {
    return lws_add_http_header_by_name(wsi, (const unsigned char *)name,
                                       (const unsigned char *)value, (int)strlen(value), p, end);
}

/* The pages' policy: scripts, styles and everything else from this origin only; WebSocket to
 * this host (ws: or wss:, TLS may end in front of us) and to web_connect_src; framed only by
 * pages of this origin. Assets that are not pages (the widget's script and style, embedded by
 * other sites) carry no policy: the embedding page's own policy governs them. */
static void page_csp(struct lws *wsi, char *out, size_t n) {
    char host[256];
    const char *ws = "";
    char wsbuf[600] = "";
    int hl = lws_hdr_copy(wsi, host, sizeof(host), WSI_TOKEN_HOST);
    int clean = hl > 0;
    for (int i = 0; i < hl && clean; i++)
        clean = isalnum((unsigned char)host[i]) || strchr(".-:[]", host[i]);
    if (clean) {
        snprintf(wsbuf, sizeof(wsbuf), " ws://%s wss://%s", host, host);
        ws = wsbuf;
    }
    const char *more = gw->opt.web_connect_src ? gw->opt.web_connect_src : "";
    snprintf(out, n,
             "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
             "media-src 'self' data:; connect-src 'self'%s%s%s; frame-ancestors 'self'; "
             "base-uri 'none'; form-action 'self'; object-src 'none'",
             ws, *more ? " " : "", more);
}

static int redirect(struct lws *wsi, unsigned status, const char *to) {
    unsigned char hdr[LWS_PRE + 1024], *start = hdr + LWS_PRE, *p = start, *end = hdr + sizeof(hdr);
    if (lws_add_http_common_headers(wsi, status, "text/plain", 0, &p, end) ||
        add(wsi, "location:", to, &p, end) || lws_finalize_write_http_header(wsi, start, &p, end))
        return 1;
    return 0;
}

int gw_web_request(struct lws *wsi, const char *uri, char **body, size_t *len) {
    *body = NULL;
    *len = 0;
    if (!gw->opt.web) return -1;
    int dev = gw->opt.web_dir && gw->opt.web_dir[0];
    char path[512];
    if (!path_ok(uri) || strlen(uri) + sizeof("index.html") > sizeof(path)) return -1;
    if (strcmp(uri, "/") == 0) return redirect(wsi, HTTP_STATUS_FOUND, "/demo/");
    snprintf(path, sizeof(path), "%s%s", uri, uri[strlen(uri) - 1] == '/' ? "index.html" : "");

    const unsigned char *data = NULL, *gz = NULL;
    size_t dlen = 0, gzlen = 0;
    unsigned char *owned = NULL;
    char etag[40];
    int is_dir = 0;
    if (dev) {
        owned = read_from_dir(path, &dlen, &is_dir);
        if (owned) {
            data = owned;
            snprintf(etag, sizeof(etag), "\"%016llx\"", (unsigned long long)fnv1a(owned, dlen));
        }
    } else {
        const gw_web_asset *a = find_asset(path);
        if (a) {
            data = a->data, dlen = a->len, gz = a->gz, gzlen = a->gzlen;
            snprintf(etag, sizeof(etag), "%s", a->etag);
        } else {
            char idx[sizeof(path) + 16];
            snprintf(idx, sizeof(idx), "%s/index.html", path);
            is_dir = find_asset(idx) != NULL;
        }
    }
    if (!data) {
        if (!is_dir) return -1;
        char to[sizeof(path) + 2]; /* "/demo" -> "/demo/": the page's relative links need the slash */
        snprintf(to, sizeof(to), "%s/", path);
        return redirect(wsi, HTTP_STATUS_MOVED_PERMANENTLY, to);
    }

    unsigned char hdr[LWS_PRE + 2048], *start = hdr + LWS_PRE, *p = start, *end = hdr + sizeof(hdr);
    char *uri_ptr;
    int uri_len, method = lws_http_get_uri_and_method(wsi, &uri_ptr, &uri_len);
    int rc = 1;
    if (method != LWSHUMETH_GET && method != LWSHUMETH_HEAD) {
        static const char msg[] = "method not allowed\n";
        if (lws_add_http_common_headers(wsi, HTTP_STATUS_METHOD_NOT_ALLOWED, "text/plain",
                                        sizeof(msg) - 1, &p, end) ||
            add(wsi, "allow:", "GET, HEAD", &p, end) ||
            lws_finalize_write_http_header(wsi, start, &p, end))
            goto out;
        *body = kf_malloc(LWS_PRE + sizeof(msg));
        memcpy(*body + LWS_PRE, msg, sizeof(msg));
        *len = sizeof(msg) - 1;
        rc = 0;
        goto out;
    }

    char inm[256];
    int not_modified = lws_hdr_copy(wsi, inm, sizeof(inm), WSI_TOKEN_HTTP_IF_NONE_MATCH) > 0 &&
                       etag_matches(inm, etag);
    char ae[256];
    int use_gz = gz && lws_hdr_copy(wsi, ae, sizeof(ae), WSI_TOKEN_HTTP_ACCEPT_ENCODING) > 0 &&
                 takes_gzip(ae);
    const unsigned char *send = use_gz ? gz : data;
    size_t slen = use_gz ? gzlen : dlen;
    const char *ctype = content_type(path);
    int page = strncmp(ctype, "text/html", 9) == 0;
    char csp[1024];
    /* a 304 and a HEAD state the length the 200 would have (RFC 9110 8.6) and send no body */
    if (lws_add_http_common_headers(wsi, not_modified ? HTTP_STATUS_NOT_MODIFIED : HTTP_STATUS_OK,
                                    ctype, (lws_filepos_t)slen, &p, end) ||
        add(wsi, "etag:", etag, &p, end) ||
        /* no versioned names: every use revalidates (a 304 costs a round trip, never a stale
         * widget after a deploy); a development directory is never cached at all */
        add(wsi, "cache-control:", dev ? "no-store" : "no-cache", &p, end) ||
        (!dev && add(wsi, "vary:", "Accept-Encoding", &p, end)) ||
        (use_gz && !not_modified && add(wsi, "content-encoding:", "gzip", &p, end)) ||
        add(wsi, "x-content-type-options:", "nosniff", &p, end) ||
        add(wsi, "referrer-policy:", "no-referrer", &p, end))
        goto out;
    if (page) {
        page_csp(wsi, csp, sizeof(csp));
        if (add(wsi, "content-security-policy:", csp, &p, end)) goto out;
    } else if (add(wsi, "access-control-allow-origin:", "*", &p, end) ||
               add(wsi, "cross-origin-resource-policy:", "cross-origin", &p, end)) {
        /* the widget's script and style are loaded by other sites' pages (docs/web.md) */
        goto out;
    }
    if (lws_finalize_write_http_header(wsi, start, &p, end)) goto out;
    if (!not_modified && method == LWSHUMETH_GET && slen) {
        *body = kf_malloc(LWS_PRE + slen);
        memcpy(*body + LWS_PRE, send, slen);
        *len = slen;
    }
    rc = 0;
out:
    kf_free(owned);
    return rc;
}
