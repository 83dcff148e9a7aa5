/* The bot engine: Lua rule sets (auto-reply, FAQ, business calendar, handoff) run in a sandbox.
 * A pure library: an event, the conversation's facts, its saved bot state and a clock go in; a
 * list of actions and the new state come out. No sockets, no Redis. See docs/bots.md. */
#ifndef KEFU_BOT_H
#define KEFU_BOT_H

#include <stddef.h>
#include <stdint.h>

typedef struct kf_bot kf_bot;

/** Engine limits and defaults, per rule set (one lua_State). */
typedef struct kf_bot_config {
    long long instructions; /* per event; 0 = 200000. Loading the files may use 50 times that */
    size_t memory_bytes;    /* cap on the lua_State's heap; 0 = 16 MiB */
    const char *timezone;   /* when the rule set's calendar names none: "UTC", "+08:00",
                               "Asia/Shanghai", "local" ($TZ or /etc/localtime); NULL = "local" */
} kf_bot_config;

/** Events a rule set reacts to. */
typedef enum {
    KF_BOT_OPENED = 0, /* the customer opened the conversation */
    KF_BOT_MESSAGE,    /* a customer message while the bot has the conversation */
    KF_BOT_NO_AGENT,   /* handed off, but no agent of the group is available */
    KF_BOT_QUEUE_WAIT, /* handed off and still waiting after a declared number of seconds */
    KF_BOT_OFF_HOURS,  /* run by the engine itself before opened/message when closed */
    KF_BOT__EVENTS
} kf_bot_event_type;

/** "opened", "message", ...; NULL past the last. */
const char *kf_bot_event_name(kf_bot_event_type t);
/** Parses an event name; -1 when unknown. */
int kf_bot_event_parse(const char *name);

/** What the engine is told about the conversation. Every string may be NULL (seen as ""). */
typedef struct kf_bot_conv {
    const char *id, *ticket, *channel, *topic, *customer, *customer_name;
    const char *group, *priority, *category, *tags; /* tags: comma-separated */
    int level;
} kf_bot_conv;

typedef struct kf_bot_event {
    kf_bot_event_type type;
    int64_t now_ms;         /* the clock the rules see (injectable: tests, the CLI) */
    const char *text;       /* KF_BOT_MESSAGE: the customer's text (UTF-8) */
    size_t text_len;
    long long waited_s;     /* KF_BOT_QUEUE_WAIT: seconds since the handoff */
    kf_bot_conv conv;
    const char *state;      /* the saved state (msgpack) from the previous event, or NULL */
    size_t state_len;
} kf_bot_event;

typedef enum {
    KF_BOT_ACT_REPLY,     /* value: text to send as the bot */
    KF_BOT_ACT_SET,       /* key: category | priority | group; value */
    KF_BOT_ACT_TAG,       /* value: one tag */
    KF_BOT_ACT_SENSITIVE, /* value: reason; supervisors are alerted */
    KF_BOT_ACT_HANDOFF,   /* key: reason; to a human, into the group's queue */
    KF_BOT_ACT_FINISH,    /* value: resolution (resolved | unresolved); closes without a human */
} kf_bot_action_kind;

/** "reply", "set", "tag", "sensitive", "handoff", "finish". */
const char *kf_bot_action_name(kf_bot_action_kind k);

typedef struct kf_bot_action {
    kf_bot_action_kind kind;
    char *key;   /* malloc'd or NULL */
    char *value; /* malloc'd or NULL */
} kf_bot_action;

typedef enum {
    KF_BOT_OK = 0,
    KF_BOT_FAIL_ERROR,  /* a rule raised an error or produced an invalid action */
    KF_BOT_FAIL_BUDGET, /* the instruction budget ran out (a loop) */
    KF_BOT_FAIL_MEMORY, /* the memory cap was hit */
} kf_bot_failure;

/** The outcome of one event. On a failure the actions are only a handoff (reason "bot_error")
 * for events in which the bot has the conversation (opened, message, off_hours), none
 * otherwise, and the state is the one given. */
typedef struct kf_bot_result {
    kf_bot_action *acts;
    size_t nacts;
    char *state; /* the new state (msgpack), malloc'd; always set after kf_bot_run */
    size_t state_len;
    kf_bot_failure failure;
    char error[512];      /* failure: message with file:line of the rule */
    unsigned ran;         /* bit per kf_bot_event_type whose handlers ran */
    long long instructions; /* approximate VM instructions used (multiples of 1000) */
} kf_bot_result;

/** Loads every *.lua file of dir (sorted by name) into a fresh sandboxed lua_State, compiled
 * once. Returns NULL with a reason (file:line) in err when the directory, a file or a
 * declaration is bad; cfg may be NULL. */
kf_bot *kf_bot_load(const char *dir, const kf_bot_config *cfg, char *err, size_t errlen);
void kf_bot_free(kf_bot *b);

/** The rule set's name (bot { name = ... }; default "bot"). */
const char *kf_bot_name(const kf_bot *b);
/** Number of rule files loaded. */
int kf_bot_nfiles(const kf_bot *b);
/** 1 when at least one handler exists for the event. */
int kf_bot_handles(const kf_bot *b, kf_bot_event_type t);
/** The distinct queue_wait thresholds (seconds, ascending) declared by on("queue_wait", {after=N}). */
size_t kf_bot_queue_waits(const kf_bot *b, const long long **secs);

/** Runs one event. Always fills res (free it with kf_bot_result_free); returns 0, or -1 on a
 * failure (res->failure, res->error). A failure never leaves the engine unusable. */
int kf_bot_run(kf_bot *b, const kf_bot_event *ev, kf_bot_result *res);
void kf_bot_result_free(kf_bot_result *res);

/** Calendar query: 1 when the group (NULL = default) is open at unix time t, 0 when closed.
 * holiday (may be NULL) receives the holiday's name when closed for one; *next_open (may be
 * NULL) the next opening time, 0 when none within a year or when open. */
int kf_bot_is_open(kf_bot *b, const char *group, int64_t t, char *holiday, size_t holiday_len,
                   int64_t *next_open);

/** The time zone of the rule set's calendar, as a spec kf_bot_parse_time accepts. */
const char *kf_bot_timezone(const kf_bot *b);
/** strftime of unix time t in the calendar's zone; returns the length written. */
size_t kf_bot_strftime(const kf_bot *b, char *buf, size_t len, const char *fmt, int64_t t);

/** Counters since load. */
typedef struct kf_bot_stats {
    uint64_t runs, errors, budget_kills, memory_kills;
    size_t memory_bytes; /* heap of the lua_State now */
} kf_bot_stats;
void kf_bot_get_stats(const kf_bot *b, kf_bot_stats *st);

/** Text normalization used for matching: ASCII lower case, full-width ASCII forms folded to
 * ASCII, U+3000 to a space, runs of white space to one space, trimmed. out must hold len+1
 * bytes; returns the length written (never more than len). */
size_t kf_bot_normalize(const char *in, size_t len, char *out);

/** Parses "YYYY-MM-DD[ HH:MM[:SS]]" (or with 'T') as local time in a zone spec (see
 * kf_bot_config.timezone), or "@<unix seconds>"; returns 0 and *t, or -1. */
int kf_bot_parse_time(const char *s, const char *tz, int64_t *t);

#endif
