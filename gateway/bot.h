/* The bots in the gateway: the rule set of `bots_dir` run on conversation events, per-conversation
 * bot state in Redis, replies stored and pushed like chat messages, handoff into the queue,
 * sensitive-issue alerts, hot reload (gateway/bot.c). */
#ifndef KEFU_GATEWAY_BOT_H
#define KEFU_GATEWAY_BOT_H

#include "gateway.h"

/** Loads the rule set (when bots_dir is set), starts the bot timers and hooks the message path
 * (request.h): new conversations then start in state "bot", and their opening and customer
 * messages run the rules. A rule set that does not load is logged; conversations then go to
 * humans until a reload succeeds. */
void gw_bot_start(void);
void gw_bot_stop(void);
/** SIGHUP: loads the rule set again; a set that fails keeps the previous one running. */
void gw_bot_reload(void);

/** Runs a no_agent or queue_wait event for a waiting conversation (from anywhere). */
void gw_bot_waiting_event(const char *conv, int no_agent, long long waited_s);

#endif
