/* nnmd-lammps: a minimal JSON reader for the model metadata (docs/model_format.md).

   Supports objects, arrays, strings (with escapes; \u sequences are kept as UTF-8 for
   the basic multilingual plane), numbers (parsed with strtod: exact for the shortest
   round-trip representation Python writes), true/false/null. Errors throw
   std::runtime_error with the byte offset. */

#ifndef NNMD_JSON_MINI_H
#define NNMD_JSON_MINI_H

#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace nnmd {
namespace json {

class Value {
 public:
  enum class Kind { Null, Bool, Number, String, Array, Object };
  Kind kind = Kind::Null;
  bool boolean = false;
  double number = 0.0;
  std::string string;
  std::vector<Value> array;
  std::map<std::string, Value> object;

  bool is(Kind k) const { return kind == k; }
  bool has(const std::string &key) const { return kind == Kind::Object && object.count(key); }
  // Accessors that throw std::runtime_error naming `what` on a type mismatch.
  const Value &at(const std::string &key) const;
  const Value &at(std::size_t i) const;
  double as_number(const std::string &what) const;
  int as_int(const std::string &what) const;
  const std::string &as_string(const std::string &what) const;
  const std::vector<Value> &as_array(const std::string &what) const;
};

Value parse(const std::string &text);

}    // namespace json
}    // namespace nnmd

#endif
