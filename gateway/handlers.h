/* The conversation requests (gateway/handlers.c) and the dispatcher that walks every request
 * module's table. What request modules share is in request.h. */
#ifndef KEFU_GATEWAY_HANDLERS_H
#define KEFU_GATEWAY_HANDLERS_H

#include <stddef.h>

#include "gateway.h"
#include "request.h"

extern const gw_handler gw_handlers_core[];

/** msg.send with validated fields: stores it, answers, routes the push. Steals x (its conv
 * set) and text (malloc'd, text_len bytes plus a NUL). */
void gw_msg_send(req_ctx *x, char *text, size_t text_len, const char *cid);

#endif
