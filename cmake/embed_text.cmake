# embed_text.cmake - write a C file holding one text file as a string.
#   cmake -DOUT=file.c -DIN=file.json -DNAME=symbol -P embed_text.cmake
# gives: const char NAME[] = "..."; const size_t NAME_len;
file(READ "${IN}" text)
string(REPLACE "\\" "\\\\" text "${text}")
string(REPLACE "\"" "\\\"" text "${text}")
string(REPLACE "\n" "\\n\"\n    \"" text "${text}")
set(body "/* generated from ${IN} by cmake/embed_text.cmake; do not edit */\n#include <stddef.h>\n\nconst char ${NAME}[] =\n    \"${text}\";\nconst size_t ${NAME}_len = sizeof(${NAME}) - 1;\n")
file(WRITE "${OUT}.tmp" "${body}")
file(COPY_FILE "${OUT}.tmp" "${OUT}" ONLY_IF_DIFFERENT)
