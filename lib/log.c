/* Leveled logging to stderr with a per-process identity. */
#include "kefu/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

int kf_log_level = KF_LOG_INFO;
static char log_ident[64] = "kefu";

void kf_log_set_ident(const char *ident) {
    snprintf(log_ident, sizeof(log_ident), "%s", ident);
}

int kf_log_parse_level(const char *s) {
    static const char *names[] = {"debug", "info", "warn", "error", "off"};
    for (int i = 0; i < 5; i++)
        if (strcmp(s, names[i]) == 0) return i;
    return -1;
}

void kf_log_write(int level, const char *fmt, ...) {
    static const char marks[] = "DIWE";
    char line[2048], ts[32];
    struct timeval tv;
    struct tm tm;
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
    int n = snprintf(line, sizeof(line), "%s.%03dZ %d %s %c ", ts, (int)(tv.tv_usec / 1000),
                     (int)getpid(), log_ident, marks[level & 3]);
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
    va_end(ap);
    size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
    if (len > sizeof(line) - 2) len = sizeof(line) - 2;
    line[len++] = '\n';
    /* One write per line so lines of several processes sharing stderr never interleave. */
    ssize_t w = write(STDERR_FILENO, line, len);
    (void)w;
}
