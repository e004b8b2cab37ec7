// json_escape: what goes into a JSON log line (and a quoted text-log value) from fields a peer
// or a file controls.
#include <doctest/doctest.h>

#include <string>

#include "ops/log.hpp"

using tunnel::ops::json_escape;

TEST_CASE("json_escape: quotes, backslashes and control characters are escaped") {
  CHECK(json_escape("a\"b\\c") == "a\\\"b\\\\c");
  CHECK(json_escape("line\nbreak\r\t") == "line\\nbreak\\r\\t");
  CHECK(json_escape(std::string("\x01\x1b[31m\x7f", 7)) == "\\u0001\\u001b[31m\\u007f");
}

TEST_CASE("json_escape: UTF-8 characters become their \\u escapes, decoding to the same text") {
  CHECK(json_escape("M\xc3\xbcller") == "M\\u00fcller");                  // ü, two bytes
  CHECK(json_escape("\xe2\x80\xae") == "\\u202e");                        // right-to-left override
  CHECK(json_escape("\xf0\x9f\x94\x92") == "\\ud83d\\udd12");              // U+1F512: a surrogate pair
}

TEST_CASE("json_escape: bytes that are not well-formed UTF-8 become U+FFFD, one each") {
  CHECK(json_escape("\xff") == "\\ufffd");
  CHECK(json_escape("\xc3") == "\\ufffd");                  // cut short
  CHECK(json_escape("\xc0\xaf") == "\\ufffd\\ufffd");       // overlong '/'
  CHECK(json_escape("\xed\xa0\x80") == "\\ufffd\\ufffd\\ufffd");  // a UTF-16 surrogate
  CHECK(json_escape("\xf4\x90\x80\x80") == "\\ufffd\\ufffd\\ufffd\\ufffd");  // past U+10FFFF
  CHECK(json_escape("a\xe2\x80z") == "a\\ufffd\\ufffdz");   // a sequence broken by an ASCII byte
}
