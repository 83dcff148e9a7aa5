/* Ticket numbers CHANNEL-YYYYMMDD-NNN and the channel names they are built from. */
#include "kefu/ticket.h"

#include <stdio.h>
#include <string.h>

static int channel_char(unsigned char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
}

int kf_channel_valid(const char *channel) {
    if (!channel) return 0;
    size_t i = 0;
    for (; channel[i]; i++)
        if (i >= KF_CHANNEL_MAX || !channel_char((unsigned char)channel[i])) return 0;
    return i > 0;
}

/* Falls back to "00000000" when t cannot be converted or its year has more than four digits. */
void kf_ticket_day(time_t t, char day[9]) {
    struct tm tm;
    if (!localtime_r(&t, &tm) || tm.tm_year < -1900 || tm.tm_year > 9999 - 1900 ||
        strftime(day, 9, "%Y%m%d", &tm) != 8)
        memcpy(day, "00000000", 9);
}

/* Besides seq < 1 and a short buffer, an invalid channel or a day that is not eight digits
 * gives -1. On -1, out (when outlen > 0) holds an empty string. */
int kf_ticket_format(char *out, size_t outlen, const char *channel, const char day[9],
                     long long seq) {
    char upper[KF_CHANNEL_MAX + 1];

    if (!out || outlen == 0) return -1;
    out[0] = '\0';
    if (seq < 1 || !kf_channel_valid(channel) || !day) return -1;
    for (int i = 0; i < 8; i++)
        if (day[i] < '0' || day[i] > '9') return -1;

    size_t n = strlen(channel);
    for (size_t i = 0; i <= n; i++)
        upper[i] = (channel[i] >= 'a' && channel[i] <= 'z') ? (char)(channel[i] - 'a' + 'A')
                                                            : channel[i];
    int w = snprintf(out, outlen, "%s-%.8s-%03lld", upper, day, seq);
    if (w < 0 || (size_t)w >= outlen) {
        out[0] = '\0';
        return -1;
    }
    return w;
}

long long kf_ticket_number(long long counter, unsigned part, unsigned nparts) {
    if (counter < 1 || nparts == 0 || part >= nparts) return -1;
    /* below the mark of the single counters of earlier versions, so a day that an old gateway
     * numbers after a new one marked it can never meet these numbers */
    if (counter > (KF_TICKET_LEGACY_CLOSED - 1 - part) / nparts) return -1;
    return (counter - 1) * (long long)nparts + part + 1;
}
