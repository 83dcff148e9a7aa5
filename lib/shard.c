/* Redis Cluster key slots (CRC16/XModem of the key or its hash tag) and slot-to-shard ranges. */
#include "kefu/shard.h"

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

/* Ranges hold KF_SLOTS / nshards slots each; slots past the last full range belong to the last
 * shard. An nshards of 0 is treated as 1 and one larger than KF_SLOTS as KF_SLOTS. */
unsigned kf_slot_shard(unsigned slot, unsigned nshards) {
    if (nshards <= 1) return 0;
    if (nshards > KF_SLOTS) nshards = KF_SLOTS;
    unsigned shard = (slot % KF_SLOTS) / (KF_SLOTS / nshards);
    return shard < nshards ? shard : nshards - 1;
}

unsigned kf_key_shard(const char *key, size_t len, unsigned nshards) {
    return kf_slot_shard(kf_key_slot(key, len), nshards);
}
