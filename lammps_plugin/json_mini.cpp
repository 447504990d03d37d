/* nnmd-lammps: minimal JSON reader (see json_mini.h). */

#include "json_mini.h"

#include <cerrno>
#include <cmath>
#include <cstdlib>

namespace nnmd {
namespace json {

namespace {

class Parser {
 public:
  explicit Parser(const std::string &t) : text(t) {}

  Value document()
  {
    Value v = value();
    skip_ws();
    if (pos != text.size()) fail("trailing characters after the JSON document");
    return v;
  }

 private:
  const std::string &text;
  std::size_t pos = 0;
  int depth = 0;

  [[noreturn]] void fail(const std::string &msg) const
  {
    throw std::runtime_error("JSON error at byte " + std::to_string(pos) + ": " + msg);
  }

  void skip_ws()
  {
    while (pos < text.size() &&
           (text[pos] == ' ' || text[pos] == '\n' || text[pos] == '\r' || text[pos] == '\t'))
      ++pos;
  }

  char peek()
  {
    skip_ws();
    if (pos >= text.size()) fail("unexpected end of input");
    return text[pos];
  }

  void expect(const char *word)
  {
    for (const char *c = word; *c; ++c, ++pos)
      if (pos >= text.size() || text[pos] != *c) fail(std::string("expected '") + word + "'");
  }

  Value value()
  {
    if (++depth > 64) fail("nesting too deep");
    Value v;
    const char c = peek();
    if (c == '{') {
      v.kind = Value::Kind::Object;
      ++pos;
      if (peek() == '}') {
        ++pos;
      } else {
        while (true) {
          if (peek() != '"') fail("expected a string key");
          std::string key = string_literal();
          if (peek() != ':') fail("expected ':'");
          ++pos;
          v.object[key] = value();
          const char d = peek();
          ++pos;
          if (d == '}') break;
          if (d != ',') fail("expected ',' or '}'");
        }
      }
    } else if (c == '[') {
      v.kind = Value::Kind::Array;
      ++pos;
      if (peek() == ']') {
        ++pos;
      } else {
        while (true) {
          v.array.push_back(value());
          const char d = peek();
          ++pos;
          if (d == ']') break;
          if (d != ',') fail("expected ',' or ']'");
        }
      }
    } else if (c == '"') {
      v.kind = Value::Kind::String;
      v.string = string_literal();
    } else if (c == 't') {
      expect("true");
      v.kind = Value::Kind::Bool;
      v.boolean = true;
    } else if (c == 'f') {
      expect("false");
      v.kind = Value::Kind::Bool;
    } else if (c == 'n') {
      expect("null");
    } else if (c == 'N' || c == 'I' || c == '-' || (c >= '0' && c <= '9')) {
      v.kind = Value::Kind::Number;
      v.number = number();
    } else {
      fail(std::string("unexpected character '") + c + "'");
    }
    --depth;
    return v;
  }

  double number()
  {
    // Python's json module writes NaN/Infinity for non-finite floats: accept and let the
    // caller reject them with a meaningful message.
    if (text.compare(pos, 3, "NaN") == 0) {
      pos += 3;
      return std::nan("");
    }
    if (text.compare(pos, 8, "Infinity") == 0) {
      pos += 8;
      return HUGE_VAL;
    }
    if (text.compare(pos, 9, "-Infinity") == 0) {
      pos += 9;
      return -HUGE_VAL;
    }
    const char *start = text.c_str() + pos;
    char *end = nullptr;
    errno = 0;
    const double v = std::strtod(start, &end);
    if (end == start) fail("malformed number");
    pos += static_cast<std::size_t>(end - start);
    return v;
  }

  static void append_utf8(std::string &out, unsigned cp)
  {
    if (cp < 0x80) {
      out += static_cast<char>(cp);
    } else if (cp < 0x800) {
      out += static_cast<char>(0xC0 | (cp >> 6));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
      out += static_cast<char>(0xE0 | (cp >> 12));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    }
  }

  std::string string_literal()
  {
    ++pos;    // opening quote
    std::string out;
    while (true) {
      if (pos >= text.size()) fail("unterminated string");
      const char c = text[pos++];
      if (c == '"') break;
      if (c != '\\') {
        out += c;
        continue;
      }
      if (pos >= text.size()) fail("unterminated escape");
      const char e = text[pos++];
      switch (e) {
        case '"':
        case '\\':
        case '/':
          out += e;
          break;
        case 'b':
          out += '\b';
          break;
        case 'f':
          out += '\f';
          break;
        case 'n':
          out += '\n';
          break;
        case 'r':
          out += '\r';
          break;
        case 't':
          out += '\t';
          break;
        case 'u': {
          if (pos + 4 > text.size()) fail("short \\u escape");
          const unsigned cp = static_cast<unsigned>(std::stoul(text.substr(pos, 4), nullptr, 16));
          pos += 4;
          append_utf8(out, cp);
          break;
        }
        default:
          fail("unknown escape");
      }
    }
    return out;
  }
};

const char *kind_name(Value::Kind k)
{
  switch (k) {
    case Value::Kind::Null:
      return "null";
    case Value::Kind::Bool:
      return "a boolean";
    case Value::Kind::Number:
      return "a number";
    case Value::Kind::String:
      return "a string";
    case Value::Kind::Array:
      return "an array";
    case Value::Kind::Object:
      return "an object";
  }
  return "?";
}

}    // namespace

const Value &Value::at(const std::string &key) const
{
  if (kind != Kind::Object) throw std::runtime_error("expected an object containing '" + key + "'");
  auto it = object.find(key);
  if (it == object.end()) throw std::runtime_error("missing key '" + key + "'");
  return it->second;
}

const Value &Value::at(std::size_t i) const
{
  if (kind != Kind::Array || i >= array.size()) throw std::runtime_error("array index out of range");
  return array[i];
}

double Value::as_number(const std::string &what) const
{
  if (kind != Kind::Number)
    throw std::runtime_error("'" + what + "' must be a number, not " + kind_name(kind));
  return number;
}

int Value::as_int(const std::string &what) const
{
  const double v = as_number(what);
  if (v != std::floor(v) || std::fabs(v) > 2147483647.0)
    throw std::runtime_error("'" + what + "' must be an integer");
  return static_cast<int>(v);
}

const std::string &Value::as_string(const std::string &what) const
{
  if (kind != Kind::String)
    throw std::runtime_error("'" + what + "' must be a string, not " + kind_name(kind));
  return string;
}

const std::vector<Value> &Value::as_array(const std::string &what) const
{
  if (kind != Kind::Array)
    throw std::runtime_error("'" + what + "' must be an array, not " + kind_name(kind));
  return array;
}

Value parse(const std::string &text)
{
  return Parser(text).document();
}

}    // namespace json
}    // namespace nnmd
