/* Redis Cluster key slots (CRC16/XModem of the key or its hash tag), redirections, slot maps. */
#include "kefu/slot.h"

#include <hiredis/hiredis.h>
#include <stdlib.h>
#include <string.h>

/* CRC16 (poly 0x1021, init 0, no reflection) of one nibble shifted into the top of the register. */
static const uint16_t crc16_nibble[16] = {
    0x0000, 0x1021, 0x2042, 0x3063, 0x4084, 0x50a5, 0x60c6, 0x70e7,
    0x8108, 0x9129, 0xa14a, 0xb16b, 0xc18c, 0xd1ad, 0xe1ce, 0xf1ef,
};

uint16_t kf_crc16(const char *buf, size_t len) {
    const unsigned char *p = (const unsigned char *)buf;
    unsigned crc = 0;
    for (size_t i = 0; i < len; i++) {
        crc = (crc << 4) ^ crc16_nibble[((crc >> 12) ^ (p[i] >> 4)) & 0x0f];
        crc = (crc << 4) ^ crc16_nibble[((crc >> 12) ^ p[i]) & 0x0f];
        crc &= 0xffff;
    }
    return (uint16_t)crc;
}

/* Hashes only the bytes between the first '{' and the first '}' after it, when there are any;
 * a key without '{', without a closing '}', or with "{}" right at the first '{' hashes whole. */
unsigned kf_key_slot(const char *key, size_t len) {
    const char *open = len ? memchr(key, '{', len) : NULL;
    if (open) {
        size_t start = (size_t)(open - key) + 1;
        const char *close = memchr(key + start, '}', len - start);
        if (close && close > key + start)
            return kf_crc16(key + start, (size_t)(close - key) - start) & (KF_SLOTS - 1);
    }
    return kf_crc16(key, len) & (KF_SLOTS - 1);
}

/* "MOVED <slot> <host>:<port>" (also "ASK ..."): the port follows the last ':' so IPv6 hosts
 * ("::1:7000") work; the host may be empty. */
static int parse_target(const char *p, const char *end, unsigned *slot, char *host,
                        size_t hostlen, int *port) {
    char *e;
    if (p >= end || *p < '0' || *p > '9') return 0;
    unsigned long sl = strtoul(p, &e, 10);
    if (e >= end || *e != ' ' || sl >= KF_SLOTS) return 0;
    p = e + 1;
    const char *colon = NULL;
    for (const char *q = p; q < end; q++)
        if (*q == ':') colon = q;
    if (!colon || (size_t)(colon - p) >= hostlen || colon + 1 >= end) return 0;
    long pt = 0;
    for (const char *q = colon + 1; q < end; q++) {
        if (*q < '0' || *q > '9' || pt > 65535) return 0;
        pt = pt * 10 + (*q - '0');
    }
    if (pt <= 0 || pt > 65535) return 0;
    memcpy(host, p, (size_t)(colon - p));
    host[colon - p] = '\0';
    *slot = (unsigned)sl;
    *port = (int)pt;
    return 1;
}

static int starts(const char *s, size_t len, const char *word) {
    size_t n = strlen(word);
    return len >= n && memcmp(s, word, n) == 0 && (len == n || s[n] == ' ');
}

enum kf_redirect kf_redirect_parse(const char *err, size_t len, unsigned *slot, char *host,
                                   size_t hostlen, int *port) {
    if (!err) return KF_REDIR_NONE;
    const char *end = err + len;
    if (starts(err, len, "MOVED"))
        return parse_target(err + 6, end, slot, host, hostlen, port) ? KF_REDIR_MOVED
                                                                      : KF_REDIR_NONE;
    if (starts(err, len, "ASK"))
        return parse_target(err + 4, end, slot, host, hostlen, port) ? KF_REDIR_ASK
                                                                      : KF_REDIR_NONE;
    if (starts(err, len, "TRYAGAIN")) return KF_REDIR_TRYAGAIN;
    if (starts(err, len, "CLUSTERDOWN")) return KF_REDIR_CLUSTERDOWN;
    return KF_REDIR_NONE;
}

int kf_cluster_slots_parse(const redisReply *reply, kf_slot_range *out, int max) {
    if (!reply || reply->type != REDIS_REPLY_ARRAY) return -1;
    int n = 0;
    for (size_t i = 0; i < reply->elements; i++) {
        const redisReply *r = reply->element[i];
        if (r->type != REDIS_REPLY_ARRAY || r->elements < 3) return -1;
        const redisReply *a = r->element[0], *b = r->element[1], *m = r->element[2];
        if (a->type != REDIS_REPLY_INTEGER || b->type != REDIS_REPLY_INTEGER ||
            a->integer < 0 || b->integer < a->integer || b->integer >= KF_SLOTS)
            return -1;
        if (m->type != REDIS_REPLY_ARRAY || m->elements < 2 ||
            m->element[0]->type != REDIS_REPLY_STRING ||
            m->element[1]->type != REDIS_REPLY_INTEGER || m->element[1]->integer <= 0 ||
            m->element[1]->integer > 65535)
            return -1;
        if (n == max) return -1;
        kf_slot_range *o = &out[n++];
        o->first = (unsigned)a->integer;
        o->last = (unsigned)b->integer;
        size_t hl = m->element[0]->len;
        /* "?" is what a node says when it does not know how it is reached */
        if (hl >= sizeof(o->host) || (hl == 1 && m->element[0]->str[0] == '?')) hl = 0;
        memcpy(o->host, m->element[0]->str, hl);
        o->host[hl] = '\0';
        o->port = (int)m->element[1]->integer;
    }
    return n;
}
