/* The bot engine: one sandboxed lua_State per rule set, files compiled once, every call through
 * a protected call with a message handler, an instruction budget (count hook) and a heap cap
 * (our lua_Alloc). Events in, actions and the new per-conversation state (msgpack) out. */
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <msgpack.h>

#include "bot_internal.h"
#include "kefu/alloc.h"
#include "kefu/bot.h"
#include "kefu/log.h"
#include "kefu/utf8.h"

#define HOOK_STEP 1000          /* VM instructions between two budget checks */
#define LOAD_BUDGET_FACTOR 50   /* loading the files may use this many event budgets */
#define STATE_MAX 16384         /* bytes of one conversation's encoded state */
#define STATE_DEPTH 8           /* nesting of tables in the state */
#define MAX_FILES 256
#define FILE_MAX (1 << 20)
#define MAX_ACTS 64
#define MAX_PRINTS 20           /* print() lines logged per event */

extern const char kf_bot_prelude[];
extern const size_t kf_bot_prelude_len;

static const char *const event_names[KF_BOT__EVENTS] = {"opened", "message", "no_agent",
                                                        "queue_wait", "off_hours"};
static const char *const action_names[] = {"reply", "set", "tag", "sensitive", "handoff", "finish"};

const char *kf_bot_event_name(kf_bot_event_type t) {
    return (unsigned)t < KF_BOT__EVENTS ? event_names[t] : NULL;
}

int kf_bot_event_parse(const char *name) {
    for (int i = 0; i < KF_BOT__EVENTS; i++)
        if (!strcmp(event_names[i], name)) return i;
    return -1;
}

const char *kf_bot_action_name(kf_bot_action_kind k) {
    return (unsigned)k < sizeof(action_names) / sizeof(action_names[0]) ? action_names[k] : "?";
}

struct kf_bot {
    lua_State *L;
    /* limits */
    size_t mem_used, mem_limit;
    long long run_budget, budget, count;
    int budget_hit, mem_hit;
    int running;                /* inside kf_bot_run/kf_bot_load: frames may be inspected */
    char mem_where[128];        /* rule line that asked for the refused memory */
    /* what the rules see */
    int64_t now_ms;             /* the event's clock; real time while loading */
    kf_match *match;            /* owned by a userdata in the state */
    kf_calendar *cal;           /* owned by a userdata in the state */
    int ref_dispatch, ref_env;
    char name[65];
    int nfiles;
    unsigned handles;           /* bit per event */
    long long *waits;
    size_t nwaits;
    kf_bot_stats st;
    /* the event being run */
    const kf_bot_event *ev;
    kf_bot_result *res;
    msgpack_unpacked in;
    int in_ok;
    msgpack_sbuffer out;
    char *norm;
    size_t normcap;
    kf_match_hit *hits;
    size_t hitcap;
    int prints;
};

static kf_bot *bot_of(lua_State *L) { return *(kf_bot **)lua_getextraspace(L); }

/* "file:line" of the innermost rule-file frame from level on, or "" (reads the stack only). */
static const char *rule_where(lua_State *L, int level, char *buf, size_t len) {
    lua_Debug ar;
    buf[0] = '\0';
    for (; lua_getstack(L, level, &ar); level++) {
        if (lua_getinfo(L, "Sl", &ar) && ar.currentline > 0 && ar.source[0] == '@') {
            snprintf(buf, len, "%s:%d", ar.short_src, ar.currentline);
            break;
        }
    }
    return buf;
}

/* ---- the heap cap and the instruction budget ---- */

/* Refuses growth beyond the cap; Lua then collects garbage, retries once and raises a memory
 * error. Shrinking never fails, as Lua requires. */
static void *bot_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
    kf_bot *b = ud;
    size_t old = ptr ? osize : 0;
    if (nsize == 0) {
        free(ptr);
        b->mem_used -= old;
        return NULL;
    }
    if (nsize > old && b->mem_used - old + nsize > b->mem_limit) {
        if (b->running && !b->mem_where[0]) rule_where(b->L, 0, b->mem_where, sizeof(b->mem_where));
        return NULL;
    }
    void *p = realloc(ptr, nsize);
    if (p) b->mem_used = b->mem_used - old + nsize;
    return p;
}

static void budget_hook(lua_State *L, lua_Debug *ar) {
    (void)ar;
    kf_bot *b = bot_of(L);
    b->count += HOOK_STEP;
    if (b->count > b->budget) {
        b->budget_hit = 1;
        char at[128];
        /* in a hook, level 0 is the function that was running */
        lua_pushfstring(L, "%s: instruction budget of %I exceeded (an endless loop?)",
                        rule_where(L, 0, at, sizeof(at)), (lua_Integer)b->budget);
        lua_error(L);
    }
}

/* Message handler: the message plus up to four rule-file frames ("file:line"). Never runs Lua
 * code (no __tostring), so a hostile error object cannot loop here. */
static int msgh(lua_State *L) {
    const char *msg = lua_type(L, 1) == LUA_TSTRING ? lua_tostring(L, 1) : NULL;
    if (!msg) msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    char fr[4][160];
    lua_Debug ar;
    int frames = 0;
    for (int lvl = 1; frames < 4 && lua_getstack(L, lvl, &ar); lvl++) {
        if (!lua_getinfo(L, "Sl", &ar) || ar.currentline <= 0 || ar.source[0] != '@') continue;
        snprintf(fr[frames++], sizeof(fr[0]), "%s:%d", ar.short_src, ar.currentline);
    }
    /* a single frame the message already starts with says nothing new */
    if (frames == 1 && !strncmp(msg, fr[0], strlen(fr[0]))) frames = 0;
    luaL_Buffer buf;
    luaL_buffinit(L, &buf);
    luaL_addstring(&buf, msg);
    for (int i = 0; i < frames; i++) {
        luaL_addstring(&buf, i ? " < " : " [at ");
        luaL_addstring(&buf, fr[i]);
    }
    if (frames) luaL_addstring(&buf, "]");
    luaL_pushresult(&buf);
    return 1;
}

/* pcall/xpcall for the rules: a budget or memory kill is not theirs to catch. */
static int finish_pcall(lua_State *L, int status, int extra) {
    kf_bot *b = bot_of(L);
    if (status == LUA_ERRMEM) b->mem_hit = 1;
    if (status != LUA_OK && (b->budget_hit || b->mem_hit)) return lua_error(L);
    lua_pushboolean(L, status == LUA_OK);
    lua_replace(L, extra); /* over the slot kept free below the results */
    return lua_gettop(L) - extra + 1;
}

static int sb_pcall(lua_State *L) {
    luaL_checkany(L, 1);
    lua_pushboolean(L, 1);
    lua_insert(L, 1); /* slot for the status */
    int status = lua_pcall(L, lua_gettop(L) - 2, LUA_MULTRET, 0);
    return finish_pcall(L, status, 1);
}

static int sb_xpcall(lua_State *L) {
    int n = lua_gettop(L);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    lua_pushboolean(L, 1);
    lua_pushvalue(L, 1);
    lua_rotate(L, 3, 2); /* f, handler, true, f, args... */
    int status = lua_pcall(L, n - 2, LUA_MULTRET, 2);
    return finish_pcall(L, status, 3);
}

/* setmetatable that refuses finalizers: a __gc could run a loop at any allocation. */
static int sb_setmetatable(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    int t = lua_type(L, 2);
    luaL_argexpected(L, t == LUA_TNIL || t == LUA_TTABLE, 2, "nil or table");
    if (t == LUA_TTABLE && lua_getfield(L, 2, "__gc") != LUA_TNIL)
        return luaL_error(L, "__gc metamethods are not available to rules");
    lua_settop(L, 2);
    if (luaL_getmetafield(L, 1, "__metatable") != LUA_TNIL)
        return luaL_error(L, "cannot change a protected metatable");
    lua_settop(L, 2);
    lua_setmetatable(L, 1);
    return 1;
}

/* load of text only, into the rules' environment unless one is given. */
static int sb_load(lua_State *L) {
    kf_bot *b = bot_of(L);
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    const char *name = luaL_optstring(L, 2, "=(load)");
    const char *mode = luaL_optstring(L, 3, "t");
    if (strcmp(mode, "t") != 0) return luaL_error(L, "load: only text chunks (mode \"t\")");
    if (luaL_loadbufferx(L, s, len, name, "t") != LUA_OK) {
        lua_pushnil(L);
        lua_insert(L, -2);
        return 2;
    }
    if (!lua_isnoneornil(L, 4)) lua_pushvalue(L, 4);
    else lua_rawgeti(L, LUA_REGISTRYINDEX, b->ref_env);
    lua_setupvalue(L, -2, 1);
    return 1;
}

static int sb_unavailable(lua_State *L) {
    return luaL_error(L, "%s is not available to rules (%s)", lua_tostring(L, lua_upvalueindex(1)),
                      lua_tostring(L, lua_upvalueindex(2)));
}

/* __index of the io, debug, package, coroutine and os stand-ins. */
static int sb_unavailable_field(lua_State *L) {
    const char *k = lua_type(L, 2) == LUA_TSTRING ? lua_tostring(L, 2) : "?";
    return luaL_error(L, "%s.%s is not available to rules (%s)", lua_tostring(L, lua_upvalueindex(1)),
                      k, lua_tostring(L, lua_upvalueindex(2)));
}

/* Sets on the table at the top a metatable whose __index refuses every other field. */
static void refuse_fields(lua_State *L, const char *name, const char *why) {
    lua_createtable(L, 0, 2);
    lua_pushstring(L, name);
    lua_pushstring(L, why);
    lua_pushcclosure(L, sb_unavailable_field, 2);
    lua_setfield(L, -2, "__index");
    lua_pushliteral(L, "locked");
    lua_setfield(L, -2, "__metatable");
    lua_setmetatable(L, -2);
}

static const char *where_of(lua_State *L, int level, char *buf, size_t len) {
    lua_Debug ar;
    for (; lua_getstack(L, level, &ar); level++) {
        if (lua_getinfo(L, "Sl", &ar) && ar.currentline > 0) {
            snprintf(buf, len, "%s:%d", ar.short_src, ar.currentline);
            return buf;
        }
    }
    snprintf(buf, len, "?");
    return buf;
}

static int sb_print(lua_State *L) {
    kf_bot *b = bot_of(L);
    if (b->prints++ >= MAX_PRINTS) return 0;
    luaL_Buffer buf;
    luaL_buffinit(L, &buf);
    int n = lua_gettop(L);
    for (int i = 1; i <= n; i++) {
        if (i > 1) luaL_addchar(&buf, '\t');
        luaL_tolstring(L, i, NULL);
        luaL_addvalue(&buf);
    }
    luaL_pushresult(&buf);
    char at[128];
    kf_info("bot %s: print at %s: %.300s", b->name, where_of(L, 1, at, sizeof(at)), lua_tostring(L, -1));
    return 0;
}

/* ---- time in the calendar's zone ---- */

static int64_t now_s(const kf_bot *b) {
    return b->now_ms >= 0 ? b->now_ms / 1000 : (int64_t)time(NULL);
}

static void local_tm(const kf_bot *b, int64_t t, int utc, struct tm *tm) {
    int32_t off = utc ? 0 : kf_tz_offset(&b->cal->tz, t);
    int64_t local = t + off, day = local / 86400 - (local % 86400 < 0), secs = local - day * 86400;
    int64_t y;
    int m, d;
    kf_civil_from_days(day, &y, &m, &d);
    memset(tm, 0, sizeof(*tm));
    tm->tm_year = (int)(y - 1900);
    tm->tm_mon = m - 1;
    tm->tm_mday = d;
    tm->tm_hour = (int)(secs / 3600);
    tm->tm_min = (int)(secs / 60 % 60);
    tm->tm_sec = (int)(secs % 60);
    tm->tm_wday = kf_weekday(day);
    tm->tm_yday = (int)(day - kf_days_from_civil(y, 1, 1));
    tm->tm_gmtoff = off;
    tm->tm_zone = utc ? "UTC" : b->cal->tz.name;
}

static int64_t opt_time(lua_State *L, int idx) {
    kf_bot *b = bot_of(L);
    if (lua_isnoneornil(L, idx)) return now_s(b);
    lua_Number n = luaL_checknumber(L, idx);
    if (!(n > -1e13 && n < 1e13)) luaL_argerror(L, idx, "time out of range");
    return (int64_t)floor(n);
}

static int k_strftime(lua_State *L) {
    kf_bot *b = bot_of(L);
    size_t flen;
    const char *fmt = luaL_checklstring(L, 1, &flen);
    int64_t t = opt_time(L, 2);
    int utc = 0;
    if (fmt[0] == '!') fmt++, utc = 1;
    if (flen > 200) return luaL_argerror(L, 1, "format too long");
    struct tm tm;
    local_tm(b, t, utc, &tm);
    if (!strcmp(fmt, "*t")) {
        lua_createtable(L, 0, 9);
        lua_pushinteger(L, tm.tm_year + 1900), lua_setfield(L, -2, "year");
        lua_pushinteger(L, tm.tm_mon + 1), lua_setfield(L, -2, "month");
        lua_pushinteger(L, tm.tm_mday), lua_setfield(L, -2, "day");
        lua_pushinteger(L, tm.tm_hour), lua_setfield(L, -2, "hour");
        lua_pushinteger(L, tm.tm_min), lua_setfield(L, -2, "min");
        lua_pushinteger(L, tm.tm_sec), lua_setfield(L, -2, "sec");
        lua_pushinteger(L, tm.tm_wday + 1), lua_setfield(L, -2, "wday");
        lua_pushinteger(L, tm.tm_yday + 1), lua_setfield(L, -2, "yday");
        lua_pushboolean(L, 0), lua_setfield(L, -2, "isdst");
        return 1;
    }
    char out[512];
    size_t n = strftime(out, sizeof(out), fmt, &tm);
    lua_pushlstring(L, out, n);
    return 1;
}

static int field_int(lua_State *L, const char *k, int def) {
    int isnum;
    lua_getfield(L, 1, k);
    lua_Integer v = lua_tointegerx(L, -1, &isnum);
    lua_pop(L, 1);
    if (!isnum) {
        if (def < 0) luaL_error(L, "os.time: field '%s' missing or not an integer", k);
        return def;
    }
    if (v < -100000 || v > 100000) luaL_error(L, "os.time: field '%s' out of range", k);
    return (int)v;
}

static int k_time(lua_State *L) {
    kf_bot *b = bot_of(L);
    if (lua_isnoneornil(L, 1)) {
        lua_pushinteger(L, now_s(b));
        return 1;
    }
    luaL_checktype(L, 1, LUA_TTABLE);
    int y = field_int(L, "year", -1), mo = field_int(L, "month", -1), d = field_int(L, "day", -1);
    int h = field_int(L, "hour", 12), mi = field_int(L, "min", 0), s = field_int(L, "sec", 0);
    int64_t days = kf_days_from_civil(y, 1, 1) + 0;
    /* normalize months then days, like mktime */
    int64_t yy = y + (mo - 1) / 12 - ((mo - 1) % 12 < 0);
    int mm = (int)(((mo - 1) % 12 + 12) % 12) + 1;
    days = kf_days_from_civil(yy, mm, 1) + d - 1;
    int64_t local = days * 86400 + (int64_t)h * 3600 + (int64_t)mi * 60 + s;
    lua_pushinteger(L, kf_tz_mktime(&b->cal->tz, local));
    return 1;
}

static int k_clock(lua_State *L) {
    lua_pushnumber(L, (lua_Number)clock() / CLOCKS_PER_SEC);
    return 1;
}

static int k_difftime(lua_State *L) {
    lua_pushnumber(L, luaL_checknumber(L, 1) - luaL_optnumber(L, 2, 0));
    return 1;
}

static int k_is_open(lua_State *L) {
    kf_bot *b = bot_of(L);
    const char *group = luaL_optstring(L, 1, NULL);
    int64_t t = opt_time(L, 2);
    kf_cal_info info;
    kf_cal_query(b->cal, group, t, &info);
    lua_pushboolean(L, info.open);
    if (info.holiday) lua_pushstring(L, info.holiday);
    else lua_pushnil(L);
    if (!info.open && info.next_open) lua_pushinteger(L, info.next_open);
    else lua_pushnil(L);
    return 3;
}

/* ---- text helpers ---- */

static char *scratch(kf_bot *b, size_t n) {
    if (n + 1 > b->normcap) {
        b->normcap = n + 1 > 2 * b->normcap ? n + 1 : 2 * b->normcap;
        b->norm = kf_realloc(b->norm, b->normcap);
    }
    return b->norm;
}

static int k_normalize(lua_State *L) {
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    char *out = scratch(bot_of(L), len);
    size_t n = kf_bot_normalize(s, len, out);
    lua_pushlstring(L, out, n);
    return 1;
}

static int k_has(lua_State *L) {
    size_t len, kl;
    const char *s = luaL_checklstring(L, 1, &len);
    if (lua_type(L, 2) == LUA_TTABLE) {
        lua_Integer n = luaL_len(L, 2);
        for (lua_Integer i = 1; i <= n; i++) {
            lua_rawgeti(L, 2, i);
            const char *k = lua_tolstring(L, -1, &kl);
            if (k && kf_match_contains(s, len, k, kl)) {
                lua_pushvalue(L, -1);
                return 1;
            }
            lua_pop(L, 1);
        }
        lua_pushboolean(L, 0);
        return 1;
    }
    const char *k = luaL_checklstring(L, 2, &kl);
    lua_pushboolean(L, kf_match_contains(s, len, k, kl));
    return 1;
}

static int k_len(lua_State *L) {
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    lua_pushinteger(L, (lua_Integer)kf_utf8_len(s, len));
    return 1;
}

/* text.sub(s, i [, j]): by characters, negative indexes from the end, like string.sub. */
static int k_sub(lua_State *L) {
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    lua_Integer n = (lua_Integer)kf_utf8_len(s, len);
    lua_Integer i = luaL_checkinteger(L, 2), j = luaL_optinteger(L, 3, -1);
    if (i < 0) i = n + i + 1 > 0 ? n + i + 1 : 1;
    if (i == 0) i = 1;
    if (j < 0) j = n + j + 1;
    if (j > n) j = n;
    if (i > j) {
        lua_pushliteral(L, "");
        return 1;
    }
    size_t a = len, e = len;
    lua_Integer ch = 0;
    for (size_t k = 0; k < len; k++) {
        if (((unsigned char)s[k] & 0xC0) == 0x80) continue;
        ch++;
        if (ch == i) a = k;
        if (ch == j + 1) {
            e = k;
            break;
        }
    }
    lua_pushlstring(L, s + a, e - a);
    return 1;
}

static int k_trim(lua_State *L) {
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    /* trim only: keep case and width, cut white space (and U+3000) at both ends */
    size_t a = 0, e = len;
    for (;;) {
        if (a < e && strchr(" \t\r\n\v\f", s[a])) a++;
        else if (e - a >= 3 && !memcmp(s + a, "\xE3\x80\x80", 3)) a += 3;
        else break;
    }
    for (;;) {
        if (e > a && strchr(" \t\r\n\v\f", s[e - 1])) e--;
        else if (e - a >= 3 && !memcmp(s + e - 3, "\xE3\x80\x80", 3)) e -= 3;
        else break;
    }
    lua_pushlstring(L, s + a, e - a);
    return 1;
}

/* ---- declarations the prelude forwards to C ---- */

static int k_where(lua_State *L) {
    char buf[256];
    lua_pushstring(L, where_of(L, (int)luaL_optinteger(L, 1, 1), buf, sizeof(buf)));
    return 1;
}

static int k_keyword(lua_State *L) {
    kf_bot *b = bot_of(L);
    lua_Integer owner = luaL_checkinteger(L, 1), entry = luaL_checkinteger(L, 2),
                list = luaL_checkinteger(L, 3);
    size_t len;
    const char *kw = luaL_checklstring(L, 4, &len);
    char err[160];
    if (owner < 1 || entry < 1 || list < 0 || list > 2) return luaL_error(L, "bad keyword owner");
    if (kf_match_add(b->match, kw, len, (uint32_t)owner, (uint32_t)entry, (int)list, err,
                     sizeof(err)) < 0) {
        lua_pushnil(L);
        lua_pushstring(L, err);
        return 2;
    }
    lua_pushboolean(L, 1);
    return 1;
}

static const char *const wday_keys[7] = {"sun", "mon", "tue", "wed", "thu", "fri", "sat"};

static int wday_parse(const char *s) {
    for (int i = 0; i < 7; i++)
        if (!strcmp(wday_keys[i], s)) return i;
    return -1;
}

/* One value of a week spec: "HH:MM-HH:MM[, ...]", a list of them, false or "closed". */
static int ranges_of(lua_State *L, int idx, kf_range **r, uint8_t *n, char *err, size_t errlen) {
    kf_free(*r);
    *r = NULL;
    *n = 0;
    int t = lua_type(L, idx);
    if (t == LUA_TBOOLEAN && !lua_toboolean(L, idx)) return 0;
    if (t == LUA_TSTRING) return kf_cal_parse_ranges(lua_tostring(L, idx), r, n, err, errlen);
    if (t == LUA_TTABLE) {
        lua_Integer len = luaL_len(L, idx);
        for (lua_Integer i = 1; i <= len; i++) {
            lua_rawgeti(L, idx, i);
            if (lua_type(L, -1) != LUA_TSTRING) {
                lua_pop(L, 1);
                snprintf(err, errlen, "hours lists must hold texts like \"09:00-18:00\"");
                return -1;
            }
            int rc = kf_cal_parse_ranges(lua_tostring(L, -1), r, n, err, errlen);
            lua_pop(L, 1);
            if (rc < 0) return -1;
        }
        return 0;
    }
    snprintf(err, errlen, "hours must be a text like \"09:00-18:00\", a list of them, or false");
    return -1;
}

/* Week spec at idx: keys daily < weekdays/weekend < mon..sun, makeup, ignore_holidays. */
static int week_parse(lua_State *L, int idx, const char *name, int makeup_default, kf_week *w,
                      char *err, size_t errlen) {
    memset(w, 0, sizeof(*w));
    snprintf(w->name, sizeof(w->name), "%s", name);
    w->makeup_wday = makeup_default;
    char e2[200];
    static const char *const order[] = {"daily", "weekdays", "weekend", "sun", "mon", "tue",
                                        "wed", "thu", "fri", "sat"};
    /* unknown keys are mistakes worth reporting */
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
        int ok = k && (wday_parse(k) >= 0 || !strcmp(k, "daily") || !strcmp(k, "weekdays") ||
                       !strcmp(k, "weekend") || !strcmp(k, "makeup") || !strcmp(k, "ignore_holidays"));
        lua_pop(L, 1);
        if (!ok) {
            lua_pop(L, 1);
            snprintf(err, errlen, "%s: unknown key '%s' (daily, weekdays, weekend, mon..sun, makeup, ignore_holidays)",
                     name, k ? k : "?");
            return -1;
        }
    }
    for (size_t o = 0; o < sizeof(order) / sizeof(order[0]); o++) {
        if (lua_getfield(L, idx, order[o]) == LUA_TNIL) {
            lua_pop(L, 1);
            continue;
        }
        kf_range *r = NULL;
        uint8_t n = 0;
        if (ranges_of(L, lua_gettop(L), &r, &n, e2, sizeof(e2)) < 0) {
            lua_pop(L, 1);
            snprintf(err, errlen, "%s.%s: %s", name, order[o], e2);
            return -1;
        }
        lua_pop(L, 1);
        for (int d = 0; d < 7; d++) {
            int hit = !strcmp(order[o], "daily") ||
                      (!strcmp(order[o], "weekdays") && d >= 1 && d <= 5) ||
                      (!strcmp(order[o], "weekend") && (d == 0 || d == 6)) ||
                      !strcmp(order[o], wday_keys[d]);
            if (!hit) continue;
            kf_free(w->r[d]);
            w->r[d] = n ? kf_malloc(n * sizeof(kf_range)) : NULL;
            if (n) memcpy(w->r[d], r, n * sizeof(kf_range));
            w->n[d] = n;
        }
        kf_free(r);
    }
    if (lua_getfield(L, idx, "makeup") == LUA_TSTRING) {
        int d = wday_parse(lua_tostring(L, -1));
        if (d < 0) {
            lua_pop(L, 1);
            snprintf(err, errlen, "%s.makeup must be a weekday (mon..sun)", name);
            return -1;
        }
        w->makeup_wday = d;
    }
    lua_pop(L, 1);
    lua_getfield(L, idx, "ignore_holidays");
    w->ignore_holidays = lua_toboolean(L, -1);
    lua_pop(L, 1);
    return 0;
}

static int week_of(lua_State *L, int idx, const char *name, int makeup_default, kf_week *w,
                   char *err, size_t errlen) {
    if (week_parse(L, idx, name, makeup_default, w, err, errlen) == 0) return 0;
    for (int d = 0; d < 7; d++) kf_free(w->r[d]);
    return -1;
}

static int days_of(lua_State *L, int idx, kf_calendar *c, int holidays, char *err, size_t errlen) {
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        const char *spec = NULL, *name = "";
        if (lua_type(L, -2) == LUA_TNUMBER && lua_type(L, -1) == LUA_TSTRING) {
            spec = lua_tostring(L, -1);
        } else if (lua_type(L, -2) == LUA_TSTRING && holidays &&
                   (lua_type(L, -1) == LUA_TSTRING || lua_type(L, -1) == LUA_TBOOLEAN)) {
            spec = lua_tostring(L, -2);
            if (lua_type(L, -1) == LUA_TSTRING) name = lua_tostring(L, -1);
        } else {
            lua_pop(L, 2);
            snprintf(err, errlen, holidays ? "holidays: list dates \"YYYY-MM-DD\" (or ranges \"A..B\"), or map them to names"
                                           : "workdays: list dates \"YYYY-MM-DD\" (or ranges \"A..B\")");
            return -1;
        }
        int rc = holidays ? kf_cal_add_holidays(c, spec, name, err, errlen)
                          : kf_cal_add_workdays(c, spec, err, errlen);
        lua_pop(L, 1);
        if (rc < 0) {
            lua_pop(L, 1);
            return -1;
        }
    }
    return 0;
}

/* calendar { timezone, hours, groups, holidays, workdays, makeup }; true, or nil + reason. */
static int k_calendar(lua_State *L) {
    kf_bot *b = bot_of(L);
    luaL_checktype(L, 1, LUA_TTABLE);
    char err[300];
    kf_calendar *c = b->cal;
    if (c->has_hours || c->nholidays || c->nworkdays) {
        lua_pushnil(L);
        lua_pushliteral(L, "declared twice");
        return 2;
    }
    static const char *const known[] = {"timezone", "hours", "groups", "holidays", "workdays", "makeup", NULL};
    lua_pushnil(L);
    while (lua_next(L, 1)) {
        int ok = 0;
        if (lua_type(L, -2) == LUA_TSTRING)
            for (int i = 0; known[i]; i++) ok |= !strcmp(known[i], lua_tostring(L, -2));
        lua_pop(L, 1);
        if (!ok) {
            lua_pop(L, 1);
            lua_pushnil(L);
            lua_pushliteral(L, "unknown key (timezone, hours, groups, holidays, workdays, makeup)");
            return 2;
        }
    }
    if (lua_getfield(L, 1, "timezone") != LUA_TNIL) {
        kf_tz tz;
        if (lua_type(L, -1) != LUA_TSTRING || kf_tz_load(&tz, lua_tostring(L, -1), err, sizeof(err)) < 0) {
            if (lua_type(L, -1) != LUA_TSTRING) snprintf(err, sizeof(err), "timezone must be a text");
            goto fail;
        }
        kf_tz_free(&c->tz);
        c->tz = tz;
    }
    lua_pop(L, 1);
    int makeup = 1;
    if (lua_getfield(L, 1, "makeup") != LUA_TNIL) {
        makeup = lua_type(L, -1) == LUA_TSTRING ? wday_parse(lua_tostring(L, -1)) : -1;
        if (makeup < 0) {
            snprintf(err, sizeof(err), "makeup must be a weekday (mon..sun) whose hours make-up workdays keep");
            goto fail;
        }
    }
    lua_pop(L, 1);
    kf_week w;
    if (lua_getfield(L, 1, "hours") != LUA_TNIL) {
        if (lua_type(L, -1) != LUA_TTABLE) {
            snprintf(err, sizeof(err), "hours must be a table like { weekdays = \"09:00-18:00\" }");
            goto fail;
        }
        if (week_of(L, lua_gettop(L), "hours", makeup, &w, err, sizeof(err)) < 0) goto fail;
        snprintf(w.name, sizeof(w.name), "default");
        c->weeks = kf_realloc(c->weeks, (c->nweeks + 1) * sizeof(kf_week));
        c->weeks[c->nweeks++] = w;
    }
    lua_pop(L, 1);
    if (lua_getfield(L, 1, "groups") != LUA_TNIL) {
        int gi = lua_gettop(L);
        if (lua_type(L, gi) != LUA_TTABLE) {
            snprintf(err, sizeof(err), "groups must map group names to hours");
            goto fail;
        }
        lua_pushnil(L);
        while (lua_next(L, gi)) {
            if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TTABLE ||
                lua_rawlen(L, -2) >= sizeof(w.name)) {
                lua_pop(L, 2);
                snprintf(err, sizeof(err), "groups must map group names to hours tables");
                goto fail;
            }
            char gname[64];
            snprintf(gname, sizeof(gname), "groups.%s", lua_tostring(L, -2));
            if (week_of(L, lua_gettop(L), gname, makeup, &w, err, sizeof(err)) < 0) {
                lua_pop(L, 2);
                goto fail;
            }
            snprintf(w.name, sizeof(w.name), "%s", lua_tostring(L, -2));
            c->weeks = kf_realloc(c->weeks, (c->nweeks + 1) * sizeof(kf_week));
            c->weeks[c->nweeks++] = w;
            lua_pop(L, 1);
        }
    }
    lua_pop(L, 1);
    c->has_hours = c->nweeks > 0;
    if (lua_getfield(L, 1, "holidays") != LUA_TNIL) {
        if (lua_type(L, -1) != LUA_TTABLE) {
            snprintf(err, sizeof(err), "holidays must be a list of dates or a map of dates to names");
            goto fail;
        }
        if (days_of(L, lua_gettop(L), c, 1, err, sizeof(err)) < 0) goto fail;
    }
    lua_pop(L, 1);
    if (lua_getfield(L, 1, "workdays") != LUA_TNIL) {
        if (lua_type(L, -1) != LUA_TTABLE) {
            snprintf(err, sizeof(err), "workdays must be a list of dates");
            goto fail;
        }
        if (days_of(L, lua_gettop(L), c, 0, err, sizeof(err)) < 0) goto fail;
    }
    lua_pop(L, 1);
    kf_cal_finish(c);
    lua_pushboolean(L, 1);
    return 1;
fail:
    lua_pushnil(L);
    lua_pushstring(L, err);
    return 2;
}

/* ---- userdata owning the matcher and the calendar (freed with the state) ---- */

typedef struct {
    kf_match *m;
} match_box;

static int match_gc(lua_State *L) {
    match_box *mb = luaL_checkudata(L, 1, "kefu.bot.matcher");
    kf_match_free(mb->m);
    mb->m = NULL;
    return 0;
}

static int cal_gc(lua_State *L) {
    kf_calendar *c = luaL_checkudata(L, 1, "kefu.bot.calendar");
    kf_cal_free(c);
    return 0;
}

static const luaL_Reg match_meta[] = {{"__gc", match_gc}, {NULL, NULL}};
static const luaL_Reg cal_meta[] = {{"__gc", cal_gc}, {NULL, NULL}};

static const luaL_Reg k_funcs[] = {
    {"where", k_where},         {"keyword", k_keyword},   {"calendar", k_calendar},
    {"is_open", k_is_open},     {"strftime", k_strftime}, {NULL, NULL},
};
static const luaL_Reg os_funcs[] = {
    {"time", k_time}, {"date", k_strftime}, {"clock", k_clock}, {"difftime", k_difftime}, {NULL, NULL},
};
static const luaL_Reg text_funcs[] = {
    {"normalize", k_normalize}, {"has", k_has}, {"len", k_len}, {"sub", k_sub}, {"trim", k_trim},
    {NULL, NULL},
};
static const luaL_Reg clock_funcs[] = {
    {"now", k_time}, {"format", k_strftime}, {"is_open", k_is_open}, {NULL, NULL},
};

/* Copies the named fields of the table at src into a new table (left on the stack). */
static void copy_fields(lua_State *L, int src, const char *const *names) {
    lua_newtable(L);
    for (; *names; names++) {
        lua_getfield(L, src, *names);
        lua_setfield(L, -2, *names);
    }
}

static int strict_index(lua_State *L) {
    return luaL_error(L, "unknown name '%s' (a typo? globals are the rule API, the libraries and "
                         "what the rule files define)", lua_tostring(L, 2) ? lua_tostring(L, 2) : "?");
}

static int strict_newindex(lua_State *L) {
    return luaL_error(L, "rules cannot create or change globals while running ('%s'); keep "
                         "per-conversation data in c.state", lua_tostring(L, 2) ? lua_tostring(L, 2) : "?");
}

/* Builds the sandbox, runs the prelude; stack: [1] = the kf_bot. */
static int l_setup(lua_State *L) {
    kf_bot *b = bot_of(L);
    char tzspec[128];
    snprintf(tzspec, sizeof(tzspec), "%s", luaL_checkstring(L, 2));
    luaL_requiref(L, LUA_GNAME, luaopen_base, 1);
    luaL_requiref(L, LUA_STRLIBNAME, luaopen_string, 1);
    luaL_requiref(L, LUA_TABLIBNAME, luaopen_table, 1);
    luaL_requiref(L, LUA_MATHLIBNAME, luaopen_math, 1);
    luaL_requiref(L, LUA_UTF8LIBNAME, luaopen_utf8, 1);
    lua_settop(L, 1);
    /* getmetatable("") must not hand out the string library's metatable */
    lua_pushliteral(L, "");
    lua_getmetatable(L, -1);
    lua_pushliteral(L, "string");
    lua_setfield(L, -2, "__metatable");
    lua_pop(L, 2);

    /* matcher and calendar, owned by the state */
    match_box *mb = lua_newuserdatauv(L, sizeof(*mb), 0);
    mb->m = kf_match_new();
    b->match = mb->m;
    luaL_newmetatable(L, "kefu.bot.matcher");
    luaL_setfuncs(L, match_meta, 0);
    lua_setmetatable(L, -2);
    luaL_ref(L, LUA_REGISTRYINDEX);
    kf_calendar *cal = lua_newuserdatauv(L, sizeof(*cal), 0);
    memset(cal, 0, sizeof(*cal));
    b->cal = cal;
    luaL_newmetatable(L, "kefu.bot.calendar");
    luaL_setfuncs(L, cal_meta, 0);
    lua_setmetatable(L, -2);
    luaL_ref(L, LUA_REGISTRYINDEX);
    char err[200];
    if (kf_tz_load(&cal->tz, tzspec, err, sizeof(err)) < 0) return luaL_error(L, "bot_timezone: %s", err);

    /* the rules' environment */
    lua_newtable(L);
    int E = lua_gettop(L);
    lua_pushglobaltable(L);
    int G = lua_gettop(L);
    static const char *const base[] = {"assert", "error", "ipairs", "next", "pairs", "select",
                                       "tonumber", "tostring", "type", "rawequal", "rawget",
                                       "rawlen", "rawset", "getmetatable", "_VERSION", NULL};
    for (const char *const *n = base; *n; n++) {
        lua_getfield(L, G, *n);
        lua_setfield(L, E, *n);
    }
    lua_pushcfunction(L, sb_pcall), lua_setfield(L, E, "pcall");
    lua_pushcfunction(L, sb_xpcall), lua_setfield(L, E, "xpcall");
    lua_pushcfunction(L, sb_setmetatable), lua_setfield(L, E, "setmetatable");
    lua_pushcfunction(L, sb_load), lua_setfield(L, E, "load");
    lua_pushcfunction(L, sb_print), lua_setfield(L, E, "print");
    static const char *const gone[][2] = {
        {"require", "put shared code in another file of the rule directory: all files share one environment"},
        {"dofile", "files are loaded by the engine"},
        {"loadfile", "files are loaded by the engine"},
        {"collectgarbage", "memory is managed by the engine"},
        {NULL, NULL}};
    for (int i = 0; gone[i][0]; i++) {
        lua_pushstring(L, gone[i][0]);
        lua_pushstring(L, gone[i][1]);
        lua_pushcclosure(L, sb_unavailable, 2);
        lua_setfield(L, E, gone[i][0]);
    }
    static const char *const gone_libs[][2] = {
        {"io", "rules cannot touch files"},
        {"debug", "rules cannot inspect the engine"},
        {"package", "put shared code in another file of the rule directory"},
        {"coroutine", "rules run to completion"},
        {NULL, NULL}};
    for (int i = 0; gone_libs[i][0]; i++) {
        lua_newtable(L);
        refuse_fields(L, gone_libs[i][0], gone_libs[i][1]);
        lua_setfield(L, E, gone_libs[i][0]);
    }
    static const char *const string_names[] = {"byte", "char", "find", "format", "gmatch", "gsub",
                                               "len", "lower", "match", "rep", "reverse", "sub",
                                               "upper", "pack", "packsize", "unpack", NULL};
    lua_getfield(L, G, "string");
    copy_fields(L, lua_gettop(L), string_names);
    lua_setfield(L, E, "string");
    lua_pop(L, 1);
    static const char *const table_names[] = {"concat", "insert", "move", "pack", "remove", "sort",
                                              "unpack", NULL};
    lua_getfield(L, G, "table");
    copy_fields(L, lua_gettop(L), table_names);
    lua_setfield(L, E, "table");
    lua_pop(L, 1);
    static const char *const math_names[] = {"abs", "ceil", "cos", "deg", "exp", "floor", "fmod",
                                             "huge", "log", "max", "maxinteger", "min", "mininteger",
                                             "modf", "pi", "rad", "random", "sin", "sqrt", "tan",
                                             "tointeger", "type", "ult", "atan", "asin", "acos", NULL};
    lua_getfield(L, G, "math");
    copy_fields(L, lua_gettop(L), math_names);
    lua_setfield(L, E, "math");
    lua_pop(L, 1);
    static const char *const utf8_names[] = {"char", "charpattern", "codes", "codepoint", "len",
                                             "offset", NULL};
    lua_getfield(L, G, "utf8");
    copy_fields(L, lua_gettop(L), utf8_names);
    lua_setfield(L, E, "utf8");
    lua_pop(L, 1);
    luaL_newlib(L, os_funcs);
    refuse_fields(L, "os", "rules get only os.time, os.date, os.clock and os.difftime");
    lua_setfield(L, E, "os");
    luaL_newlib(L, text_funcs);
    lua_setfield(L, E, "text");
    luaL_newlib(L, clock_funcs);
    lua_setfield(L, E, "clock");
    lua_pushvalue(L, E);
    lua_setfield(L, E, "_G");
    /* reading an unknown global is an error (typos), from the start */
    lua_createtable(L, 0, 2);
    lua_pushcfunction(L, strict_index);
    lua_setfield(L, -2, "__index");
    lua_setmetatable(L, E);
    lua_pushvalue(L, E);
    b->ref_env = luaL_ref(L, LUA_REGISTRYINDEX);

    /* the prelude: K, E -> P */
    if (luaL_loadbufferx(L, kf_bot_prelude, kf_bot_prelude_len, "=prelude", "t") != LUA_OK)
        return lua_error(L);
    luaL_newlib(L, k_funcs);
    lua_pushvalue(L, E);
    lua_call(L, 2, 1);
    lua_getfield(L, -1, "dispatch");
    b->ref_dispatch = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_getfield(L, -1, "finish");
    lua_setfield(L, LUA_REGISTRYINDEX, "kefu.bot.finish");
    return 0;
}

/* After the files: freezes globals, collects the name, handled events, queue_wait thresholds. */
static int l_finish(lua_State *L) {
    kf_bot *b = bot_of(L);
    lua_getfield(L, LUA_REGISTRYINDEX, "kefu.bot.finish");
    lua_call(L, 0, 3);
    snprintf(b->name, sizeof(b->name), "%s", lua_tostring(L, -3));
    for (int e = 0; e < KF_BOT__EVENTS; e++) {
        lua_getfield(L, -2, event_names[e]);
        if (lua_toboolean(L, -1)) b->handles |= 1u << e;
        lua_pop(L, 1);
    }
    lua_Integer n = luaL_len(L, -1);
    b->waits = kf_calloc((size_t)(n ? n : 1), sizeof(long long));
    for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(L, -1, i);
        b->waits[b->nwaits++] = (long long)lua_tointeger(L, -1);
        lua_pop(L, 1);
    }
    kf_match_build(b->match);
    lua_rawgeti(L, LUA_REGISTRYINDEX, b->ref_env);
    lua_getmetatable(L, -1);
    lua_pushcfunction(L, strict_newindex);
    lua_setfield(L, -2, "__newindex");
    return 0;
}

/* ---- loading ---- */

typedef struct {
    char *name;
    char *src;
    size_t len;
} rule_file;

static int name_cmp(const void *a, const void *b) {
    return strcmp(((const rule_file *)a)->name, ((const rule_file *)b)->name);
}

static void files_free(rule_file *f, size_t n) {
    for (size_t i = 0; i < n; i++) {
        kf_free(f[i].name);
        kf_free(f[i].src);
    }
    kf_free(f);
}

static int read_dir(const char *dir, rule_file **out, size_t *nout, char *err, size_t errlen) {
    DIR *d = opendir(dir);
    if (!d) {
        snprintf(err, errlen, "cannot open rule directory %s: %s", dir, strerror(errno));
        return -1;
    }
    rule_file *f = NULL;
    size_t n = 0;
    struct dirent *de;
    int rc = 0;
    while ((de = readdir(d))) {
        size_t l = strlen(de->d_name);
        if (de->d_name[0] == '.' || l < 5 || strcmp(de->d_name + l - 4, ".lua") != 0) continue;
        if (n == MAX_FILES) {
            snprintf(err, errlen, "more than %d rule files in %s", MAX_FILES, dir);
            rc = -1;
            break;
        }
        char path[4096];
        snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
        struct stat st;
        FILE *fp = NULL;
        if (stat(path, &st) < 0 || !S_ISREG(st.st_mode)) continue;
        if (st.st_size > FILE_MAX || !(fp = fopen(path, "rb"))) {
            snprintf(err, errlen, "%s: %s", de->d_name, fp ? "larger than 1 MiB" : strerror(errno));
            if (fp) fclose(fp);
            rc = -1;
            break;
        }
        f = kf_realloc(f, (n + 1) * sizeof(*f));
        f[n].name = kf_strdup(de->d_name);
        f[n].src = kf_malloc((size_t)st.st_size + 1);
        f[n].len = fread(f[n].src, 1, (size_t)st.st_size, fp);
        fclose(fp);
        if (f[n].len >= 3 && !memcmp(f[n].src, "\xEF\xBB\xBF", 3)) { /* a UTF-8 BOM (some editors) */
            memmove(f[n].src, f[n].src + 3, f[n].len - 3);
            f[n].len -= 3;
        }
        n++;
    }
    closedir(d);
    if (rc == 0 && n == 0) {
        snprintf(err, errlen, "no .lua rule files in %s", dir);
        rc = -1;
    }
    if (rc < 0) {
        files_free(f, n);
        return -1;
    }
    qsort(f, n, sizeof(*f), name_cmp);
    *out = f;
    *nout = n;
    return 0;
}

static void state_close(kf_bot *b) {
    if (b->L) lua_close(b->L);
    b->L = NULL;
}

void kf_bot_free(kf_bot *b) {
    if (!b) return;
    state_close(b);
    kf_free(b->waits);
    kf_free(b->norm);
    kf_free(b->hits);
    msgpack_sbuffer_destroy(&b->out);
    kf_free(b);
}

static void copy_err(char *err, size_t errlen, const char *prefix, lua_State *L) {
    const char *m = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "error";
    snprintf(err, errlen, "%s%s", prefix, m);
}

kf_bot *kf_bot_load(const char *dir, const kf_bot_config *cfg, char *err, size_t errlen) {
    rule_file *files;
    size_t nfiles;
    if (read_dir(dir, &files, &nfiles, err, errlen) < 0) return NULL;
    kf_bot *b = kf_calloc(1, sizeof(*b));
    msgpack_sbuffer_init(&b->out);
    b->mem_limit = cfg && cfg->memory_bytes ? cfg->memory_bytes : 16u << 20;
    b->run_budget = cfg && cfg->instructions > 0 ? cfg->instructions : 200000;
    b->now_ms = -1;
    snprintf(b->name, sizeof(b->name), "bot");
    b->L = lua_newstate(bot_alloc, b);
    if (!b->L) {
        snprintf(err, errlen, "cannot create a Lua state (memory cap too small?)");
        goto fail;
    }
    lua_State *L = b->L;
    *(kf_bot **)lua_getextraspace(L) = b;
    lua_sethook(L, budget_hook, LUA_MASKCOUNT, HOOK_STEP);
    b->budget = b->run_budget * LOAD_BUDGET_FACTOR;
    lua_pushcfunction(L, msgh);
    lua_pushcfunction(L, l_setup);
    lua_pushlightuserdata(L, b);
    lua_pushstring(L, cfg && cfg->timezone && *cfg->timezone ? cfg->timezone : "local");
    if (lua_pcall(L, 2, 0, 1) != LUA_OK) {
        copy_err(err, errlen, "engine setup: ", L);
        goto fail;
    }
    for (size_t i = 0; i < nfiles; i++) {
        char chunk[300];
        snprintf(chunk, sizeof(chunk), "@%s", files[i].name);
        b->count = 0;
        b->budget_hit = 0;
        if (luaL_loadbufferx(L, files[i].src, files[i].len, chunk, "t") != LUA_OK) {
            copy_err(err, errlen, "", L);
            goto fail;
        }
        lua_rawgeti(L, LUA_REGISTRYINDEX, b->ref_env);
        lua_setupvalue(L, -2, 1);
        b->running = 1;
        b->mem_where[0] = '\0';
        int st = lua_pcall(L, 0, 0, 1);
        b->running = 0;
        if (st != LUA_OK) {
            char prefix[300];
            if (st == LUA_ERRMEM)
                snprintf(prefix, sizeof(prefix), "%s: memory cap of %zu KiB reached: ",
                         b->mem_where[0] ? b->mem_where : files[i].name, b->mem_limit >> 10);
            else
                snprintf(prefix, sizeof(prefix), "%s: ", files[i].name);
            const char *m = lua_tostring(L, -1);
            /* errors that already name a rule file need no prefix */
            copy_err(err, errlen, st != LUA_ERRMEM && m && strstr(m, ".lua:") ? "" : prefix, L);
            goto fail;
        }
        lua_settop(L, 1);
    }
    b->count = 0;
    lua_pushcfunction(L, l_finish);
    if (lua_pcall(L, 0, 0, 1) != LUA_OK) {
        copy_err(err, errlen, "", L);
        goto fail;
    }
    lua_settop(L, 0);
    lua_gc(L, LUA_GCCOLLECT);
    /* Events make short-lived garbage over a long-lived rule set: generational collection keeps
     * the pauses short (young collections instead of incremental cycles over the whole heap). */
    lua_gc(L, LUA_GCGEN, 0, 0);
    b->nfiles = (int)nfiles;
    b->budget = b->run_budget;
    files_free(files, nfiles);
    return b;
fail:
    files_free(files, nfiles);
    kf_bot_free(b);
    return NULL;
}

const char *kf_bot_name(const kf_bot *b) { return b->name; }
int kf_bot_nfiles(const kf_bot *b) { return b->nfiles; }
int kf_bot_handles(const kf_bot *b, kf_bot_event_type t) { return (b->handles >> t) & 1; }

size_t kf_bot_queue_waits(const kf_bot *b, const long long **secs) {
    *secs = b->waits;
    return b->nwaits;
}

const char *kf_bot_timezone(const kf_bot *b) { return b->cal->tz.name; }

size_t kf_bot_strftime(const kf_bot *b, char *buf, size_t len, const char *fmt, int64_t t) {
    struct tm tm;
    local_tm(b, t, 0, &tm);
    size_t n = strftime(buf, len, fmt, &tm);
    if (!n && len) buf[0] = '\0';
    return n;
}

void kf_bot_get_stats(const kf_bot *b, kf_bot_stats *st) {
    *st = b->st;
    st->memory_bytes = b->mem_used;
}

int kf_bot_is_open(kf_bot *b, const char *group, int64_t t, char *holiday, size_t holiday_len,
                   int64_t *next_open) {
    kf_cal_info info;
    kf_cal_query(b->cal, group, t, &info);
    if (holiday && holiday_len) snprintf(holiday, holiday_len, "%s", info.holiday ? info.holiday : "");
    if (next_open) *next_open = info.open ? 0 : info.next_open;
    return info.open;
}

/* ---- the per-conversation state: msgpack <-> Lua ---- */

static void push_obj(lua_State *L, const msgpack_object *o, int depth) {
    luaL_checkstack(L, 4, "state nesting");
    switch (o->type) {
    case MSGPACK_OBJECT_BOOLEAN: lua_pushboolean(L, o->via.boolean); break;
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        if (o->via.u64 > (uint64_t)LUA_MAXINTEGER) lua_pushnumber(L, (lua_Number)o->via.u64);
        else lua_pushinteger(L, (lua_Integer)o->via.u64);
        break;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER: lua_pushinteger(L, (lua_Integer)o->via.i64); break;
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64: lua_pushnumber(L, o->via.f64); break;
    case MSGPACK_OBJECT_STR: lua_pushlstring(L, o->via.str.ptr, o->via.str.size); break;
    case MSGPACK_OBJECT_BIN: lua_pushlstring(L, o->via.bin.ptr, o->via.bin.size); break;
    case MSGPACK_OBJECT_ARRAY:
        if (depth >= STATE_DEPTH) {
            lua_pushnil(L);
            break;
        }
        lua_createtable(L, (int)o->via.array.size, 0);
        for (uint32_t i = 0; i < o->via.array.size; i++) {
            push_obj(L, &o->via.array.ptr[i], depth + 1);
            lua_rawseti(L, -2, (lua_Integer)i + 1);
        }
        break;
    case MSGPACK_OBJECT_MAP:
        if (depth >= STATE_DEPTH) {
            lua_pushnil(L);
            break;
        }
        lua_createtable(L, 0, (int)o->via.map.size);
        for (uint32_t i = 0; i < o->via.map.size; i++) {
            push_obj(L, &o->via.map.ptr[i].key, depth + 1);
            push_obj(L, &o->via.map.ptr[i].val, depth + 1);
            if (lua_isnil(L, -2) || (lua_type(L, -2) == LUA_TNUMBER && !lua_isinteger(L, -2))) {
                lua_pop(L, 2);
                continue;
            }
            lua_rawset(L, -3);
        }
        break;
    default: lua_pushnil(L); break;
    }
}

/* The object of a key in the decoded top-level map, or NULL. */
static const msgpack_object *top_field(kf_bot *b, const char *k) {
    if (!b->in_ok) return NULL;
    const msgpack_object_map *m = &b->in.data.via.map;
    size_t kl = strlen(k);
    for (uint32_t i = 0; i < m->size; i++) {
        const msgpack_object *key = &m->ptr[i].key;
        if (key->type == MSGPACK_OBJECT_STR && key->via.str.size == kl && !memcmp(key->via.str.ptr, k, kl))
            return &m->ptr[i].val;
    }
    return NULL;
}

static void pack_value(lua_State *L, kf_bot *b, msgpack_packer *pk, int idx, int depth) {
    switch (lua_type(L, idx)) {
    case LUA_TNIL: msgpack_pack_nil(pk); break;
    case LUA_TBOOLEAN:
        if (lua_toboolean(L, idx)) msgpack_pack_true(pk);
        else msgpack_pack_false(pk);
        break;
    case LUA_TNUMBER:
        if (lua_isinteger(L, idx)) msgpack_pack_int64(pk, (int64_t)lua_tointeger(L, idx));
        else msgpack_pack_double(pk, (double)lua_tonumber(L, idx));
        break;
    case LUA_TSTRING: {
        size_t len;
        const char *s = lua_tolstring(L, idx, &len);
        if (len > STATE_MAX) luaL_error(L, "c.state is larger than %d bytes", STATE_MAX);
        msgpack_pack_str(pk, len);
        msgpack_pack_str_body(pk, s, len);
        break;
    }
    case LUA_TTABLE: {
        if (depth >= STATE_DEPTH)
            luaL_error(L, "c.state nests tables deeper than %d (a cycle?)", STATE_DEPTH);
        luaL_checkstack(L, 4, "state nesting");
        int t = lua_absindex(L, idx);
        uint32_t n = 0;
        lua_pushnil(L);
        while (lua_next(L, t)) {
            lua_pop(L, 1);
            if (++n > 4096) luaL_error(L, "c.state has too many entries");
        }
        msgpack_pack_map(pk, n);
        lua_pushnil(L);
        while (lua_next(L, t)) {
            int kt = lua_type(L, -2);
            if (kt != LUA_TSTRING && !(kt == LUA_TNUMBER && lua_isinteger(L, -2)))
                luaL_error(L, "c.state keys must be texts or integers, not %s", luaL_typename(L, -2));
            pack_value(L, b, pk, -2, depth + 1);
            pack_value(L, b, pk, -1, depth + 1);
            lua_pop(L, 1);
        }
        break;
    }
    default:
        luaL_error(L, "c.state can hold texts, numbers, booleans and tables, not a %s",
                   luaL_typename(L, idx));
    }
    if (b->out.size > STATE_MAX) luaL_error(L, "c.state is larger than %d bytes", STATE_MAX);
}

/* ---- running an event ---- */

static void setstr(lua_State *L, const char *k, const char *v) {
    if (v && *v) {
        lua_pushstring(L, v);
        lua_setfield(L, -2, k);
    }
}

/* c: the conversation table the rules get (metatable set by the prelude). */
static void push_conv(lua_State *L, kf_bot *b, const kf_bot_event *ev, int64_t now, lua_Integer n) {
    const kf_bot_conv *cv = &ev->conv;
    lua_createtable(L, 0, 28);
    setstr(L, "id", cv->id);
    setstr(L, "ticket", cv->ticket);
    lua_pushstring(L, cv->channel && *cv->channel ? cv->channel : "web");
    lua_setfield(L, -2, "channel");
    setstr(L, "topic", cv->topic);
    setstr(L, "customer", cv->customer);
    lua_pushstring(L, cv->customer_name ? cv->customer_name : "");
    lua_setfield(L, -2, "customer_name");
    const char *group = cv->group && *cv->group ? cv->group : "default";
    lua_pushstring(L, group);
    lua_setfield(L, -2, "group");
    setstr(L, "priority", cv->priority);
    setstr(L, "category", cv->category);
    lua_newtable(L);
    if (cv->tags && *cv->tags) {
        const char *p = cv->tags;
        int i = 0;
        while (*p && i < 64) {
            const char *e = strchr(p, ',');
            size_t l = e ? (size_t)(e - p) : strlen(p);
            if (l) {
                lua_pushlstring(L, p, l);
                lua_rawseti(L, -2, ++i);
            }
            p += l + (e != NULL);
        }
    }
    lua_setfield(L, -2, "tags");
    lua_pushinteger(L, cv->level);
    lua_setfield(L, -2, "level");
    lua_pushstring(L, event_names[ev->type]);
    lua_setfield(L, -2, "event");
    if (ev->type == KF_BOT_MESSAGE) {
        lua_pushlstring(L, ev->text ? ev->text : "", ev->text ? ev->text_len : 0);
        lua_setfield(L, -2, "text");
    }
    lua_pushinteger(L, now);
    lua_setfield(L, -2, "now");
    if (ev->type == KF_BOT_QUEUE_WAIT) {
        lua_pushinteger(L, ev->waited_s);
        lua_setfield(L, -2, "waited");
    }
    kf_cal_info info;
    kf_cal_query(b->cal, group, now, &info);
    lua_pushboolean(L, !info.open);
    lua_setfield(L, -2, "off_hours");
    if (info.holiday) setstr(L, "holiday", info.holiday[0] ? info.holiday : "holiday");
    if (!info.open && info.next_open) {
        lua_pushinteger(L, info.next_open);
        lua_setfield(L, -2, "next_open");
    }
    lua_pushinteger(L, n);
    lua_setfield(L, -2, "messages");
    const msgpack_object *u = top_field(b, "u");
    if (u && u->type == MSGPACK_OBJECT_MAP) push_obj(L, u, 0);
    else lua_newtable(L);
    lua_setfield(L, -2, "state");
}

static kf_bot_action_kind kind_parse(const char *s, int *ok) {
    for (size_t i = 0; i < sizeof(action_names) / sizeof(action_names[0]); i++)
        if (!strcmp(action_names[i], s)) {
            *ok = 1;
            return (kf_bot_action_kind)i;
        }
    *ok = 0;
    return KF_BOT_ACT_REPLY;
}

static int l_run(lua_State *L) {
    kf_bot *b = lua_touserdata(L, 1);
    const kf_bot_event *ev = b->ev;
    int64_t now = ev->now_ms / 1000;
    const msgpack_object *on = top_field(b, "n"), *ooh = top_field(b, "oh"), *oqw = top_field(b, "qw");
    lua_Integer n = on && on->type == MSGPACK_OBJECT_POSITIVE_INTEGER ? (lua_Integer)on->via.u64 : 0;
    if (ev->type == KF_BOT_MESSAGE) n++;
    push_conv(L, b, ev, now, n); /* 2: c */
    lua_createtable(L, 0, 2);    /* 3: sys */
    if (ooh && ooh->type == MSGPACK_OBJECT_BOOLEAN && ooh->via.boolean) {
        lua_pushboolean(L, 1);
        lua_setfield(L, 3, "oh");
    }
    if (oqw && oqw->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
        lua_pushinteger(L, (lua_Integer)oqw->via.u64);
        lua_setfield(L, 3, "qw");
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, b->ref_dispatch);
    lua_pushstring(L, event_names[ev->type]);
    lua_pushvalue(L, 2);
    if (ev->type == KF_BOT_MESSAGE) {
        size_t tl = ev->text ? ev->text_len : 0;
        lua_pushlstring(L, ev->text ? ev->text : "", tl);
        char *norm = scratch(b, tl);
        size_t nl = kf_bot_normalize(ev->text ? ev->text : "", tl, norm);
        size_t np = kf_match_npatterns(b->match);
        if (np > b->hitcap) {
            b->hitcap = np;
            b->hits = kf_realloc(b->hits, np * sizeof(kf_match_hit));
        }
        size_t nh = np ? kf_match_scan(b->match, norm, nl, b->hits, b->hitcap) : 0;
        lua_createtable(L, 0, (int)nh);     /* hits: owner -> entry */
        lua_createtable(L, (int)nh, 0);     /* hitlist: owners, ascending */
        uint32_t best_owner = 0, best_score = 0;
        lua_Integer nlist = 0;
        for (size_t i = 0; i < nh; i++) {
            const kf_match_hit *h = &b->hits[i]; /* in owner order, then entry order */
            /* several entries of one faq table: the longest keyword wins, then the first entry */
            if (h->owner == best_owner && h->score <= best_score) continue;
            if (h->owner != best_owner) {
                lua_pushinteger(L, h->owner);
                lua_rawseti(L, -2, ++nlist);
            }
            best_owner = h->owner;
            best_score = h->score;
            lua_pushinteger(L, h->entry);
            lua_rawseti(L, -3, h->owner);
        }
    } else {
        lua_pushnil(L);
        lua_pushnil(L);
        lua_pushnil(L);
    }
    lua_pushvalue(L, 3);
    lua_call(L, 6, 2); /* 4: acts, 5: off_hours ran */
    if (lua_toboolean(L, 5)) b->res->ran |= 1u << KF_BOT_OFF_HOURS;
    b->res->ran |= 1u << ev->type;

    /* check the actions (may raise), encode the state (may raise), then copy (never raises) */
    if (lua_type(L, 4) != LUA_TTABLE) return luaL_error(L, "dispatch returned no action list");
    lua_Integer na = (lua_Integer)lua_rawlen(L, 4);
    if (na % 3 || na / 3 > MAX_ACTS) return luaL_error(L, "more than %d actions in one event", MAX_ACTS);
    for (lua_Integer i = 1; i <= na; i += 3) {
        int ok;
        lua_rawgeti(L, 4, i);
        if (lua_type(L, -1) != LUA_TSTRING) return luaL_error(L, "bad action");
        kind_parse(lua_tostring(L, -1), &ok);
        if (!ok) return luaL_error(L, "unknown action %s", lua_tostring(L, -1));
        for (int k = 1; k <= 2; k++) {
            lua_rawgeti(L, 4, i + k);
            int t = lua_type(L, -1);
            if (t != LUA_TSTRING && !(t == LUA_TBOOLEAN && !lua_toboolean(L, -1)))
                return luaL_error(L, "bad action argument");
            lua_pop(L, 1);
        }
        lua_pop(L, 1);
    }
    msgpack_packer pk;
    b->out.size = 0;
    msgpack_packer_init(&pk, &b->out, msgpack_sbuffer_write);
    lua_getfield(L, 3, "oh");
    int oh = lua_toboolean(L, -1);
    lua_getfield(L, 3, "qw");
    lua_Integer qw = lua_tointeger(L, -1);
    lua_pop(L, 2);
    msgpack_pack_map(&pk, 4);
    msgpack_pack_str(&pk, 1);
    msgpack_pack_str_body(&pk, "u", 1);
    lua_pushliteral(L, "state");
    lua_rawget(L, 2);
    if (lua_type(L, -1) != LUA_TTABLE && lua_type(L, -1) != LUA_TNIL)
        return luaL_error(L, "c.state must be a table");
    if (lua_isnil(L, -1)) msgpack_pack_map(&pk, 0);
    else pack_value(L, b, &pk, -1, 0);
    lua_pop(L, 1);
    msgpack_pack_str(&pk, 2);
    msgpack_pack_str_body(&pk, "oh", 2);
    if (oh) msgpack_pack_true(&pk);
    else msgpack_pack_false(&pk);
    msgpack_pack_str(&pk, 2);
    msgpack_pack_str_body(&pk, "qw", 2);
    msgpack_pack_int64(&pk, qw);
    msgpack_pack_str(&pk, 1);
    msgpack_pack_str_body(&pk, "n", 1);
    msgpack_pack_int64(&pk, n);

    kf_bot_result *res = b->res;
    res->acts = kf_calloc((size_t)(na / 3) + 1, sizeof(kf_bot_action));
    for (lua_Integer i = 1; i <= na; i += 3) {
        kf_bot_action *a = &res->acts[res->nacts++];
        int ok;
        lua_rawgeti(L, 4, i);
        a->kind = kind_parse(lua_tostring(L, -1), &ok);
        lua_rawgeti(L, 4, i + 1);
        lua_rawgeti(L, 4, i + 2);
        if (lua_type(L, -2) == LUA_TSTRING) a->key = kf_strdup(lua_tostring(L, -2));
        if (lua_type(L, -1) == LUA_TSTRING) {
            size_t vl;
            const char *v = lua_tolstring(L, -1, &vl);
            a->value = kf_strndup(v, vl);
        }
        lua_pop(L, 3);
    }
    res->state = kf_malloc(b->out.size ? b->out.size : 1);
    memcpy(res->state, b->out.data, b->out.size);
    res->state_len = b->out.size;
    return 0;
}

void kf_bot_result_free(kf_bot_result *res) {
    for (size_t i = 0; i < res->nacts; i++) {
        kf_free(res->acts[i].key);
        kf_free(res->acts[i].value);
    }
    kf_free(res->acts);
    kf_free(res->state);
    memset(res, 0, sizeof(*res));
}

int kf_bot_run(kf_bot *b, const kf_bot_event *ev, kf_bot_result *res) {
    memset(res, 0, sizeof(*res));
    lua_State *L = b->L;
    b->ev = ev;
    b->res = res;
    b->now_ms = ev->now_ms;
    b->count = 0;
    b->budget = b->run_budget;
    b->budget_hit = b->mem_hit = 0;
    b->prints = 0;
    b->mem_where[0] = '\0';
    b->running = 1;
    msgpack_unpacked_init(&b->in);
    b->in_ok = ev->state && ev->state_len &&
               msgpack_unpack_next(&b->in, ev->state, ev->state_len, NULL) == MSGPACK_UNPACK_SUCCESS &&
               b->in.data.type == MSGPACK_OBJECT_MAP;
    b->st.runs++;
    lua_settop(L, 0);
    lua_pushcfunction(L, msgh);
    lua_pushcfunction(L, l_run);
    lua_pushlightuserdata(L, b);
    int status = (unsigned)ev->type < KF_BOT_OFF_HOURS ? lua_pcall(L, 1, 0, 1) : LUA_ERRRUN;
    if (status != LUA_OK && (unsigned)ev->type >= KF_BOT_OFF_HOURS)
        lua_pushliteral(L, "off_hours is run by the engine, not sent to it");
    msgpack_unpacked_destroy(&b->in);
    b->running = 0;
    res->instructions = b->count;
    if (status == LUA_OK) {
        lua_settop(L, 0);
        b->now_ms = -1;
        return 0;
    }
    if (status == LUA_ERRMEM) b->mem_hit = 1;
    res->failure = b->budget_hit ? KF_BOT_FAIL_BUDGET : b->mem_hit ? KF_BOT_FAIL_MEMORY
                                                                    : KF_BOT_FAIL_ERROR;
    const char *m = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "error";
    if (res->failure == KF_BOT_FAIL_MEMORY)
        snprintf(res->error, sizeof(res->error), "%s%smemory cap of %zu KiB reached (%s)",
                 b->mem_where, b->mem_where[0] ? ": " : "", b->mem_limit >> 10, m);
    else
        snprintf(res->error, sizeof(res->error), "%s", m);
    lua_settop(L, 0);
    b->st.errors++;
    if (res->failure == KF_BOT_FAIL_BUDGET) b->st.budget_kills++;
    if (res->failure == KF_BOT_FAIL_MEMORY) {
        b->st.memory_kills++;
        lua_gc(L, LUA_GCCOLLECT);
    }
    /* whatever l_run had copied is dropped: a failure yields the fallback only */
    for (size_t i = 0; i < res->nacts; i++) {
        kf_free(res->acts[i].key);
        kf_free(res->acts[i].value);
    }
    kf_free(res->acts);
    kf_free(res->state);
    res->nacts = 0;
    res->acts = kf_calloc(1, sizeof(kf_bot_action));
    if (ev->type == KF_BOT_OPENED || ev->type == KF_BOT_MESSAGE) {
        res->acts[0] = (kf_bot_action){KF_BOT_ACT_HANDOFF, kf_strdup("bot_error"), NULL};
        res->nacts = 1;
    }
    res->state_len = ev->state ? ev->state_len : 0;
    res->state = kf_malloc(res->state_len ? res->state_len : 1);
    if (res->state_len) memcpy(res->state, ev->state, res->state_len);
    b->now_ms = -1;
    return -1;
}
