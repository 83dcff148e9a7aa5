/* Agent-side requests: agent status and breaks, transfers, ratings, the conversation record,
 * supervisor monitoring and transfer policy (gateway/agent.c). */
#ifndef KEFU_GATEWAY_AGENT_H
#define KEFU_GATEWAY_AGENT_H

#include "kefu/service.h"
#include "request.h"

extern const gw_handler gw_handlers_agent[];

/** A conversation held by `agent` is over for it (closed, transferred away): drops it from the
 * agent's load and tells monitoring supervisors. Fire and forget. The load is in the staff
 * domain of the conversation's group, read from it first when there are staff domains. */
void gw_agent_release(const char *agent, const char *conv);
/** The same in a known staff domain (NULL: the default one). */
void gw_agent_release_in(const char *agent, const char *conv, const char *domain);

/** Starts and stops reading the staff domains the worker publishes (option staff_domains),
 * once a second; the last answer is kept while no domain's copy can be read. */
void gw_staff_start(void);
void gw_staff_stop(void);
/** The staff domain of a group (NULL or "": the default group) into out, which holds
 * KF_GROUP_MAX + 1 bytes; NULL while the published configuration was never read. */
const char *gw_staff_domain(const char *group, char *out);
/** The routing the worker published (routes, default_group, default_priority) as last read
 * from any staff domain's copy: 1, or 0 when never read. For conv.open while the {staff}
 * master is down. The strings stay valid until the next read. */
int gw_staff_routing(const char **routes, const char **group, const char **priority);
/** Every staff domain ("default" first) into out, at most max; the count. */
size_t gw_staff_domain_list(char (*out)[KF_GROUP_MAX + 1], size_t max);

/** Sends payload (stolen) to the supervisors in `monitors` (a JSON array of user ids, or an
 * empty object for none; borrowed). */
void gw_monitor_push(json_t *payload, const json_t *monitors);

#endif
