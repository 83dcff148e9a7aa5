/* Redis Cluster key slots (CRC16 of the hash tag, mod 16384) and their split over shards. */
#ifndef KEFU_SHARD_H
#define KEFU_SHARD_H

#include <stddef.h>
#include <stdint.h>

#define KF_SLOTS 16384

/** CRC16-CCITT (XModem) as Redis Cluster uses it. */
uint16_t kf_crc16(const char *buf, size_t len);

/** Slot of a key: CRC16 of the text between the first '{' and the next '}' when that is
 * non-empty, else of the whole key; mod 16384. Same rule as Redis Cluster. */
unsigned kf_key_slot(const char *key, size_t len);

/** Shard of a slot when KF_SLOTS are split into nshards contiguous ranges of equal size
 * (the last range takes the remainder). nshards >= 1. */
unsigned kf_slot_shard(unsigned slot, unsigned nshards);

/** kf_slot_shard(kf_key_slot(key)). */
unsigned kf_key_shard(const char *key, size_t len, unsigned nshards);

#endif
