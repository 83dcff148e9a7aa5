/* Masking of personal data (phone numbers, e-mail addresses, user ids) for logs and records. */
#ifndef KEFU_MASK_H
#define KEFU_MASK_H

#include <stddef.h>

/** Copies src into dst (NUL-terminated, truncated to dstlen-1) with personal data masked, for
 * records and exports at rest (agents see the live text):
 * - phone numbers: 7..15 digits, also written in groups ("138-1234-5678", "138 1234 5678") and
 *   with a country code ("+86 13812345678"), show their first 3 and last 4 digits around "****"
 *   (138****5678); runs of 7..10 digits only their last 4 (****4567), since 3 + 4 would show
 *   them whole; a '+' is kept (+861****5678);
 * - 18-character ID numbers (the last may be X): first 3 and last 4 (110****002X);
 * - bank card numbers (13..19 digits, grouped or not, passing the Luhn check): first 4 and last
 *   4 (4111****1111); other long numbers (order numbers) stay as they are;
 * - e-mail addresses: the local part reduced to its first character and "***"
 *   (john@example.com -> j***@example.com); an address wins over a phone number in its local
 *   part (13812345678@qq.com -> 1***@qq.com).
 * Groups join over one space or '-' only when both sides have 3 digits or more (a country code
 * after '+' may be shorter) and the first is not a whole number already (7 digits or more), so
 * dates and times stay readable, and a number followed by a date stays apart; amounts written
 * in thousands (1 250 000) stay too. Bytes >= 0x80 are copied
 * untouched; a truncated result of valid UTF-8 never ends in a partial sequence.
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
