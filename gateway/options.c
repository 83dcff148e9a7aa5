/* kefu-gateway's options: every one with its default, bounds, reload behaviour and meaning. This
 * table is the only place they are written: --help, --dump-config, docs/operations.md and
 * deploy/kefu.conf.example are printed from it (scripts/gen-docs.sh; a test fails on drift). */
#include <stddef.h>

#include "gateway.h"

#define O(f) offsetof(gw_options, f)
#define BIG 1000000000000LL

KF_SHARED_OPTION_CHECK(gw_options);

#define LISTEN "Listening and processes"
#define REDIS "Redis"
#define AUTH "Authentication"
#define LOG "Logging"
#define LIMITS "Per-connection limits"
#define CONV "Conversations and routing"
#define SHUTDOWN "Shutdown"
#define BOTS "Bots"
#define WEB "Web assets"

const kf_option gw_option_table[] = {
    {"bind", KF_OPT_STR, O(bind), "0.0.0.0", 0, 0, 0, "IPv4 address to listen on (IPv6 is not supported).", LISTEN},
    {"port", KF_OPT_INT, O(port), "8080", 1, 65535, 0, "WebSocket and HTTP port (`/ws`, `/metrics`, `/healthz`, `/readyz`, the web assets), shared by all processes of the host (`SO_REUSEPORT`).", LISTEN},
    {"processes", KF_OPT_INT, O(processes), "0", 0, 256, 0, "gateway processes on the port; 0 = number of online cores.", LISTEN},
    {"node_name", KF_OPT_STR, O(node_name), "", 0, 0, 0, "node id prefix; process `i` is node `<node_name>-<i>` and has its own inbox stream. Empty = the host name. Must be unique across the deployment.", LISTEN},
    {"max_connections", KF_OPT_INT, O(max_connections), "0", 0, 10000000, 0, "WebSocket connections per process; 0 = the file descriptor limit (raised to its hard limit at start, `LimitNOFILE`) less 64 for Redis connections and the listener (with many cluster masters set it yourself: docs/operations.md, \"Capacity and limits\").", LISTEN},

    KF_SHARED_OPTION_REDIS(gw_options, REDIS),
    KF_SHARED_OPTION_REDIS_TIMEOUT(gw_options, REDIS),
    {"ack_replicas", KF_OPT_INT, O(ack_replicas), "0", 0, 16, 0, "`msg.send` is acknowledged (and pushed) only once this many replicas have the message (Redis `WAIT` after each batch); 0 = once the master has it. With 1, a failed master loses no acknowledged message. Needs replicas (a cluster with `--cluster-replicas 1`, or a stand-alone master with a replica): without them every message is answered `unavailable`.", REDIS},
    {"ack_timeout_ms", KF_OPT_INT, O(ack_timeout_ms), "1000", 1, 600000, 0, "longest wait for those replicas; a message they did not confirm in time is answered `unavailable` (it is stored: a retry with the same `cid` returns it). With `ack_replicas` above 0 it must be below `redis_timeout_ms`, else the gateway exits with status 2.", REDIS},
    {"redis_module", KF_OPT_BOOL, O(redis_module), "yes", 0, 1, 0, "use the kefu Redis module's `KEFU.MSGSEND` to store `msg.send` on the servers that have `kefu_redis.so` loaded (checked with `COMMAND INFO` on each connection; the others get the `msg_send` script, which does the same). `no` = always the script. See docs/operations.md, \"The kefu Redis module\".", REDIS},
    {"redis_inflight_max", KF_OPT_INT, O(redis_inflight_max), "5000", 16, 10000000, 1, "backpressure: Redis work in flight per process (commands, pushes queued for routing, `msg.send` requests gathered for the next script call) above which a connection that sends a request stops being read (TCP pushes back on the client) until the backlog is under half of it (`kefu_rx_paused`).", REDIS},
    {"overload_shed_ms", KF_OPT_INT, O(overload_shed_ms), "1000", 0, 600000, 1, "a connection held unread by backpressure this long is read again, and its `msg.send` are answered `overloaded` (with `retry_ms`; nothing stored) instead of waiting in its socket, until the backlog is under half of `redis_inflight_max`. 0 = only hold.", REDIS},
    {"route_retry_ms", KF_OPT_INT, O(route_retry_ms), "15000", 0, 600000, 1, "how long a push whose presence lookup failed is retried, keeping its place in line, before its users get a `resync` notice instead (`kefu_push_lost_total{cause=\"presence\"}`).", REDIS},
    {"route_queue_max", KF_OPT_INT, O(route_queue_max), "100000", 16, 100000000, 1, "pushes queued for routing per process; one beyond it is not queued and its users get a `resync` notice (`cause=\"overflow\"`).", REDIS},

    {"jwt_secrets", KF_OPT_STR, O(jwt_secrets), "", 0, 0, 1, "HS256 secrets, comma-separated; a token signed by any of them is accepted (rotation: `NEW,OLD`). Required: with none the gateway refuses to start (exit status 2) unless `dev_secret` is on; a reload that leaves none keeps the previous ones.", AUTH},
    {"dev_secret", KF_OPT_BOOL, O(dev_secret), "no", 0, 1, 0, "development only: with no `jwt_secrets`, accept tokens signed with the public built-in secret `kefu-dev-secret-change-me` (what `kefu-token` and `kefu-load` sign with by default) instead of refusing to start; logged as a warning. Never in production: anyone can sign such a token.", AUTH},
    {"jwt_leeway_s", KF_OPT_INT, O(jwt_leeway_s), "30", 0, 3600, 1, "clock leeway for the `exp` and `nbf` claims, seconds.", AUTH},
    {"auth_timeout_ms", KF_OPT_INT, O(auth_timeout_ms), "5000", 100, 600000, 1, "time allowed from the upgrade to a valid `hello`; then close 4408.", AUTH},

    KF_SHARED_OPTION_LOG_LEVEL(gw_options, LOG),

    {"max_message_bytes", KF_OPT_INT, O(max_message_bytes), "65536", 256, 16777216, 1, "largest received message, all fragments together; larger closes with 1009. Also sizes the send packet at start (not on reload).", LIMITS},
    {"max_text_bytes", KF_OPT_INT, O(max_text_bytes), "8192", 1, 1048576, 1, "largest `msg.send` `text`; larger answers `too_large`.", LIMITS},
    {"rcvbuf_bytes", KF_OPT_INT, O(rcvbuf_bytes), "16384", 0, 16777216, 0, "kernel receive buffer per client connection (SO_RCVBUF; the kernel doubles it for its bookkeeping). What a client has sent and the gateway not read yet (while backpressure holds it) waits there, then in the client's own buffers, where TCP flow control tells it; small keeps that hidden queue, and the age of what waits in it, short. 0 = the kernel's autotuning (`tcp_rmem`).", LIMITS},
    {"rx_buffer_bytes", KF_OPT_INT, O(rx_buffer_bytes), "256", 128, 65536, 0, "libwebsockets receive buffer per connection, bytes.", LIMITS},
    {"rate_per_s", KF_OPT_INT, O(rate_per_s), "20", 1, 1000000, 1, "frames per second a connection may send (token bucket rate).", LIMITS},
    {"rate_burst", KF_OPT_INT, O(rate_burst), "40", 1, 1000000, 1, "token bucket size.", LIMITS},
    {"rate_abuse_limit", KF_OPT_INT, O(rate_abuse_limit), "50", 1, 1000000, 1, "`rate_limited` answers within a minute before closing with 4429.", LIMITS},
    {"outq_max_bytes", KF_OPT_INT, O(outq_max_bytes), "1048576", 1024, BIG, 1, "queued output bytes per connection before it is closed as a slow consumer. A single answer larger than this also closes it: keep `history_page_max` x `max_text_bytes` well below it.", LIMITS},
    {"outq_max_msgs", KF_OPT_INT, O(outq_max_msgs), "4096", 8, 10000000, 1, "queued output frames per connection before it is closed as a slow consumer.", LIMITS},
    {"ping_interval_ms", KF_OPT_INT, O(ping_interval_ms), "25000", 100, 3600000, 1, "send a WebSocket ping after this much silence from the client (checked once a second).", LIMITS},
    {"idle_timeout_ms", KF_OPT_INT, O(idle_timeout_ms), "75000", 200, 36000000, 1, "close with 4409 after this much silence, data or pong (checked once a second).", LIMITS},

    {"history_maxlen", KF_OPT_INT, O(history_maxlen), "10000", 10, BIG, 1, "messages kept per conversation (approximate `MAXLEN` on each append).", CONV},
    {"history_page_max", KF_OPT_INT, O(history_page_max), "200", 1, 10000, 1, "largest `history` `limit`.", CONV},
    {"cid_window", KF_OPT_INT, O(cid_window), "16", 1, 1024, 1, "how many of a sender's latest messages in a conversation `msg.send` recognises by `cid`: a retry with the `cid` of one of them gets its `id` back (`dup`) and stores nothing; the window costs up to 40 bytes per message in the conversation's `meta` hash.", CONV},
    KF_SHARED_OPTION_INBOX_MAXLEN(gw_options, CONV),
    {"inbox_batch", KF_OPT_INT, O(inbox_batch), "4096", 1, 100000, 1, "inbox entries read per `XREAD`.", CONV},
    {"presence_ttl_ms", KF_OPT_INT, O(presence_ttl_ms), "30000", 1000, 3600000, 0, "presence expiry; the heartbeat refreshes it every third of this.", CONV},
    {"presence_cache_ms", KF_OPT_INT, O(presence_cache_ms), "1000", 0, 10000, 0, "how long a node reuses a user's looked-up node list when routing (0 = no cache). Each lookup records in Redis until when it may be reused; a user connecting to a node is welcomed at once and, when a node may still route from a copy made before that, the user's connections on that node get a `resync` once the copy has expired (`kefu_welcome_resync_total`). Longer: fewer lookups per message, but after a reconnect to another node, pushes may reach the new connection only through that `resync`, up to this long later. Use one value on every node.", CONV},

    {"drain_timeout_ms", KF_OPT_INT, O(drain_timeout_ms), "5000", 0, 600000, 1, "on SIGTERM, longest wait for connections and Redis commands before exiting.", SHUTDOWN},

    {"bots_dir", KF_OPT_STR, O(bots_dir), "", 0, 0, 0, "bot rule directory (`*.lua`, docs/bots.md); empty = no bots, conversations are queued for humans at once. SIGHUP reloads the rules; a set that does not load keeps the previous one running.", BOTS},
    {"bot_instruction_budget", KF_OPT_INT, O(bot_instruction_budget), "200000", 1000, 100000000, 1, "Lua VM instructions one bot event may use before it is stopped (from the next rule load).", BOTS},
    {"bot_memory_kb", KF_OPT_INT, O(bot_memory_kb), "16384", 256, 4194304, 1, "memory cap of the rule set's Lua state, KiB (from the next rule load).", BOTS},
    {"bot_timezone", KF_OPT_STR, O(bot_timezone), "local", 0, 0, 0, "time zone of bot calendars that name none: an IANA name, `+08:00`, `UTC` or `local`.", BOTS},
    {"bot_clock_offset_s", KF_OPT_INT, O(bot_clock_offset_s), "0", -3153600000LL, 3153600000LL, 1, "seconds added to the clock the rules see (tests of off-hours rules).", BOTS},
    {"bot_watch", KF_OPT_BOOL, O(bot_watch), "no", 0, 1, 1, "reload the rules when a file in `bots_dir` changes (checked every second).", BOTS},

    {"web", KF_OPT_BOOL, O(web), "yes", 0, 1, 0, "serve the web assets compiled into the binary on the port: the customer widget (`/widget.js`), the demo page (`/demo/`, also `/`), the agent workbench (`/agent/`) and the supervisor console (`/console/`); docs/web.md. `no` = only `/ws`, `/metrics`, `/healthz`, `/readyz`.", WEB},
    {"web_dir", KF_OPT_STR, O(web_dir), "", 0, 0, 0, "development: serve the web assets from this directory (e.g. the repository's `web/`) instead of the compiled-in copy, read again on every request and never cached (`Cache-Control: no-store`, no gzip). Empty = the compiled-in copy.", WEB},
    {"web_connect_src", KF_OPT_STR, O(web_connect_src), "", 0, 0, 0, "more sources for the `connect-src` of the pages' Content-Security-Policy, space-separated (e.g. `wss://gw2.example.com` when pages served by one gateway connect to other gateway hosts; `ws://127.0.0.1:*`). The page's own host (`ws:`/`wss:`) is always allowed.", WEB},
    {NULL, 0, 0, NULL, 0, 0, 0, NULL, NULL},
};

const kf_config_info gw_config_info = {
    "kefu-gateway", "/etc/kefu/gateway.conf",
    "In production set at least: redis, node_name (unique per host) and jwt_secrets (without it "
    "the gateway refuses to start).",
    NULL,
};
