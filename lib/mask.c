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

#define GROUP_MAX 24 /* digits of a number written in groups; longer ones are not personal data */

/* A number written in groups, as people type phone, card and ID numbers: "138-1234-5678",
 * "138 1234 5678", "+86 13812345678", "6222 0212 3456 7890", "11010519491231002X". Groups are
 * joined by one space or '-' when the next has 3 digits or more and so does the one before (a
 * country code after '+' may be shorter), so dates (2026-11-29) and amounts stay apart. */
typedef struct {
    size_t end;            /* bytes of src the number spans */
    size_t first;          /* bytes of its first digit run */
    size_t n;              /* digits, in d; an ID number's final X counts as one */
    char d[GROUP_MAX + 1];
    int plus, x;
    int groups;            /* digit runs joined */
    int thousands;         /* 1..3 digits, then only groups of exactly 3: an amount */
} number;

static void scan_number(const unsigned char *s, number *nb) {
    size_t i = 0, run = 0, prev = 0;
    memset(nb, 0, sizeof(*nb));
    if (s[0] == '+') nb->plus = 1, i = 1;
    for (;;) {
        size_t start = i;
        while (is_digit(s[i])) {
            if (nb->n < GROUP_MAX) nb->d[nb->n] = (char)s[i];
            nb->n++;
            i++;
        }
        run = i - start;
        if (!nb->first) nb->first = i;
        nb->end = i;
        nb->groups++;
        if (nb->groups == 1)
            nb->thousands = !nb->plus && run <= 3;
        else if (run != 3)
            nb->thousands = 0;
        prev = run;
        if ((s[i] != ' ' && s[i] != '-') || !is_digit(s[i + 1])) break;
        size_t next = 0;
        while (is_digit(s[i + 1 + next])) next++;
        int short_code = nb->plus && nb->end == nb->first && prev <= 3;
        /* a whole number already (a phone number, then a date) is not continued */
        if (next < 3 || (prev < 3 && !short_code) || prev >= PHONE_MIN) break;
        i++;
    }
    if (nb->groups < 2) nb->thousands = 0;
    /* the check character of an 18-character ID number */
    if (nb->n == 17 && (s[nb->end] == 'X' || s[nb->end] == 'x') && !is_alnum(s[nb->end + 1])) {
        nb->d[nb->n++] = (char)s[nb->end];
        nb->end++;
        nb->x = 1;
    }
}

/* The Luhn check of bank card numbers. */
static int luhn_ok(const char *d, size_t n) {
    int sum = 0;
    for (size_t k = 0; k < n; k++) {
        int v = d[n - 1 - k] - '0';
        if (k % 2) v = v * 2 > 9 ? v * 2 - 9 : v * 2;
        sum += v;
    }
    return sum % 10 == 0;
}

/* Writes the number at s (scan_number) masked: an 18-character ID number and a bank card
 * (13..19 digits passing Luhn) keep their first 3 or 4 and last 4 characters; a phone number
 * (7..15 digits) as put_digits. When the grouped whole is none of these, each group is judged
 * alone. Returns the bytes consumed. */
static size_t put_number(outbuf *o, const unsigned char *s) {
    number nb;
    scan_number(s, &nb);
    if (nb.n <= GROUP_MAX && !nb.thousands) {
        size_t keep = 0;
        if (nb.n == 18 && !nb.plus)
            keep = 3; /* ID number */
        else if (nb.n >= 13 && nb.n <= 19 && !nb.plus && !nb.x && luhn_ok(nb.d, nb.n))
            keep = 4; /* bank card */
        if (keep) {
            put(o, nb.d, keep);
            put(o, "****", 4);
            put(o, nb.d + nb.n - 4, 4);
            return nb.end;
        }
        if (!nb.x && nb.n >= PHONE_MIN && nb.n <= PHONE_MAX) {
            if (nb.plus) put(o, "+", 1);
            put_digits(o, nb.d, nb.n);
            return nb.end;
        }
    }
    /* none of these as a whole: each group is judged alone, separators copied */
    for (size_t i = 0; i < nb.end;) {
        size_t j = i;
        while (j < nb.end && is_digit(s[j])) j++;
        if (j == i) {
            put(o, (const char *)s + i, 1);
            i++;
            continue;
        }
        put_digits(o, (const char *)s + i, j - i);
        i = j;
    }
    return nb.end;
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
        if (is_digit(s[i]) || (s[i] == '+' && is_digit(s[i + 1]))) {
            i += put_number(&o, s + i);
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
