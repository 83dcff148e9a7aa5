/* Ticket numbers: CHANNEL-YYYYMMDD-NNN, unique per channel and day. NNN comes from one of
 * KF_PARTS counters per channel-day (kf_ticket_number), or, on a day that an earlier version
 * started numbering, from the single counter of those versions (docs/architecture.md). */
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

/** Value a gateway stores in a channel-day's single counter of earlier versions when that day
 * has no such counter yet: it marks the day as numbered by the partitioned counters (a value
 * at least this big), and a gateway of an earlier version that still increments it hands out
 * numbers above 10^9, which the partitioned counters never reach. */
#define KF_TICKET_LEGACY_CLOSED 1000000000LL

/** Ticket number of the counter-th ticket (counter >= 1) of partition part (< KF_PARTS of
 * nparts): (counter - 1) * nparts + part + 1, so that partitions never give the same number
 * and each partition's numbers increase. Returns -1 when the arguments are out of range or the
 * number would reach KF_TICKET_LEGACY_CLOSED. */
long long kf_ticket_number(long long counter, unsigned part, unsigned nparts);

#endif
