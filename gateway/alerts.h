/* alert.list: the alerts kept by the worker (worker/alerts.c), for supervisors and admins who
 * were not connected when they were raised (gateway/alerts.c). */
#ifndef KEFU_GATEWAY_ALERTS_H
#define KEFU_GATEWAY_ALERTS_H

#include "request.h"

extern const gw_handler gw_handlers_alerts[];

#endif
