# Writes OUT: a C file holding the text of IN (sql/kefu-archive.sql) as wk_archive_schema, run by
# the worker at every connection to the archive database (the file is idempotent).
file(READ "${IN}" hex HEX)
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "\\\\x\\1" esc "${hex}")
file(WRITE "${OUT}.tmp" "/* Generated from sql/kefu-archive.sql by worker/embed_sql.cmake; do not edit. */\n\nconst char wk_archive_schema[] = \"${esc}\";\n")
file(COPY_FILE "${OUT}.tmp" "${OUT}" ONLY_IF_DIFFERENT)
