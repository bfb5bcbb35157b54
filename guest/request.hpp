// Typed access to request fields; a wrong or missing field throws BadRequest,
// which the agent turns into ERROR {"errno":EINVAL} on that stream.
#pragma once

#include <cerrno>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>

#include <nlohmann/json.hpp>

namespace ztee::guest {

struct BadRequest : std::runtime_error {
  explicit BadRequest(const std::string& m, int err = EINVAL) : std::runtime_error(m), errno_(err) {}
  int errno_;
};

inline const nlohmann::json* field(const nlohmann::json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return nullptr;
  return &*it;
}

inline std::string opt_string(const nlohmann::json& j, const char* key, std::string def = {}) {
  const auto* v = field(j, key);
  if (!v) return def;
  if (!v->is_string()) throw BadRequest(std::string("field \"") + key + "\" must be a string");
  return v->get<std::string>();
}

inline bool opt_bool(const nlohmann::json& j, const char* key, bool def = false) {
  const auto* v = field(j, key);
  if (!v) return def;
  if (!v->is_boolean()) throw BadRequest(std::string("field \"") + key + "\" must be a boolean");
  return v->get<bool>();
}

inline uint64_t opt_u64(const nlohmann::json& j, const char* key, uint64_t def = 0,
                        uint64_t max = std::numeric_limits<uint64_t>::max()) {
  const auto* v = field(j, key);
  if (!v) return def;
  if (!v->is_number_unsigned() || v->get<uint64_t>() > max)
    throw BadRequest(std::string("field \"") + key + "\" must be an integer in 0.." +
                     std::to_string(max));
  return v->get<uint64_t>();
}

inline int64_t opt_i64(const nlohmann::json& j, const char* key, int64_t def = 0) {
  const auto* v = field(j, key);
  if (!v) return def;
  if (!v->is_number_integer()) throw BadRequest(std::string("field \"") + key + "\" must be an integer");
  return v->get<int64_t>();
}

// An absolute path without NUL bytes.
inline std::string req_path(const nlohmann::json& j, const char* key = "path") {
  std::string p = opt_string(j, key);
  if (p.empty()) throw BadRequest(std::string("field \"") + key + "\" is required");
  if (p[0] != '/') throw BadRequest("path must be absolute: " + p);
  if (p.find('\0') != std::string::npos) throw BadRequest("path contains a NUL byte");
  if (p.size() >= 4096) throw BadRequest("path too long", ENAMETOOLONG);
  return p;
}

}  // namespace ztee::guest
