/* A small, fast WebSocket client (RFC 6455) on a libevent loop: non-blocking connect with an
 * optional source address, the HTTP/1.1 upgrade, masked client frames, fragment reassembly,
 * automatic pong and close replies. Built for holding very many connections: an idle
 * connection owns no buffer at all (reads go through one scratch buffer per context).
 *
 * Callbacks run from the event loop. A connection may be closed or freed from inside its own
 * callbacks; the memory is released once the callback has returned. */
#ifndef KEFU_LOAD_WSCLIENT_H
#define KEFU_LOAD_WSCLIENT_H

#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>

struct event_base;

typedef struct ws_ctx ws_ctx;
typedef struct ws_conn ws_conn;

enum {
    WS_OP_CONT = 0x0,
    WS_OP_TEXT = 0x1,
    WS_OP_BINARY = 0x2,
    WS_OP_CLOSE = 0x8,
    WS_OP_PING = 0x9,
    WS_OP_PONG = 0xA,
};

typedef enum {
    WS_CONNECTING, /* TCP connect in progress */
    WS_UPGRADING,  /* request sent, waiting for 101 */
    WS_OPEN,
    WS_CLOSING,    /* our close frame sent, waiting for the peer's */
    WS_CLOSED,     /* socket gone; only ws_conn_free is left to do */
} ws_state;

/** Why a connection ended, passed to on_close. */
typedef struct ws_close_info {
    int clean;          /* 1 when both close frames were exchanged (or we received one) */
    int code;           /* close code received from the server, 0 when none */
    const char *reason; /* static text: "closed by server", "eof", "connect: ...", ... */
    char text[124];     /* the server's close reason text, NUL-terminated */
} ws_close_info;

typedef struct ws_handlers {
    /** Upgrade completed; frames may be sent now. */
    void (*on_open)(ws_conn *c, void *ud);
    /** One complete message (reassembled when fragmented). data is valid only during the call. */
    void (*on_message)(ws_conn *c, void *ud, int binary, const char *data, size_t len);
    /** A pong arrived (optional). */
    void (*on_pong)(ws_conn *c, void *ud, const char *data, size_t len);
    /** The connection ended (never called twice; not called after ws_conn_free). The socket is
     * closed already; call ws_conn_free (here or later). */
    void (*on_close)(ws_conn *c, void *ud, const ws_close_info *info);
} ws_handlers;

typedef struct ws_options {
    size_t max_message;      /* largest message accepted (default 1 MiB); larger closes 1009 */
    int connect_timeout_ms;  /* TCP connect + upgrade (default 10000) */
    int close_timeout_ms;    /* wait for the server's close frame (default 3000) */
    int validate_utf8;       /* check text messages (default on; -1 disables) */
    int rcvbuf, sndbuf;      /* SO_RCVBUF / SO_SNDBUF when > 0 */
} ws_options;

typedef struct ws_stats {
    uint64_t frames_in, frames_out, bytes_in, bytes_out;
    uint64_t protocol_errors;
    uint64_t write_blocked;  /* times a send had to wait for EV_WRITE */
} ws_stats;

/** A context per event loop: handlers, options, the shared read buffer and the timeout sweep.
 * opts may be NULL for defaults. Returns NULL when the loop refuses the timer. */
ws_ctx *ws_ctx_new(struct event_base *base, const ws_handlers *h, const ws_options *opts);
/** Frees the context; every connection must have been freed before. */
void ws_ctx_free(ws_ctx *x);
const ws_stats *ws_ctx_stats(const ws_ctx *x);
/** Connections that exist (any state). */
size_t ws_ctx_count(const ws_ctx *x);

/** Parses "ws://A.B.C.D[:port][/path[?query]]" (also "localhost") into dst and the request
 * target (path and query, at most target_cap bytes). Only loopback (127.0.0.0/8) is accepted.
 * Returns 0, or -1 with a static message in *err. */
int ws_parse_url(const char *url, struct sockaddr_in *dst, char *target, size_t target_cap,
                 const char **err);

/** Starts a connection to dst, binding to src first when it is non-NULL (port 0; the kernel
 * picks the port at connect time, so many destinations can share a source address). target is
 * the request path with query ("/ws?token=..."), subprotocol may be NULL. host is the Host
 * header value. Returns the connection (state CONNECTING), or NULL with errno set when the
 * socket cannot even be created (EMFILE, ...). */
ws_conn *ws_connect(ws_ctx *x, const struct sockaddr_in *dst, const struct sockaddr_in *src,
                    const char *host, const char *target, const char *subprotocol, void *ud);

/** Queues a message (WS_OP_TEXT or WS_OP_BINARY) or control frame as one masked frame and
 * writes it as soon as the socket takes it. Returns 0, or -1 when the connection is not open. */
int ws_send(ws_conn *c, int opcode, const void *data, size_t len);
/** Same as ws_send, but splits the message into fragments of at most frag bytes. */
int ws_send_fragmented(ws_conn *c, int opcode, const void *data, size_t len, size_t frag);
/** Holds writes in the output buffer until ws_uncork (batching several frames per write). */
void ws_cork(ws_conn *c);
void ws_uncork(ws_conn *c);
/** Bytes waiting in the output buffer. */
size_t ws_pending_bytes(const ws_conn *c);

/** Starts the closing handshake (close frame with code and reason); on_close follows. */
void ws_close(ws_conn *c, uint16_t code, const char *reason);
/** Drops the TCP connection at once (no close frame; RST when rst is set). on_close follows
 * with reason "aborted" from inside this call's event-loop turn. */
void ws_abort(ws_conn *c, int rst);
/** Releases the connection (closing the socket silently if it is still open). on_close is not
 * called afterwards. Safe inside the connection's own callbacks. */
void ws_conn_free(ws_conn *c);

ws_state ws_conn_state(const ws_conn *c);
void *ws_conn_ud(const ws_conn *c);
void ws_conn_set_ud(ws_conn *c, void *ud);
/** The subprotocol the server selected ("" when none). */
const char *ws_conn_subprotocol(const ws_conn *c);

/* Pure helpers, exported for the unit test. */

/** Sec-WebSocket-Accept for a key: base64(SHA1(key + GUID)), 28 chars + NUL into out[29]. */
void ws_accept_for_key(const char *key, char out[29]);
/** Writes a masked client frame header for len payload bytes into hdr (up to 14 bytes) and
 * returns its length. */
size_t ws_frame_header(uint8_t *hdr, int fin, int opcode, uint64_t len, const uint8_t mask[4]);
/** XORs buf with mask, starting at mask offset `phase`. */
void ws_mask_bytes(uint8_t *buf, size_t len, const uint8_t mask[4], size_t phase);

#endif
