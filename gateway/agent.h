/* Agent-side requests: agent status and breaks, transfers, ratings, the conversation record,
 * supervisor monitoring and transfer policy (gateway/agent.c). */
#ifndef KEFU_GATEWAY_AGENT_H
#define KEFU_GATEWAY_AGENT_H

#include "request.h"

extern const gw_handler gw_handlers_agent[];

/** A conversation held by `agent` is over for it (closed, transferred away): drops it from the
 * agent's load and tells monitoring supervisors. Fire and forget. */
void gw_agent_release(const char *agent, const char *conv);

/** Sends payload (stolen) to the supervisors in `monitors` (a JSON array of user ids, or an
 * empty object for none; borrowed). */
void gw_monitor_push(json_t *payload, const json_t *monitors);

#endif
