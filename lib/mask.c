/* Masking of phone numbers and e-mail local parts in free text (logs, stored records), and the
 * keyed tags that stand for user ids in logs. */
#include "kefu/mask.h"

#include <string.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#define PHONE_MIN 7
#define PHONE_MAX 15
#define PHONE_FULL 11 /* runs this long or longer keep their first 3 digits too */

typedef struct {
    char *dst;
    size_t cap; /* bytes usable for text: dstlen - 1 */
    size_t len;
    int full;
} outbuf;

static void put(outbuf *o, const char *s, size_t n) {
    if (o->full) return;
    if (n > o->cap - o->len) {
        n = o->cap - o->len;
        o->full = 1;
    }
    memcpy(o->dst + o->len, s, n);
    o->len += n;
}

static int is_digit(unsigned char c) {
    return c >= '0' && c <= '9';
}

static int is_alnum(unsigned char c) {
    return is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static int is_local(unsigned char c) {
    return is_alnum(c) || c == '.' || c == '_' || c == '%' || c == '+' || c == '-';
}

static int is_domain(unsigned char c) {
    return is_alnum(c) || c == '.' || c == '-';
}

/* Length of the domain starting at s (just after '@'), without trailing dots, when it looks like
 * a host name with at least one dot between labels; 0 otherwise. */
static size_t domain_len(const unsigned char *s) {
    size_t n = 0, last_dot = 0;
    int dot = 0;
    if (!is_alnum(s[0])) return 0;
    while (is_domain(s[n])) n++;
    while (n > 0 && s[n - 1] == '.') n--;
    for (size_t i = 1; i < n; i++)
        if (s[i] == '.') {
            dot = 1;
            last_dot = i;
        }
    return dot && last_dot + 1 < n ? n : 0;
}

/* Writes the digit run s[0..n) masked when it has PHONE_MIN..PHONE_MAX digits, else as is. */
static void put_digits(outbuf *o, const char *s, size_t n) {
    if (n < PHONE_MIN || n > PHONE_MAX) {
        put(o, s, n);
        return;
    }
    if (n >= PHONE_FULL) put(o, s, 3);
    put(o, "****", 4);
    put(o, s + n - 4, 4);
}

/* Scans src once. At the start of each run of e-mail local-part characters the run is checked
 * for a following "@domain"; if found, the address is written masked and skipped. Otherwise
 * characters are copied, with each maximal digit run passed through put_digits. A truncated
 * result is cut back to a UTF-8 character boundary. */
size_t kf_mask_pii(char *dst, size_t dstlen, const char *src) {
    const unsigned char *s = (const unsigned char *)(src ? src : "");
    outbuf o = {dst, dstlen ? dstlen - 1 : 0, 0, 0};
    size_t i = 0;

    if (!dst || dstlen == 0) return 0;
    while (s[i] && !o.full) {
        if (is_local(s[i]) && (i == 0 || !is_local(s[i - 1]))) {
            size_t j = i;
            while (is_local(s[j])) j++;
            size_t dl = s[j] == '@' ? domain_len(s + j + 1) : 0;
            if (dl) {
                put(&o, (const char *)s + i, 1);
                put(&o, "***@", 4);
                put(&o, (const char *)s + j + 1, dl);
                i = j + 1 + dl;
                continue;
            }
        }
        if (is_digit(s[i])) {
            size_t j = i;
            while (is_digit(s[j])) j++;
            put_digits(&o, (const char *)s + i, j - i);
            i = j;
            continue;
        }
        put(&o, (const char *)s + i, 1);
        i++;
    }

    if (o.full) {
        size_t n = o.len;
        while (n > 0 && ((unsigned char)dst[n - 1] & 0xC0) == 0x80) n--;
        if (n > 0 && (unsigned char)dst[n - 1] >= 0xC0) {
            unsigned char lead = (unsigned char)dst[n - 1];
            size_t want = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : 2;
            if (o.len - (n - 1) < want) o.len = n - 1;
        }
    }
    dst[o.len] = '\0';
    return o.len;
}

void kf_mask_user(char *dst, const char *key, size_t keylen, const char *id) {
    static const char prefix[] = "kefu-log-user:", hex[] = "0123456789abcdef";
    unsigned char msg[sizeof(prefix) - 1 + 256], md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    size_t idlen = strlen(id);
    if (idlen > 256) idlen = 256; /* user ids are at most 128 bytes (KF_SUB_MAX) */
    memcpy(msg, prefix, sizeof(prefix) - 1);
    memcpy(msg + sizeof(prefix) - 1, id, idlen);
    /* the prefix keeps tags apart from any other HMAC made with the same key (token signatures) */
    if (!HMAC(EVP_sha256(), key, (int)keylen, msg, sizeof(prefix) - 1 + idlen, md, &mdlen))
        mdlen = 0;
    for (size_t i = 0; i < KF_USER_TAG_LEN; i++)
        dst[i] = mdlen ? hex[(md[i / 2] >> (i % 2 ? 0 : 4)) & 15] : '-';
    dst[KF_USER_TAG_LEN] = '\0';
}
