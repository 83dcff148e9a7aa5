/* The web assets (web/ in the repository: the customer widget, the demo page, the agent
 * workbench, the supervisor console) served on the gateway's port; docs/web.md. */
#ifndef KEFU_GATEWAY_WEB_H
#define KEFU_GATEWAY_WEB_H

#include <stddef.h>

struct lws;

typedef struct gw_web_asset {
    const char *path;         /* "/widget.js" */
    const unsigned char *data;
    size_t len;
    const unsigned char *gz;  /* gzip -9n copy, NULL when it would not be smaller */
    size_t gzlen;
    const char *etag;         /* quoted: a prefix of the content's SHA-256 */
} gw_web_asset;

/* Generated at build time by scripts/web_embed.cmake; ends with a NULL path. */
extern const gw_web_asset gw_web_assets[];

/* Answers an HTTP request for uri (the path, without the query) from the assets. Returns -1
 * when uri is no asset (nothing written: the caller answers 404), 1 when the connection must
 * be closed, 0 when the headers are written: then *body (kf_malloc'd, LWS_PRE headroom) holds
 * *len bytes to write, or is NULL when there is no body to send (HEAD, 304, 405, redirects). */
int gw_web_request(struct lws *wsi, const char *uri, char **body, size_t *len);

#endif
