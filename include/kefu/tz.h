/* Time zones and civil dates: the bots' business calendar (lib/bot_calendar.c) and the
 * worker's statistics, which count by local day and hour. */
#ifndef KEFU_TZ_H
#define KEFU_TZ_H

#include <stddef.h>
#include <stdint.h>

typedef struct kf_tz {
    int64_t *at;      /* transition times (unix s), ascending */
    uint8_t *idx;     /* offset index in effect from at[i] */
    int32_t *offs;    /* seconds east of UTC */
    size_t nat, noffs;
    int32_t fixed;    /* when nat == 0: the offset (or offs[0] when noffs) */
    char name[64];
} kf_tz;

/** "UTC", "Z", "+08:00", "-0530", "UTC+8", "GMT-3", an IANA name under /usr/share/zoneinfo
 * (read from its TZif file; beyond its last transition the last offset holds), or "local"
 * ($TZ, else /etc/localtime, else UTC). Returns 0, or -1 with a reason. */
int kf_tz_load(kf_tz *tz, const char *spec, char *err, size_t errlen);
void kf_tz_free(kf_tz *tz);
/** Seconds east of UTC in effect at unix time t. */
int32_t kf_tz_offset(const kf_tz *tz, int64_t t);
/** Unix time of a local wall-clock time (the earlier one when ambiguous). */
int64_t kf_tz_mktime(const kf_tz *tz, int64_t local_s);

/* Civil dates (proleptic Gregorian), days since 1970-01-01. */
int64_t kf_days_from_civil(int64_t y, int m, int d);
void kf_civil_from_days(int64_t days, int64_t *y, int *m, int *d);
/** 0 = Sunday .. 6 = Saturday. */
int kf_weekday(int64_t days);
/** "YYYY-MM-DD" -> days; -1 on a bad date. */
int kf_parse_date(const char *s, size_t len, int64_t *days);

#endif
