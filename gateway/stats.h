/* Statistics read over the protocol (gateway/stats.c): stats.get, for supervisors and admins,
 * reads the per-day counters the worker keeps (docs/protocol.md, "Statistics"). */
#ifndef KEFU_GATEWAY_STATS_H
#define KEFU_GATEWAY_STATS_H

#include "request.h"

extern const gw_handler gw_handlers_stats[];

#endif
