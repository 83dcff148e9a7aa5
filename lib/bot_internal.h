/* Internals shared by the bot engine's files: the keyword matcher (bot_match.c) and the business
 * calendar (bot_calendar.c; its time zones are kefu/tz.h). Unit tests include it directly. */
#ifndef KEFU_BOT_INTERNAL_H
#define KEFU_BOT_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "kefu/tz.h"

/* ---- keyword matcher: Aho-Corasick over normalized UTF-8 bytes ---- */

/* Lists a keyword can belong to within one entry. */
enum { KF_MATCH_ANY = 0, KF_MATCH_ALL = 1, KF_MATCH_NONE = 2 };

typedef struct kf_match kf_match;

/** A satisfied entry: every "all" keyword seen, at least one "any" keyword seen (when it has
 * any), no "none" keyword seen. score = the longest matched keyword in characters. */
typedef struct kf_match_hit {
    uint32_t owner, entry;
    uint32_t score;
} kf_match_hit;

kf_match *kf_match_new(void);
void kf_match_free(kf_match *m);
/** Adds a keyword (UTF-8, normalized here) to list `list` of entry (owner, entry). A leading or
 * trailing '*' drops the word-boundary check on that side; otherwise a keyword that starts (ends)
 * with an ASCII letter or digit matches only where the text has no ASCII letter or digit just
 * before (after) it. Entries must be added in (owner, entry) order: all keywords of one entry
 * consecutively. Returns 0, or -1 with a reason in err. */
int kf_match_add(kf_match *m, const char *kw, size_t len, uint32_t owner, uint32_t entry, int list,
                 char *err, size_t errlen);
/** Builds the automaton; call once after the last kf_match_add. */
void kf_match_build(kf_match *m);
size_t kf_match_npatterns(const kf_match *m);
/** Scans normalized text; fills hits (at most max, in entry order) and returns their number.
 * Uses scratch space inside m, so one scan at a time per matcher. */
size_t kf_match_scan(kf_match *m, const char *norm, size_t len, kf_match_hit *hits, size_t max);
/** One keyword against a text (both normalized here), same boundary rules; for ad hoc checks. */
int kf_match_contains(const char *text, size_t tlen, const char *kw, size_t klen);

/* time zones and civil dates: kefu/tz.h */

/* ---- business calendar ---- */

typedef struct kf_range {
    uint16_t start, end; /* minutes after local midnight; end <= start: runs past midnight */
} kf_range;

typedef struct kf_week {
    char name[48];            /* group name; "default" for the default hours */
    kf_range *r[7];           /* per weekday, 0 = Sunday */
    uint8_t n[7];
    int makeup_wday;          /* whose hours a make-up workday (调休) keeps; default Monday */
    int ignore_holidays;
} kf_week;

typedef struct kf_holiday {
    int64_t day;
    char name[64];
} kf_holiday;

typedef struct kf_calendar {
    kf_tz tz;
    int has_hours;            /* no hours declared: always open */
    kf_week *weeks;
    size_t nweeks;
    kf_holiday *holidays;     /* sorted by day */
    size_t nholidays;
    int64_t *workdays;        /* make-up workdays, sorted */
    size_t nworkdays;
} kf_calendar;

/** "09:00-18:00", "22:00-06:00", "9:00-12:00, 13:30-18:00", "00:00-24:00" -> ranges appended to
 * *r (kf_realloc'd). Returns 0, or -1 with a reason. */
int kf_cal_parse_ranges(const char *s, kf_range **r, uint8_t *n, char *err, size_t errlen);
/** Adds "YYYY-MM-DD" or "YYYY-MM-DD..YYYY-MM-DD" (at most 366 days) as holidays / workdays. */
int kf_cal_add_holidays(kf_calendar *c, const char *spec, const char *name, char *err, size_t errlen);
int kf_cal_add_workdays(kf_calendar *c, const char *spec, char *err, size_t errlen);
/** Sorts the day lists; call after the last add. */
void kf_cal_finish(kf_calendar *c);
void kf_cal_free(kf_calendar *c);
/** The hours of a group (NULL or unknown = "default", else the first declared). */
const kf_week *kf_cal_week(const kf_calendar *c, const char *group);

typedef struct kf_cal_info {
    int open;
    const char *holiday;  /* name of today's holiday when closed for it, else NULL */
    int64_t next_open;    /* when closed: next opening (unix s), 0 if none within 400 days */
    int64_t closes_at;    /* when open: end of the current range (unix s) */
} kf_cal_info;

/** Is the group open at unix time t? Fills info (may be NULL). Returns info->open. */
int kf_cal_query(const kf_calendar *c, const char *group, int64_t t, kf_cal_info *info);

#endif
