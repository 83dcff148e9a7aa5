/* Quality assurance requests: the daily sample of closed conversations and their reviews
 * (qa.list, qa.review; gateway/qa.c). */
#ifndef KEFU_GATEWAY_QA_H
#define KEFU_GATEWAY_QA_H

#include "request.h"

extern const gw_handler gw_handlers_qa[];

#endif
