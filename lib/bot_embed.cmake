# Writes OUT: a C file holding the text of IN (the bot engine's Lua prelude) as kf_bot_prelude.
file(READ "${IN}" hex HEX)
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "\\\\x\\1" esc "${hex}")
file(WRITE "${OUT}.tmp" "/* Generated from lib/bot_prelude.lua by lib/bot_embed.cmake; do not edit. */\n#include <stddef.h>\n\nconst char kf_bot_prelude[] = \"${esc}\";\nconst size_t kf_bot_prelude_len = sizeof(kf_bot_prelude) - 1;\n")
file(COPY_FILE "${OUT}.tmp" "${OUT}" ONLY_IF_DIFFERENT)
