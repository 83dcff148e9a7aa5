/* Time zones (fixed offsets or TZif files) and the business calendar of the bot engine: weekly
 * hours per group with several ranges per day and ranges past midnight, holidays and make-up
 * workdays (调休). */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bot_internal.h"
#include "kefu/alloc.h"
#include "kefu/bot.h"

/* ---- civil dates ---- */

static int64_t floordiv(int64_t a, int64_t b) { return a / b - ((a % b != 0) && ((a < 0) != (b < 0))); }

int64_t kf_days_from_civil(int64_t y, int m, int d) {
    /* Count from 0000-03-01 so that the leap day ends a year; eras of 400 years. */
    y -= m <= 2;
    int64_t era = floordiv(y, 400);
    int64_t yoe = y - era * 400;                                   /* 0..399 */
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;  /* 0..365 */
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;           /* 0..146096 */
    return era * 146097 + doe - 719468;
}

void kf_civil_from_days(int64_t z, int64_t *y, int *m, int *d) {
    z += 719468;
    int64_t era = floordiv(z, 146097);
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = yoe + era * 400 + (*m <= 2);
}

int kf_weekday(int64_t days) {
    int64_t w = (days + 4) % 7; /* 1970-01-01 was a Thursday */
    return (int)(w < 0 ? w + 7 : w);
}

static int days_in_month(int64_t y, int m) {
    static const int dm[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (m == 2 && ((y % 4 == 0 && y % 100 != 0) || y % 400 == 0)) return 29;
    return dm[m - 1];
}

int kf_parse_date(const char *s, size_t len, int64_t *days) {
    int y, m, d, n = 0;
    char buf[16];
    if (len != 10 || s[4] != '-' || s[7] != '-') return -1;
    memcpy(buf, s, len);
    buf[len] = '\0';
    if (sscanf(buf, "%4d-%2d-%2d%n", &y, &m, &d, &n) != 3 || (size_t)n != len) return -1;
    if (y < 1970 || y > 9999 || m < 1 || m > 12 || d < 1 || d > days_in_month(y, m)) return -1;
    *days = kf_days_from_civil(y, m, d);
    return 0;
}

/* ---- time zones ---- */

static int parse_offset(const char *s, int32_t *out) {
    if (!strcasecmp(s, "utc") || !strcasecmp(s, "gmt") || !strcmp(s, "Z")) {
        *out = 0;
        return 0;
    }
    if (!strncasecmp(s, "utc", 3) || !strncasecmp(s, "gmt", 3)) s += 3;
    if (*s != '+' && *s != '-') return -1;
    int sign = *s++ == '-' ? -1 : 1;
    int h = 0, mi = 0, nd = 0;
    while (isdigit((unsigned char)*s) && nd < 2) h = h * 10 + (*s++ - '0'), nd++;
    if (!nd) return -1;
    if (*s == ':') s++;
    if (*s) {
        if (!isdigit((unsigned char)s[0]) || !isdigit((unsigned char)s[1]) || s[2]) return -1;
        mi = (s[0] - '0') * 10 + (s[1] - '0');
    }
    if (h > 14 || mi > 59) return -1;
    *out = sign * (h * 3600 + mi * 60);
    return 0;
}

static uint32_t be32(const unsigned char *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static int64_t be64(const unsigned char *p) {
    return (int64_t)((uint64_t)be32(p) << 32 | be32(p + 4));
}

/* Reads a TZif file (RFC 8536), the 64-bit block when there is one. */
static int tzif_load(kf_tz *tz, const char *path, char *err, size_t errlen) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "unknown time zone (no %s)", path);
        return -1;
    }
    unsigned char *buf = kf_malloc(1 << 20);
    size_t len = fread(buf, 1, 1 << 20, f);
    fclose(f);
    const unsigned char *p = buf, *end = buf + len;
    int ok = 0;
    for (int pass = 0; pass < 2; pass++) {
        if (end - p < 44 || memcmp(p, "TZif", 4) != 0) break;
        int version = p[4];
        uint32_t isutcnt = be32(p + 20), isstdcnt = be32(p + 24), leapcnt = be32(p + 28),
                 timecnt = be32(p + 32), typecnt = be32(p + 36), charcnt = be32(p + 40);
        size_t tsize = pass == 0 ? 4 : 8;
        size_t body = timecnt * tsize + timecnt + typecnt * 6 + charcnt + leapcnt * (tsize + 4) +
                      isstdcnt + isutcnt;
        if (typecnt == 0 || typecnt > 255 || timecnt > 100000 || (size_t)(end - p) < 44 + body) break;
        if (pass == 0 && version >= '2') {
            p += 44 + body; /* skip the 32-bit block */
            continue;
        }
        const unsigned char *q = p + 44;
        tz->nat = timecnt;
        tz->at = kf_malloc((timecnt ? timecnt : 1) * sizeof(int64_t));
        tz->idx = kf_malloc(timecnt ? timecnt : 1);
        for (uint32_t i = 0; i < timecnt; i++, q += tsize)
            tz->at[i] = tsize == 8 ? be64(q) : (int64_t)(int32_t)be32(q);
        int bad = 0;
        for (uint32_t i = 0; i < timecnt; i++) {
            tz->idx[i] = *q++;
            if (tz->idx[i] >= typecnt) bad = 1;
        }
        tz->noffs = typecnt;
        tz->offs = kf_malloc(typecnt * sizeof(int32_t));
        for (uint32_t i = 0; i < typecnt; i++, q += 6) tz->offs[i] = (int32_t)be32(q);
        tz->fixed = tz->offs[0];
        ok = !bad;
        break;
    }
    kf_free(buf);
    if (!ok) {
        kf_tz_free(tz);
        snprintf(err, errlen, "%s is not a TZif file", path);
        return -1;
    }
    return 0;
}

static int iana_name_ok(const char *s) {
    if (!*s || *s == '/' || strstr(s, "..") || strlen(s) > 60) return 0;
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && !strchr("/_+-", *s)) return 0;
    return 1;
}

int kf_tz_load(kf_tz *tz, const char *spec, char *err, size_t errlen) {
    memset(tz, 0, sizeof(*tz));
    if (!spec || !*spec) spec = "local";
    snprintf(tz->name, sizeof(tz->name), "%s", spec);
    if (!strcmp(spec, "local")) {
        const char *env = getenv("TZ");
        if (env && *env == ':') env++;
        if (env && *env && kf_tz_load(tz, env, err, errlen) == 0) {
            snprintf(tz->name, sizeof(tz->name), "%s", env);
            return 0;
        }
        memset(tz, 0, sizeof(*tz));
        snprintf(tz->name, sizeof(tz->name), "local");
        if (tzif_load(tz, "/etc/localtime", err, errlen) == 0) return 0;
        memset(tz, 0, sizeof(*tz));
        snprintf(tz->name, sizeof(tz->name), "UTC");
        return 0;
    }
    int32_t off;
    if (parse_offset(spec, &off) == 0) {
        tz->fixed = off;
        return 0;
    }
    if (!iana_name_ok(spec)) {
        snprintf(err, errlen, "bad time zone '%s' (use an IANA name like Asia/Shanghai or an offset like +08:00)", spec);
        return -1;
    }
    const char *dir = getenv("TZDIR");
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", dir && *dir ? dir : "/usr/share/zoneinfo", spec);
    if (tzif_load(tz, path, err, errlen) < 0) {
        snprintf(err, errlen, "unknown time zone '%s'", spec);
        return -1;
    }
    snprintf(tz->name, sizeof(tz->name), "%s", spec);
    return 0;
}

void kf_tz_free(kf_tz *tz) {
    kf_free(tz->at);
    kf_free(tz->idx);
    kf_free(tz->offs);
    tz->at = NULL;
    tz->idx = NULL;
    tz->offs = NULL;
    tz->nat = tz->noffs = 0;
}

int32_t kf_tz_offset(const kf_tz *tz, int64_t t) {
    if (tz->nat == 0) return tz->fixed;
    if (t < tz->at[0]) return tz->offs[0];
    size_t a = 0, b = tz->nat; /* last i with at[i] <= t */
    while (b - a > 1) {
        size_t mid = (a + b) / 2;
        if (tz->at[mid] <= t) a = mid;
        else b = mid;
    }
    return tz->offs[tz->idx[a]];
}

int64_t kf_tz_mktime(const kf_tz *tz, int64_t local) {
    int32_t cand[3] = {kf_tz_offset(tz, local - 50400), kf_tz_offset(tz, local),
                       kf_tz_offset(tz, local + 50400)};
    int found = 0;
    int64_t best = 0;
    for (int i = 0; i < 3; i++) {
        int64_t t = local - cand[i];
        if (kf_tz_offset(tz, t) == cand[i] && (!found || t < best)) best = t, found = 1;
    }
    /* In a gap (clocks moved forward) the time does not exist: take the offset before it. */
    return found ? best : local - kf_tz_offset(tz, local - 86400);
}

int kf_bot_parse_time(const char *s, const char *tzspec, int64_t *t) {
    while (isspace((unsigned char)*s)) s++;
    if (*s == '@') {
        char *e;
        long long v = strtoll(s + 1, &e, 10);
        if (e == s + 1 || *e) return -1;
        *t = v;
        return 0;
    }
    int y, mo, d, h = 0, mi = 0, sec = 0, n = 0;
    if (sscanf(s, "%4d-%2d-%2d%n", &y, &mo, &d, &n) != 3) return -1;
    const char *r = s + n;
    if (*r == 'T' || *r == ' ') {
        int n2 = 0;
        if (sscanf(r + 1, "%2d:%2d%n", &h, &mi, &n2) != 2) return -1;
        r += 1 + n2;
        if (*r == ':') {
            int n3 = 0;
            if (sscanf(r + 1, "%2d%n", &sec, &n3) != 1) return -1;
            r += 1 + n3;
        }
    }
    while (isspace((unsigned char)*r)) r++;
    if (*r || y < 1970 || mo < 1 || mo > 12 || d < 1 || d > days_in_month(y, mo) || h > 23 ||
        mi > 59 || sec > 59)
        return -1;
    kf_tz tz;
    char err[160];
    if (kf_tz_load(&tz, tzspec, err, sizeof(err)) < 0) return -1;
    int64_t local = kf_days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec;
    *t = kf_tz_mktime(&tz, local);
    kf_tz_free(&tz);
    return 0;
}

/* ---- the calendar ---- */

static const char *parse_hhmm(const char *s, int *minutes) {
    int h = 0, nd = 0;
    while (isdigit((unsigned char)*s) && nd < 2) h = h * 10 + (*s++ - '0'), nd++;
    if (!nd || *s != ':') return NULL;
    s++;
    if (!isdigit((unsigned char)s[0]) || !isdigit((unsigned char)s[1])) return NULL;
    int m = (s[0] - '0') * 10 + (s[1] - '0');
    if (h > 24 || m > 59 || (h == 24 && m)) return NULL;
    *minutes = h * 60 + m;
    return s + 2;
}

/* Skips separators between ranges: spaces, ',', ';', '，' (U+FF0C), '、' (U+3001). */
static const char *skip_seps(const char *s) {
    for (;;) {
        if (*s == ' ' || *s == ',' || *s == ';' || *s == '\t') s++;
        else if (!strncmp(s, "\xEF\xBC\x8C", 3) || !strncmp(s, "\xE3\x80\x81", 3)) s += 3;
        else return s;
    }
}

int kf_cal_parse_ranges(const char *s, kf_range **r, uint8_t *n, char *err, size_t errlen) {
    const char *p = skip_seps(s);
    if (!strcmp(p, "closed") || !*p) return 0;
    uint8_t n0 = *n; /* on an error nothing is appended */
    while (*p) {
        int a, b;
        const char *q = parse_hhmm(p, &a);
        if (q) {
            while (*q == ' ') q++;
            if (*q == '-' || *q == '~') q++;
            else if (!strncmp(q, "\xE2\x80\x93", 3)) q += 3; /* en dash */
            else q = NULL;
        }
        if (q) {
            while (*q == ' ') q++;
            q = parse_hhmm(q, &b);
        }
        if (!q) {
            snprintf(err, errlen, "bad hours '%s' (want HH:MM-HH:MM, several separated by commas)", s);
            *n = n0;
            return -1;
        }
        if (a == 1440 || a == b) {
            snprintf(err, errlen, "bad hours '%s': a range must not be empty or start at 24:00", s);
            *n = n0;
            return -1;
        }
        if (*n == 32) {
            snprintf(err, errlen, "too many ranges in '%s'", s);
            *n = n0;
            return -1;
        }
        if (b == 0) b = 1440; /* "18:00-00:00" ends at midnight */
        *r = kf_realloc(*r, (size_t)(*n + 1) * sizeof(kf_range));
        (*r)[(*n)++] = (kf_range){(uint16_t)a, (uint16_t)b};
        p = skip_seps(q);
    }
    return 0;
}

static int add_days(const char *spec, int64_t **days, size_t *n, char *err, size_t errlen) {
    const char *dots = strstr(spec, "..");
    int64_t a, b;
    if (dots) {
        if (kf_parse_date(spec, (size_t)(dots - spec), &a) < 0 ||
            kf_parse_date(dots + 2, strlen(dots + 2), &b) < 0 || b < a || b - a > 366) {
            snprintf(err, errlen, "bad date range '%s' (want YYYY-MM-DD..YYYY-MM-DD)", spec);
            return -1;
        }
    } else if (kf_parse_date(spec, strlen(spec), &a) < 0) {
        snprintf(err, errlen, "bad date '%s' (want YYYY-MM-DD)", spec);
        return -1;
    } else {
        b = a;
    }
    for (int64_t d = a; d <= b; d++) {
        *days = kf_realloc(*days, (*n + 1) * sizeof(int64_t));
        (*days)[(*n)++] = d;
    }
    return 0;
}

int kf_cal_add_holidays(kf_calendar *c, const char *spec, const char *name, char *err,
                        size_t errlen) {
    int64_t *days = NULL;
    size_t n = 0;
    if (add_days(spec, &days, &n, err, errlen) < 0) return -1;
    c->holidays = kf_realloc(c->holidays, (c->nholidays + n) * sizeof(kf_holiday));
    for (size_t i = 0; i < n; i++) {
        kf_holiday *h = &c->holidays[c->nholidays++];
        h->day = days[i];
        snprintf(h->name, sizeof(h->name), "%s", name ? name : "");
    }
    kf_free(days);
    return 0;
}

int kf_cal_add_workdays(kf_calendar *c, const char *spec, char *err, size_t errlen) {
    return add_days(spec, &c->workdays, &c->nworkdays, err, errlen);
}

static int hol_cmp(const void *a, const void *b) {
    int64_t x = ((const kf_holiday *)a)->day, y = ((const kf_holiday *)b)->day;
    return x < y ? -1 : x > y;
}

static int day_cmp(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

void kf_cal_finish(kf_calendar *c) {
    if (c->nholidays) qsort(c->holidays, c->nholidays, sizeof(kf_holiday), hol_cmp);
    if (c->nworkdays) qsort(c->workdays, c->nworkdays, sizeof(int64_t), day_cmp);
}

void kf_cal_free(kf_calendar *c) {
    kf_tz_free(&c->tz);
    for (size_t i = 0; i < c->nweeks; i++)
        for (int d = 0; d < 7; d++) kf_free(c->weeks[i].r[d]);
    kf_free(c->weeks);
    kf_free(c->holidays);
    kf_free(c->workdays);
    memset(c, 0, sizeof(*c));
}

const kf_week *kf_cal_week(const kf_calendar *c, const char *group) {
    if (!c->nweeks) return NULL;
    if (group && *group)
        for (size_t i = 0; i < c->nweeks; i++)
            if (!strcmp(c->weeks[i].name, group)) return &c->weeks[i];
    for (size_t i = 0; i < c->nweeks; i++)
        if (!strcmp(c->weeks[i].name, "default")) return &c->weeks[i];
    return &c->weeks[0];
}

static const kf_holiday *holiday_of(const kf_calendar *c, int64_t day) {
    size_t a = 0, b = c->nholidays;
    while (a < b) {
        size_t m = (a + b) / 2;
        if (c->holidays[m].day < day) a = m + 1;
        else b = m;
    }
    return a < c->nholidays && c->holidays[a].day == day ? &c->holidays[a] : NULL;
}

static int is_workday(const kf_calendar *c, int64_t day) {
    return bsearch(&day, c->workdays, c->nworkdays, sizeof(int64_t), day_cmp) != NULL;
}

/* The ranges of one local day for a group, and the holiday closing it (if any). */
static const kf_range *day_ranges(const kf_calendar *c, const kf_week *w, int64_t day, uint8_t *n,
                                  const kf_holiday **hol) {
    *hol = NULL;
    if (is_workday(c, day)) {
        *n = w->n[w->makeup_wday];
        return w->r[w->makeup_wday];
    }
    const kf_holiday *h = w->ignore_holidays ? NULL : holiday_of(c, day);
    if (h) {
        *hol = h;
        *n = 0;
        return NULL;
    }
    int wd = kf_weekday(day);
    *n = w->n[wd];
    return w->r[wd];
}

int kf_cal_query(const kf_calendar *c, const char *group, int64_t t, kf_cal_info *info) {
    kf_cal_info tmp;
    if (!info) info = &tmp;
    memset(info, 0, sizeof(*info));
    const kf_week *w = c->has_hours ? kf_cal_week(c, group) : NULL;
    if (!w) {
        info->open = 1;
        return 1;
    }
    int64_t local = t + kf_tz_offset(&c->tz, t);
    int64_t day = floordiv(local, 86400);
    int minute = (int)((local - day * 86400) / 60);
    uint8_t n;
    const kf_holiday *hol, *hol_prev;
    const kf_range *r = day_ranges(c, w, day, &n, &hol);
    for (uint8_t i = 0; i < n; i++) {
        if (r[i].start < r[i].end ? (minute >= r[i].start && minute < r[i].end)
                                  : minute >= r[i].start) {
            info->open = 1;
            int64_t end_day = r[i].start < r[i].end ? day : day + 1;
            info->closes_at = kf_tz_mktime(&c->tz, end_day * 86400 + (int64_t)r[i].end * 60);
            return 1;
        }
    }
    const kf_range *pr = day_ranges(c, w, day - 1, &n, &hol_prev);
    for (uint8_t i = 0; i < n; i++) {
        if (pr[i].end <= pr[i].start && minute < pr[i].end) {
            info->open = 1;
            info->closes_at = kf_tz_mktime(&c->tz, day * 86400 + (int64_t)pr[i].end * 60);
            return 1;
        }
    }
    info->holiday = hol ? hol->name : NULL;
    /* next opening: the earliest range start after now, day by day */
    for (int64_t d = day; d < day + 400; d++) {
        const kf_holiday *h;
        const kf_range *rr = day_ranges(c, w, d, &n, &h);
        int64_t best = -1;
        for (uint8_t i = 0; i < n; i++) {
            int64_t s = d * 86400 + (int64_t)rr[i].start * 60;
            if (s > local && (best < 0 || s < best)) best = s;
        }
        if (best >= 0) {
            info->next_open = kf_tz_mktime(&c->tz, best);
            break;
        }
    }
    return 0;
}
