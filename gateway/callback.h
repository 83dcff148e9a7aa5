/* Call-back tasks: a customer left mid-conversation and did not come back (worker/callback.c
 * creates the task); supervisors list, assign and complete them, agents list and complete
 * theirs (callback.list, callback.assign, callback.done; gateway/callback.c). */
#ifndef KEFU_GATEWAY_CALLBACK_H
#define KEFU_GATEWAY_CALLBACK_H

#include "request.h"

extern const gw_handler gw_handlers_callback[];

#endif
