/* Ticket numbers: CHANNEL-YYYYMMDD-NNN, one sequence per channel per day. */
#ifndef KEFU_TICKET_H
#define KEFU_TICKET_H

#include <stddef.h>
#include <time.h>

/** Largest channel name accepted (bytes). Channels are [a-z0-9_-]{1,KF_CHANNEL_MAX}. */
#define KF_CHANNEL_MAX 24

/** Returns 1 when channel is a valid channel name, else 0. */
int kf_channel_valid(const char *channel);

/** Writes the day part "YYYYMMDD" of t in the process's local time zone (TZ) into day[9]. */
void kf_ticket_day(time_t t, char day[9]);

/** Formats "<CHANNEL upper-cased>-<day>-<seq, at least 3 digits>" into out.
 * Returns the length written, or -1 when it does not fit or seq < 1. */
int kf_ticket_format(char *out, size_t outlen, const char *channel, const char day[9],
                     long long seq);

#endif
