/* Leveled logging to stderr; the level is checked before any argument is evaluated. */
#ifndef KEFU_LOG_H
#define KEFU_LOG_H

enum { KF_LOG_DEBUG = 0, KF_LOG_INFO, KF_LOG_WARN, KF_LOG_ERROR, KF_LOG_OFF };

extern int kf_log_level;

#define kf_log(lvl, ...)                                  \
    do {                                                  \
        if ((lvl) >= kf_log_level) kf_log_write((lvl), __VA_ARGS__); \
    } while (0)
#define kf_debug(...) kf_log(KF_LOG_DEBUG, __VA_ARGS__)
#define kf_info(...) kf_log(KF_LOG_INFO, __VA_ARGS__)
#define kf_warn(...) kf_log(KF_LOG_WARN, __VA_ARGS__)
#define kf_error(...) kf_log(KF_LOG_ERROR, __VA_ARGS__)

/** Writes one line: time, pid, identity, level, message. Never call with secrets or unmasked
 * personal data (see kefu/mask.h). */
void kf_log_write(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/** Sets the identity printed on every line (e.g. the node id); copied. */
void kf_log_set_ident(const char *ident);

/** Parses "debug", "info", "warn", "error", "off"; -1 when unknown. */
int kf_log_parse_level(const char *s);

#endif
