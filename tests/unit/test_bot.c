/* Unit tests for the bot engine: loading and load errors, the rule API (FAQ, rules, patterns,
 * templates, state, handoff, finish, queue_wait), the calendar under an injected clock, the
 * sandbox (io, os.execute, require, bytecode, string.rep bomb, endless loops, globals, __gc),
 * and that a failed event leaves the engine usable. Also runs the retail example. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <msgpack.h>

#include "kefu/bot.h"

static char tmpdir[256];

static void rmdir_files(const char *dir) {
    char cmd[600];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

/* A fresh rule directory holding one file (name, text). */
static const char *rules1(const char *name, const char *text) {
    rmdir_files(tmpdir);
    assert_int_equal(mkdir(tmpdir, 0700), 0);
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    return tmpdir;
}

static void add_file(const char *name, const char *text) {
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static kf_bot *load(const char *text) {
    char err[1024];
    kf_bot *b = kf_bot_load(rules1("10_rules.lua", text), NULL, err, sizeof(err));
    if (!b) fail_msg("load failed: %s", err);
    return b;
}

static void load_fails(const char *text, const char *want) {
    char err[1024];
    kf_bot *b = kf_bot_load(rules1("10_rules.lua", text), NULL, err, sizeof(err));
    if (b) fail_msg("loaded, expected an error containing '%s'", want);
    if (!strstr(err, want)) fail_msg("error '%s' does not contain '%s'", err, want);
}

typedef struct conv {
    char *state;
    size_t state_len;
    int64_t now_ms;
    const char *group;
} conv;

/* Runs an event; returns the result (caller frees) and keeps the state in cv. */
static kf_bot_result run(kf_bot *b, conv *cv, kf_bot_event_type t, const char *text) {
    kf_bot_event ev = {.type = t,
                       .now_ms = cv->now_ms ? cv->now_ms : 1795000000000LL,
                       .text = text,
                       .text_len = text ? strlen(text) : 0,
                       .waited_s = t == KF_BOT_QUEUE_WAIT && text ? atoll(text) : 0,
                       .conv = {.id = "c1", .ticket = "WEB-20261123-001", .channel = "web",
                                .customer = "u1", .customer_name = "Ann", .group = cv->group},
                       .state = cv->state,
                       .state_len = cv->state_len};
    if (t == KF_BOT_QUEUE_WAIT) ev.text = NULL, ev.text_len = 0;
    kf_bot_result r;
    kf_bot_run(b, &ev, &r);
    free(cv->state);
    cv->state = malloc(r.state_len ? r.state_len : 1);
    memcpy(cv->state, r.state, r.state_len);
    cv->state_len = r.state_len;
    return r;
}

static const char *reply_of(const kf_bot_result *r, int i) {
    for (size_t k = 0; k < r->nacts; k++)
        if (r->acts[k].kind == KF_BOT_ACT_REPLY && i-- == 0) return r->acts[k].value;
    return NULL;
}

static int has_act(const kf_bot_result *r, kf_bot_action_kind kind, const char *key, const char *value) {
    for (size_t k = 0; k < r->nacts; k++) {
        const kf_bot_action *a = &r->acts[k];
        if (a->kind != kind) continue;
        if (key && (!a->key || strcmp(a->key, key))) continue;
        if (value && (!a->value || strcmp(a->value, value))) continue;
        return 1;
    }
    return 0;
}

static void test_faq_and_rules(void **state) {
    (void)state;
    kf_bot *b = load(
        "bot { name = 'Helper' }\n"
        "vars { shop = 'Kefu' }\n"
        "templates { hi = 'Hello {customer_name}, welcome to {shop} ({ticket}) by {bot_name}' }\n"
        "on('opened', function(c) c:say('hi') end)\n"
        "rule { name = 'vip', keywords = {'vip'}, priority = 'high', tags = {'vip', 'gold'}, continue = true }\n"
        "faq {\n"
        "  { q = {'退货', 'return'}, a = '退货说明' },\n"
        "  { q = {'退货运费'}, a = '运费说明' },\n"
        "  { q = 'ship*', all = 'when', a = 'ships in 24h' },\n"
        "}\n"
        "on('message', function(c, text) c:reply('?' .. text) end)\n");
    assert_string_equal(kf_bot_name(b), "Helper");
    assert_true(kf_bot_handles(b, KF_BOT_OPENED));
    assert_false(kf_bot_handles(b, KF_BOT_NO_AGENT));
    conv cv = {0};
    kf_bot_result r = run(b, &cv, KF_BOT_OPENED, NULL);
    assert_int_equal(r.failure, KF_BOT_OK);
    assert_string_equal(reply_of(&r, 0), "Hello Ann, welcome to Kefu (WEB-20261123-001) by Helper");
    kf_bot_result_free(&r);
    r = run(b, &cv, KF_BOT_MESSAGE, "我想退货");
    assert_string_equal(reply_of(&r, 0), "退货说明");
    assert_int_equal(r.nacts, 1);
    kf_bot_result_free(&r);
    r = run(b, &cv, KF_BOT_MESSAGE, "退货运费谁出？");      /* longest keyword wins */
    assert_string_equal(reply_of(&r, 0), "运费说明");
    kf_bot_result_free(&r);
    r = run(b, &cv, KF_BOT_MESSAGE, "When will it SHIP?");
    assert_string_equal(reply_of(&r, 0), "ships in 24h");
    kf_bot_result_free(&r);
    r = run(b, &cv, KF_BOT_MESSAGE, "shipping");               /* 'when' missing: fallback */
    assert_string_equal(reply_of(&r, 0), "?shipping");
    kf_bot_result_free(&r);
    r = run(b, &cv, KF_BOT_MESSAGE, "VIP return please");      /* rule continues to the faq */
    assert_true(has_act(&r, KF_BOT_ACT_SET, "priority", "high"));
    assert_true(has_act(&r, KF_BOT_ACT_TAG, NULL, "vip"));
    assert_true(has_act(&r, KF_BOT_ACT_TAG, NULL, "gold"));
    assert_string_equal(reply_of(&r, 0), "退货说明");
    kf_bot_result_free(&r);
    free(cv.state);
    kf_bot_free(b);
}

static void test_state_handoff_finish(void **state) {
    (void)state;
    kf_bot *b = load(
        "rule { pattern = 'order (%d+)', run = function(c, text, n)\n"
        "  c.state.order = n; c.state.list = {1, 2, {x = true}}; c:reply('noted {order}', {order = n}) end }\n"
        "rule { keywords = 'human', handoff = {reason = 'asked', group = 'billing'}, reply = 'ok' }\n"
        "rule { keywords = 'bye', run = function(c) c:finish('unresolved') end }\n"
        "rule { keywords = 'complain*', sensitive = 'complaint', category = 'complaint', reply = 'sorry' }\n"
        "on('message', function(c, text) c:reply('order={order} n={n}', {order = c.state.order or '-', n = c.messages}) end)\n"
        "on('queue_wait', {after = 30}, function(c) c:reply('30: ' .. c.waited) end)\n"
        "on('queue_wait', {after = 90}, 'ninety')\n");
    const long long *w;
    assert_int_equal(kf_bot_queue_waits(b, &w), 2);
    assert_int_equal(w[0], 30);
    assert_int_equal(w[1], 90);
    conv cv = {0};
    kf_bot_result r = run(b, &cv, KF_BOT_MESSAGE, "my order 12345");
    assert_string_equal(reply_of(&r, 0), "noted 12345");
    kf_bot_result_free(&r);
    /* the state is msgpack with the rules' table under "u" */
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    assert_int_equal(msgpack_unpack_next(&u, cv.state, cv.state_len, NULL), MSGPACK_UNPACK_SUCCESS);
    assert_int_equal(u.data.type, MSGPACK_OBJECT_MAP);
    msgpack_unpacked_destroy(&u);
    r = run(b, &cv, KF_BOT_MESSAGE, "hello");
    assert_string_equal(reply_of(&r, 0), "order=12345 n=2");
    kf_bot_result_free(&r);
    r = run(b, &cv, KF_BOT_MESSAGE, "I complained twice");
    assert_true(has_act(&r, KF_BOT_ACT_SENSITIVE, NULL, "complaint"));
    assert_true(has_act(&r, KF_BOT_ACT_SET, "category", "complaint"));
    kf_bot_result_free(&r);
    r = run(b, &cv, KF_BOT_MESSAGE, "a human please");
    assert_true(has_act(&r, KF_BOT_ACT_SET, "group", "billing"));
    assert_true(has_act(&r, KF_BOT_ACT_HANDOFF, "asked", NULL));
    assert_string_equal(reply_of(&r, 0), "ok");
    kf_bot_result_free(&r);
    /* queue_wait: each threshold once */
    r = run(b, &cv, KF_BOT_QUEUE_WAIT, "30");
    assert_string_equal(reply_of(&r, 0), "30: 30");
    kf_bot_result_free(&r);
    r = run(b, &cv, KF_BOT_QUEUE_WAIT, "30");
    assert_int_equal(r.nacts, 0);
    kf_bot_result_free(&r);
    r = run(b, &cv, KF_BOT_QUEUE_WAIT, "90");
    assert_string_equal(reply_of(&r, 0), "ninety");
    assert_null(reply_of(&r, 1));
    kf_bot_result_free(&r);
    r = run(b, &cv, KF_BOT_MESSAGE, "bye");
    assert_true(has_act(&r, KF_BOT_ACT_FINISH, NULL, "unresolved"));
    kf_bot_result_free(&r);
    /* a corrupt state is ignored, not fatal */
    free(cv.state);
    cv.state = strdup("\xc1garbage");
    cv.state_len = 8;
    r = run(b, &cv, KF_BOT_MESSAGE, "hello");
    assert_int_equal(r.failure, KF_BOT_OK);
    assert_string_equal(reply_of(&r, 0), "order=- n=1");
    kf_bot_result_free(&r);
    free(cv.state);
    kf_bot_free(b);
}

/* UTC+8; weekdays 09:00-18:00; holiday 2026-10-01..07; make-up workday Saturday 2026-10-10. */
static const char *calendar_rules =
    "calendar { timezone = '+08:00', hours = { weekdays = '09:00-18:00' },\n"
    "  holidays = { ['2026-10-01..2026-10-07'] = 'National Day' }, workdays = { '2026-10-10' } }\n"
    "on('off_hours', function(c) c:reply(c.holiday and 'holiday {holiday} until {next_open}' or 'closed until {next_open}') end)\n"
    "on('opened', {hours = 'open'}, 'welcome')\n"
    "on('message', function(c) c:reply(c.off_hours and 'later' or 'now') end)\n";

static int64_t local_ms(const char *s) {
    int64_t t;
    assert_int_equal(kf_bot_parse_time(s, "+08:00", &t), 0);
    return t * 1000;
}

static void test_off_hours_clock(void **state) {
    (void)state;
    kf_bot *b = load(calendar_rules);
    conv cv = {.now_ms = local_ms("2026-11-23 10:00")}; /* Monday, open */
    kf_bot_result r = run(b, &cv, KF_BOT_OPENED, NULL);
    assert_string_equal(reply_of(&r, 0), "welcome");
    assert_false(r.ran & (1u << KF_BOT_OFF_HOURS));
    kf_bot_result_free(&r);
    free(cv.state);
    memset(&cv, 0, sizeof(cv));
    cv.now_ms = local_ms("2026-11-23 19:30");           /* Monday evening */
    r = run(b, &cv, KF_BOT_OPENED, NULL);
    assert_true(r.ran & (1u << KF_BOT_OFF_HOURS));
    assert_string_equal(reply_of(&r, 0), "closed until 2026-11-24 09:00");
    assert_null(reply_of(&r, 1));                          /* no welcome */
    kf_bot_result_free(&r);
    r = run(b, &cv, KF_BOT_MESSAGE, "hi");                 /* notice only once */
    assert_string_equal(reply_of(&r, 0), "later");
    assert_null(reply_of(&r, 1));
    kf_bot_result_free(&r);
    cv.now_ms = local_ms("2026-11-24 09:05");              /* open again */
    r = run(b, &cv, KF_BOT_MESSAGE, "hi");
    assert_string_equal(reply_of(&r, 0), "now");
    kf_bot_result_free(&r);
    cv.now_ms = local_ms("2026-11-24 18:05");              /* closed again: a new notice */
    r = run(b, &cv, KF_BOT_MESSAGE, "hi");
    assert_string_equal(reply_of(&r, 0), "closed until 2026-11-25 09:00");
    kf_bot_result_free(&r);
    cv.now_ms = local_ms("2026-11-24 17:00");
    r = run(b, &cv, KF_BOT_MESSAGE, "hi");
    kf_bot_result_free(&r);
    cv.now_ms = local_ms("2026-11-24 12:00");
    free(cv.state);
    memset(&cv, 0, sizeof(cv));
    cv.now_ms = local_ms("2026-10-03 10:00");              /* holiday */
    r = run(b, &cv, KF_BOT_OPENED, NULL);
    assert_string_equal(reply_of(&r, 0), "holiday National Day until 2026-10-08 09:00");
    kf_bot_result_free(&r);
    free(cv.state);
    memset(&cv, 0, sizeof(cv));
    cv.now_ms = local_ms("2026-10-10 10:00");              /* make-up Saturday */
    r = run(b, &cv, KF_BOT_OPENED, NULL);
    assert_string_equal(reply_of(&r, 0), "welcome");
    kf_bot_result_free(&r);
    free(cv.state);
    memset(&cv, 0, sizeof(cv));
    cv.now_ms = local_ms("2026-10-17 10:00");              /* ordinary Saturday */
    r = run(b, &cv, KF_BOT_OPENED, NULL);
    assert_string_equal(reply_of(&r, 0), "closed until 2026-10-19 09:00");
    kf_bot_result_free(&r);
    char hol[64];
    int64_t next;
    assert_false(kf_bot_is_open(b, NULL, local_ms("2026-10-01 12:00") / 1000, hol, sizeof(hol), &next));
    assert_string_equal(hol, "National Day");
    assert_int_equal(next, local_ms("2026-10-08 09:00") / 1000);
    char when[64];
    kf_bot_strftime(b, when, sizeof(when), "%Y-%m-%d %H:%M", next);
    assert_string_equal(when, "2026-10-08 09:00");
    free(cv.state);
    kf_bot_free(b);
}

/* Each escape attempt runs in its own rule; the event fails (handoff fallback), is counted, and
 * the engine answers the next event normally. */
static void expect_refused(kf_bot *b, const char *word, kf_bot_failure kind, const char *msg) {
    conv cv = {0};
    kf_bot_result r = run(b, &cv, KF_BOT_MESSAGE, word);
    if (r.failure != kind) fail_msg("%s: failure %d (%s), want %d", word, r.failure, r.error, kind);
    if (msg && !strstr(r.error, msg)) fail_msg("%s: error '%s' lacks '%s'", word, r.error, msg);
    assert_int_equal(r.nacts, 1);
    assert_int_equal(r.acts[0].kind, KF_BOT_ACT_HANDOFF);
    assert_string_equal(r.acts[0].key, "bot_error");
    kf_bot_result_free(&r);
    r = run(b, &cv, KF_BOT_MESSAGE, "fine");
    assert_int_equal(r.failure, KF_BOT_OK);
    assert_string_equal(reply_of(&r, 0), "fine");
    kf_bot_result_free(&r);
    free(cv.state);
}

static void test_sandbox(void **state) {
    (void)state;
    kf_bot_config cfg = {.instructions = 100000, .memory_bytes = 8u << 20};
    char err[1024];
    rules1("10_evil.lua",
           "local function try(w, f) rule { keywords = w, run = function(c) f(c); c:reply(w .. ' ran') end } end\n"
           "try('io', function() io.open('/etc/passwd') end)\n"
           "try('exec', function() os.execute('touch /tmp/kefu-bot-pwned') end)\n"
           "try('getenv', function() return os.getenv('HOME') end)\n"
           "try('require', function() require('os') end)\n"
           "try('bytecode', function() assert(load(string.char(27) .. 'Lua'))() end)\n"
           "try('dump', function() string.dump(print) end)\n"
           "try('bomb', function() local s = string.rep('x', 1 << 30) end)\n"
           "try('grow', function() local t = {} for i = 1, 1e9 do t[i] = ('x'):rep(65536) .. i end end)\n"
           "try('loop', function() while true do end end)\n"
           "try('pcallloop', function() while true do pcall(function() while true do end end) end end)\n"
           "try('recurse', function() local function f() return f() + 1 end f() end)\n"
           "try('global', function() leaked = 1 end)\n"
           "try('gc', function() setmetatable({}, {__gc = function() end}) end)\n"
           "try('strmeta', function() getmetatable('').__index = nil end)\n"
           "try('debug', function() debug.getregistry() end)\n"
           "try('coroutine', function() coroutine.create(print) end)\n"
           "try('state', function(c) c.state.f = print end)\n"
           "try('cycle', function(c) local t = {} t.t = t c.state.t = t end)\n"
           "try('huge', function(c) c.state.s = ('x'):rep(100000) end)\n"
           "on('message', function(c, t) c:reply(t) end)\n");
    kf_bot *b = kf_bot_load(tmpdir, &cfg, err, sizeof(err));
    if (!b) fail_msg("%s", err);
    expect_refused(b, "io", KF_BOT_FAIL_ERROR, "io.open is not available");
    expect_refused(b, "exec", KF_BOT_FAIL_ERROR, "os.execute is not available");
    assert_int_equal(access("/tmp/kefu-bot-pwned", F_OK), -1);
    expect_refused(b, "getenv", KF_BOT_FAIL_ERROR, "not available");
    expect_refused(b, "require", KF_BOT_FAIL_ERROR, "require is not available");
    expect_refused(b, "bytecode", KF_BOT_FAIL_ERROR, "10_evil.lua:6");
    expect_refused(b, "dump", KF_BOT_FAIL_ERROR, NULL);
    expect_refused(b, "bomb", KF_BOT_FAIL_MEMORY, "10_evil.lua:8");
    expect_refused(b, "grow", KF_BOT_FAIL_MEMORY, "memory cap");
    expect_refused(b, "loop", KF_BOT_FAIL_BUDGET, "10_evil.lua:10: instruction budget");
    expect_refused(b, "pcallloop", KF_BOT_FAIL_BUDGET, "instruction budget");
    expect_refused(b, "recurse", KF_BOT_FAIL_BUDGET, NULL);
    expect_refused(b, "global", KF_BOT_FAIL_ERROR, "cannot create or change globals");
    expect_refused(b, "gc", KF_BOT_FAIL_ERROR, "__gc");
    expect_refused(b, "strmeta", KF_BOT_FAIL_ERROR, NULL);
    expect_refused(b, "debug", KF_BOT_FAIL_ERROR, "debug.getregistry is not available");
    expect_refused(b, "coroutine", KF_BOT_FAIL_ERROR, "not available");
    expect_refused(b, "state", KF_BOT_FAIL_ERROR, "not a function");
    expect_refused(b, "cycle", KF_BOT_FAIL_ERROR, "deeper");
    expect_refused(b, "huge", KF_BOT_FAIL_ERROR, "larger than");
    kf_bot_stats st;
    kf_bot_get_stats(b, &st);
    assert_int_equal(st.errors, 19);
    assert_int_equal(st.budget_kills, 3);
    assert_int_equal(st.memory_kills, 2);
    assert_true(st.memory_bytes < (8u << 20));
    kf_bot_free(b);
}

static void test_load_errors(void **state) {
    (void)state;
    load_fails("rule { keywords = 'a' reply = 'x' }", "10_rules.lua:1:");
    load_fails("rule { on = 'mesage', reply = 'x' }", "unknown event 'mesage'");
    load_fails("\n\nrule { keywords = 'x', priority = 'urgent' }", "10_rules.lua:3: priority must be");
    load_fails("faq { { q = 'a' } }", "needs a (the answer)");
    /* a declaration given no table names the rule file's line, not the prelude's */
    load_fails("\nbot 'helper'", "10_rules.lua:2: bot expects a table: bot { name = '...' }");
    load_fails("vars(3)", "10_rules.lua:1: vars expects a table of names and values");
    load_fails("\n\n\nfaq 'x'", "10_rules.lua:4: faq expects a list");
    load_fails("calendar { timezone = 'Mars/Base' }", "unknown time zone");
    load_fails("calendar { hours = { weekdays = '9-18' } }", "bad hours '9-18'");
    load_fails("calendar { holidays = { '2026-02-30' } }", "bad date '2026-02-30'");
    load_fails("while true do end", "instruction budget");
    load_fails("x = ('x'):rep(1 << 26)", "memory cap");
    load_fails("print(undefined_name)", "unknown name 'undefined_name'");
    load_fails("on('queue_wait', function() end)", "needs after");
    load_fails("os.exit(1)", "os.exit is not available");
    char err[512];
    assert_null(kf_bot_load("/nonexistent-kefu-dir", NULL, err, sizeof(err)));
    assert_non_null(strstr(err, "cannot open"));
    rmdir_files(tmpdir);
    assert_int_equal(mkdir(tmpdir, 0700), 0);
    assert_null(kf_bot_load(tmpdir, NULL, err, sizeof(err)));
    assert_non_null(strstr(err, "no .lua rule files"));
}

/* Files load in name order into one environment; a later file sees an earlier one's helpers. */
static void test_several_files(void **state) {
    (void)state;
    rules1("20_use.lua", "on('message', function(c, t) c:reply(shout(t)) end)\n");
    add_file("10_lib.lua", "function shout(s) return s:upper() .. '!' end\n");
    add_file("README.txt", "not a rule file");
    char err[512];
    kf_bot *b = kf_bot_load(tmpdir, NULL, err, sizeof(err));
    if (!b) fail_msg("%s", err);
    assert_int_equal(kf_bot_nfiles(b), 2);
    conv cv = {0};
    kf_bot_result r = run(b, &cv, KF_BOT_MESSAGE, "hey");
    assert_string_equal(reply_of(&r, 0), "HEY!");
    kf_bot_result_free(&r);
    free(cv.state);
    kf_bot_free(b);
}

static void test_retail_example(void **state) {
    (void)state;
    /* the repository root, from this file's path */
    char dir[1024];
    snprintf(dir, sizeof(dir), "%s", __FILE__);
    char *p = strstr(dir, "tests/unit/test_bot.c");
    assert_non_null(p);
    snprintf(p, sizeof(dir) - (size_t)(p - dir), "lua/bots/retail");
    char err[1024];
    kf_bot *b = kf_bot_load(dir, NULL, err, sizeof(err));
    if (!b) fail_msg("%s", err);
    conv cv = {.now_ms = 0};
    assert_int_equal(kf_bot_parse_time("2026-11-23 10:00", "Asia/Shanghai", &cv.now_ms), 0);
    cv.now_ms *= 1000;
    kf_bot_result r = run(b, &cv, KF_BOT_OPENED, NULL);
    assert_non_null(strstr(reply_of(&r, 0), "欢迎光临"));
    kf_bot_result_free(&r);
    r = run(b, &cv, KF_BOT_MESSAGE, "请问怎么退货");
    assert_non_null(strstr(reply_of(&r, 0), "7天无理由退货"));
    kf_bot_result_free(&r);
    r = run(b, &cv, KF_BOT_MESSAGE, "Where is my parcel?");
    assert_non_null(strstr(reply_of(&r, 0), "Track your parcel"));
    kf_bot_result_free(&r);
    r = run(b, &cv, KF_BOT_MESSAGE, "我要投诉你们");
    assert_true(has_act(&r, KF_BOT_ACT_SET, "priority", "high"));
    assert_true(has_act(&r, KF_BOT_ACT_SENSITIVE, NULL, NULL));
    assert_true(has_act(&r, KF_BOT_ACT_HANDOFF, "complaint", NULL));
    kf_bot_result_free(&r);
    free(cv.state);
    kf_bot_free(b);
}

int main(void) {
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/kefu-test-bot-%d", (int)getpid());
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_faq_and_rules),   cmocka_unit_test(test_state_handoff_finish),
        cmocka_unit_test(test_off_hours_clock), cmocka_unit_test(test_sandbox),
        cmocka_unit_test(test_load_errors),     cmocka_unit_test(test_several_files),
        cmocka_unit_test(test_retail_example),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    rmdir_files(tmpdir);
    return rc;
}
