/* Strict UTF-8 validation and code point counting (RFC 3629 well-formed byte sequences). */
#include "kefu/utf8.h"

#include <stdint.h>
#include <string.h>

#define ASCII_MASK 0x8080808080808080ULL

/* Validates buf[0..len) against the well-formed sequences of RFC 3629 section 4: the second
 * byte's range depends on the lead byte, which excludes overlongs (C0, C1, E0 80..9F,
 * F0 80..8F), surrogates (ED A0..BF) and code points above U+10FFFF (F4 90.., F5..FF). */
int kf_utf8_valid(const char *buf, size_t len) {
    const unsigned char *s = (const unsigned char *)buf;
    size_t i = 0;

    while (i < len) {
        if (s[i] < 0x80) {
            while (i + 8 <= len) {
                uint64_t w;
                memcpy(&w, s + i, 8);
                if (w & ASCII_MASK) break;
                i += 8;
            }
            while (i < len && s[i] < 0x80) i++;
            continue;
        }

        unsigned char c = s[i];
        unsigned char lo = 0x80, hi = 0xBF;
        size_t need;
        if (c >= 0xC2 && c <= 0xDF) {
            need = 1;
        } else if (c >= 0xE0 && c <= 0xEF) {
            need = 2;
            if (c == 0xE0) lo = 0xA0;
            else if (c == 0xED) hi = 0x9F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            need = 3;
            if (c == 0xF0) lo = 0x90;
            else if (c == 0xF4) hi = 0x8F;
        } else {
            return 0;
        }
        if (len - i - 1 < need) return 0;
        if (s[i + 1] < lo || s[i + 1] > hi) return 0;
        for (size_t k = 2; k <= need; k++)
            if ((s[i + k] & 0xC0) != 0x80) return 0;
        i += need + 1;
    }
    return 1;
}

size_t kf_utf8_len(const char *buf, size_t len) {
    const unsigned char *s = (const unsigned char *)buf;
    size_t n = 0;
    for (size_t i = 0; i < len; i++)
        if ((s[i] & 0xC0) != 0x80) n++;
    return n;
}
