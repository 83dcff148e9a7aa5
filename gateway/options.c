/* kefu-gateway's options: every one with its default, bounds and meaning. */
#include <stddef.h>

#include "gateway.h"

#define O(f) offsetof(gw_options, f)
#define BIG 1000000000000LL

const kf_option gw_option_table[] = {
    {"bind", KF_OPT_STR, O(bind), "0.0.0.0", 0, 0, 0, "address to listen on"},
    {"port", KF_OPT_INT, O(port), "8080", 1, 65535, 0, "WebSocket and HTTP port (shared by all processes)"},
    {"processes", KF_OPT_INT, O(processes), "0", 0, 256, 0, "gateway processes on the port (0 = number of cores)"},
    {"node_name", KF_OPT_STR, O(node_name), "", 0, 0, 0, "node id prefix; process i is <name>-<i> (default: host name)"},
    {"redis", KF_OPT_STR, O(redis), "127.0.0.1:6379", 0, 0, 0, "Redis: one stand-alone server host:port, or seed nodes of a Redis Cluster (one or more, comma-separated host:port); which of the two is read from the server"},
    {"jwt_secrets", KF_OPT_STR, O(jwt_secrets), "", 0, 0, 1, "HS256 secrets, comma-separated; tokens signed by any are accepted (default: the development secret, with a warning)"},
    {"jwt_leeway_s", KF_OPT_INT, O(jwt_leeway_s), "30", 0, 3600, 1, "clock leeway for exp/nbf"},
    {"log_level", KF_OPT_STR, O(log_level), "info", 0, 0, 1, "debug, info, warn, error or off"},
    {"auth_timeout_ms", KF_OPT_INT, O(auth_timeout_ms), "5000", 100, 600000, 1, "time to send hello after the upgrade"},
    {"max_message_bytes", KF_OPT_INT, O(max_message_bytes), "65536", 256, 16777216, 1, "largest message (all fragments); larger closes with 1009"},
    {"max_text_bytes", KF_OPT_INT, O(max_text_bytes), "8192", 1, 1048576, 1, "largest msg.send text; larger answers too_large"},
    {"rx_buffer_bytes", KF_OPT_INT, O(rx_buffer_bytes), "256", 128, 65536, 0, "libwebsockets receive buffer per connection"},
    {"rate_per_s", KF_OPT_INT, O(rate_per_s), "20", 1, 1000000, 1, "frames per second a connection may send (token bucket rate)"},
    {"rate_burst", KF_OPT_INT, O(rate_burst), "40", 1, 1000000, 1, "token bucket size"},
    {"rate_abuse_limit", KF_OPT_INT, O(rate_abuse_limit), "50", 1, 1000000, 1, "rate_limited answers within a minute before closing with 4429"},
    {"outq_max_bytes", KF_OPT_INT, O(outq_max_bytes), "1048576", 1024, BIG, 1, "output queue bytes per connection before closing it as a slow consumer"},
    {"outq_max_msgs", KF_OPT_INT, O(outq_max_msgs), "4096", 8, 10000000, 1, "output queue frames per connection before closing it as a slow consumer"},
    {"ping_interval_ms", KF_OPT_INT, O(ping_interval_ms), "25000", 100, 3600000, 1, "WebSocket ping after this much silence"},
    {"idle_timeout_ms", KF_OPT_INT, O(idle_timeout_ms), "75000", 200, 36000000, 1, "close with 4409 after this much silence"},
    {"history_maxlen", KF_OPT_INT, O(history_maxlen), "10000", 10, BIG, 1, "messages kept per conversation stream (approximate MAXLEN)"},
    {"history_page_max", KF_OPT_INT, O(history_page_max), "200", 1, 10000, 1, "largest history page"},
    {"inbox_maxlen", KF_OPT_INT, O(inbox_maxlen), "1000000", 100, BIG, 1, "most entries a node inbox keeps (read entries are trimmed every second; this bounds a dead node's inbox)"},
    {"inbox_batch", KF_OPT_INT, O(inbox_batch), "4096", 1, 100000, 1, "inbox entries read per XREAD"},
    {"presence_ttl_ms", KF_OPT_INT, O(presence_ttl_ms), "30000", 1000, 3600000, 0, "presence expiry; refreshed every third of it"},
    {"presence_cache_ms", KF_OPT_INT, O(presence_cache_ms), "1000", 0, 10000, 0, "how long a node reuses a user's looked-up nodes when routing (0 = no cache); when a node may still route from a copy made before a user connected to this node, the user's connections here get a resync once the copy has expired"},
    {"cid_ttl_s", KF_OPT_INT, O(cid_ttl_s), "86400", 1, 31536000, 1, "how long a cid keeps msg.send idempotent"},
    {"redis_timeout_ms", KF_OPT_INT, O(redis_timeout_ms), "5000", 50, 600000, 0, "Redis connect timeout, and how long a connection with commands pending may go without any reply before it is dropped (requests then answer unavailable) and re-established"},
    {"ack_replicas", KF_OPT_INT, O(ack_replicas), "0", 0, 16, 0, "msg.send is acknowledged only once this many replicas have the message (Redis WAIT after each batch); 0 = once the master has it"},
    {"ack_timeout_ms", KF_OPT_INT, O(ack_timeout_ms), "1000", 1, 600000, 0, "longest wait for those replicas; a message they did not confirm in time is answered unavailable (it is stored: a retry with the same cid returns it). Must be below redis_timeout_ms"},
    {"drain_timeout_ms", KF_OPT_INT, O(drain_timeout_ms), "5000", 0, 600000, 1, "on SIGTERM, longest wait for pending work before exit"},
    {"max_connections", KF_OPT_INT, O(max_connections), "0", 0, 10000000, 0, "connections per process (0 = file descriptor limit less a reserve)"},
    {"redis_inflight_max", KF_OPT_INT, O(redis_inflight_max), "5000", 16, 10000000, 1, "Redis work in flight per process (commands, queued routes, gathered messages) above which a connection that sends is no longer read (backpressure); reading resumes below half of it"},
    {"overload_shed_ms", KF_OPT_INT, O(overload_shed_ms), "1000", 0, 600000, 1, "a connection held unread by backpressure this long is read again, and until the backlog is under half of redis_inflight_max its msg.send requests are answered overloaded (with retry_ms) instead of waiting; 0 = only hold"},
    {"route_retry_ms", KF_OPT_INT, O(route_retry_ms), "15000", 0, 600000, 1, "how long a push whose presence lookup failed is retried (in order) before its users get a resync notice instead"},
    {"route_queue_max", KF_OPT_INT, O(route_queue_max), "100000", 16, 100000000, 1, "pushes queued for routing per process; a push beyond it is not queued and its users get a resync notice"},
    {"bots_dir", KF_OPT_STR, O(bots_dir), "", 0, 0, 0, "bot rule directory (*.lua, docs/bots.md); empty = no bots, conversations queue for humans at once"},
    {"bot_instruction_budget", KF_OPT_INT, O(bot_instruction_budget), "200000", 1000, 100000000, 1, "Lua VM instructions one bot event may use before it is stopped (applies from the next rule load)"},
    {"bot_memory_kb", KF_OPT_INT, O(bot_memory_kb), "16384", 256, 4194304, 1, "memory cap of the bot rule set's Lua state, KiB (applies from the next rule load)"},
    {"bot_timezone", KF_OPT_STR, O(bot_timezone), "local", 0, 0, 0, "time zone of bot calendars that name none: IANA name, +08:00, UTC or local"},
    {"bot_clock_offset_s", KF_OPT_INT, O(bot_clock_offset_s), "0", -3153600000LL, 3153600000LL, 1, "seconds added to the clock bot rules see (tests of off-hours rules)"},
    {"bot_watch", KF_OPT_BOOL, O(bot_watch), "no", 0, 1, 1, "reload the bot rules when a file in bots_dir changes (checked every second)"},
    {NULL, 0, 0, NULL, 0, 0, 0, NULL},
};
