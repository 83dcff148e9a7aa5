/* Redis Cluster key slots (CRC16 of the hash tag, mod 16384), the redirections a cluster node
 * answers with, and its slot map (CLUSTER SLOTS). Pure functions: lib/redis.c routes with them. */
#ifndef KEFU_SLOT_H
#define KEFU_SLOT_H

#include <stddef.h>
#include <stdint.h>

#define KF_SLOTS 16384

/** CRC16-CCITT (XModem) as Redis Cluster uses it. */
uint16_t kf_crc16(const char *buf, size_t len);

/** Slot of a key: CRC16 of the text between the first '{' and the next '}' when that is
 * non-empty, else of the whole key; mod 16384. Same rule as Redis Cluster. */
unsigned kf_key_slot(const char *key, size_t len);

/** What an error reply asks of a cluster client. */
enum kf_redirect {
    KF_REDIR_NONE = 0,   /* an ordinary error: give it to the caller */
    KF_REDIR_MOVED,      /* the slot lives on host:port now: update the map, send it there */
    KF_REDIR_ASK,        /* this one command goes to host:port, preceded by ASKING */
    KF_REDIR_TRYAGAIN,   /* keys of a slot being migrated are split: retry shortly */
    KF_REDIR_CLUSTERDOWN /* the cluster (or this slot) has no master right now: retry shortly */
};

/** Classifies an error reply's text ("MOVED 3999 127.0.0.1:6381", "ASK ...", "TRYAGAIN ...",
 * "CLUSTERDOWN ..."). For MOVED and ASK, fills slot, host (NUL-terminated, at most hostlen - 1
 * bytes; an empty host means "the node that answered") and port; a malformed MOVED or ASK is
 * KF_REDIR_NONE. */
enum kf_redirect kf_redirect_parse(const char *err, size_t len, unsigned *slot, char *host,
                                   size_t hostlen, int *port);

/** One range of a slot map: slots first..last are served by the master at host:port. */
typedef struct kf_slot_range {
    unsigned first, last;
    char host[256];
    int port;
} kf_slot_range;

struct redisReply;
/** Reads a CLUSTER SLOTS reply ([[first, last, [host, port, id, ...], replicas...], ...]) into
 * at most max ranges. Returns the number of ranges, or -1 when the reply is not a slot map. An
 * empty host (the node does not know its address) is returned as "". */
int kf_cluster_slots_parse(const struct redisReply *reply, kf_slot_range *out, int max);

#endif
