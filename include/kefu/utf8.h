/* UTF-8 validation (RFC 3629: no overlongs, no surrogates, nothing above U+10FFFF). */
#ifndef KEFU_UTF8_H
#define KEFU_UTF8_H

#include <stddef.h>

/** Returns 1 when buf[0..len) is valid UTF-8, 0 otherwise. */
int kf_utf8_valid(const char *buf, size_t len);

/** Number of code points in a valid UTF-8 string (undefined for invalid input). */
size_t kf_utf8_len(const char *buf, size_t len);

#endif
