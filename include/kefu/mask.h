/* Masking of personal data (phone numbers, e-mail addresses, user ids) for logs and records. */
#ifndef KEFU_MASK_H
#define KEFU_MASK_H

#include <stddef.h>

/** Copies src into dst (NUL-terminated, truncated to dstlen-1) with every phone number
 * (a run of 7..15 digits, optionally with a leading '+') shown as its first 3 and last 4 digits
 * around "****" (13812345678 -> 138****5678) and every e-mail address local part reduced to its
 * first character and "***" (john@example.com -> j***@example.com).
 * Runs of 7..10 digits keep only their last 4 (1234567 -> ****4567), since 3 + 4 would show
 * them whole. A '+' is kept as is (+8613812345678 -> +861****5678). An address wins over a
 * phone number in its local part (13812345678@qq.com -> 1***@qq.com). Bytes >= 0x80 are
 * copied untouched; a truncated result never ends in a partial UTF-8 sequence.
 * Returns the length written. */
size_t kf_mask_pii(char *dst, size_t dstlen, const char *src);

#define KF_USER_TAG_LEN 12

/** A user id as logs show it: the first KF_USER_TAG_LEN hex digits of
 * HMAC-SHA256(key, "kefu-log-user:" id), written NUL-terminated into dst (KF_USER_TAG_LEN + 1
 * bytes). One id gives one tag under one key, so a user's lines can be matched, but nothing of
 * the id shows, whatever it looks like: user ids are phone numbers, e-mail addresses, names.
 * With the key, `printf 'kefu-log-user:%s' ID | openssl dgst -sha256 -hmac KEY` finds the tag
 * of a given id. */
void kf_mask_user(char *dst, const char *key, size_t keylen, const char *id);

#endif
