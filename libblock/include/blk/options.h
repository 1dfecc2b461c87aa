// The options tree: one JSON object built from qemu-style dotted keys or json: filenames,
// and the per-driver schemas that validate it.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "blk/result.h"

namespace blk {

// Key order is kept as the user wrote it (it shows up again in json: filenames).
using Json = nlohmann::ordered_json;

// Parses qemu keyval syntax: "driver=qcow2,file.filename=a,,b.qcow2".
// - ",," inside a value is a literal comma;
// - dotted keys make nested objects; all-numeric components make arrays (children.0.driver);
// - every leaf value is a string (typing happens against the schema);
// - if `implied_key` is non-empty, a first element without '=' is the value of that key
//   (qemu-img uses this for --object "secret,id=x": implied key "qom-type").
// Errors: empty key, duplicate key, a key both leaf and object, non-contiguous array indices.
Result<Json> parse_dotted(std::string_view text, std::string_view implied_key = "");

// Parses image creation options as qemu-img's -o takes them (QemuOpts): "key=value,key2=v"
// with ",," for a literal comma; keys stay flat ("encrypt.format" is one key); a repeated
// key keeps its last value; a bare key is "on", a bare "noKEY" is KEY "off" (qemu's short
// form), and a bare "help" or "?" sets "help" to JSON true (unlike "help=x", a string).
// Several -o arguments are joined with ',' before parsing, as qemu-img does.
Result<Json> parse_create_options(std::string_view text);

// True if `filename` starts with "json:".
bool is_json_filename(std::string_view filename);

// Parses JSON as qemu 7.2 does (json: filenames, --object {...}): strings in double or single
// quotes (\' is an escape in both), integers as int64, then uint64, then double, duplicate keys
// refused, nesting capped at 1024. An error has qemu's words ("JSON parse error, stray '01'")
// and then where: " (at column C)", or " (at line L, column C)" past the first line; `origin`
// is the number of characters before `text` on its first line (5 after "json:").
Result<Json> parse_qemu_json(std::string_view text, size_t origin = 0);

// Parses "json:{...}" into an options object. Keys containing dots inside the JSON
// ("file.filename") are expanded into nested objects, as qemu does.
Result<Json> parse_json_filename(std::string_view filename);

// Expands dotted keys of an object ({"file.filename": "x"} -> {"file": {"filename": "x"}}),
// recursively. Errors on conflicts.
Result<Json> expand_dotted_keys(const Json& obj);

// Size with optional suffix (B, k/K, M, G, T, P, E; 1024-based; decimals like "1.5G" allowed).
Result<uint64_t> parse_size(std::string_view text);

// on/off, true/false, yes/no.
Result<bool> parse_bool(std::string_view text);

enum class OptType { String, Bool, Size, Int, Enum, Child };

struct OptSpec {
    std::string name;
    OptType type = OptType::String;
    std::string help;
    std::vector<std::string> choices = {};  // for Enum
    std::string default_value = {};         // shown in -o help
    bool strong = false;  // changes what the node means: kept in json: filenames (qemu's strong options)
};

using Schema = std::vector<OptSpec>;

// Keys every driver accepts (driver, node-name, read-only, force-share, cache.*, ...).
const Schema& common_schema();

// Checks every key of `opts` against common_schema() + `schema`: unknown keys give
// "Block format 'qcow2' does not support the option 'foo'" (as qemu says it), badly typed
// values "Parameter 'x' expects ...". Child options (OptType::Child) are not descended into.
// Nested objects of non-Child keys are checked as dotted names ("cache.direct").
Status validate_options(const Json& opts, const Schema& schema, std::string_view driver,
                        bool is_protocol = false);

// Typed getters on a validated options object; absent key -> std::nullopt.
Result<std::optional<std::string>> opt_string(const Json& opts, std::string_view key);
Result<std::optional<bool>> opt_bool(const Json& opts, std::string_view key);
Result<std::optional<uint64_t>> opt_size(const Json& opts, std::string_view key);
Result<std::optional<int64_t>> opt_int(const Json& opts, std::string_view key);

// The order qemu iterates a dictionary's keys in (its QDict hash buckets; within a bucket
// the last inserted first). `keys` are in insertion order; returns indices into `keys`.
// qemu prints every JSON object (info, json: filenames) in this order.
std::vector<size_t> qemu_dict_order(const std::vector<std::string>& keys);

// A JSON string literal as qemu writes it: ASCII printable as is, the usual backslash escapes,
// everything else as \uXXXX (surrogate pairs beyond the BMP, U+FFFD for invalid UTF-8).
std::string qemu_json_quote(std::string_view s);

// Serialises an options tree as qemu prints json: filenames ({"a": "b", "c": {...}}),
// keys in qemu's dictionary order.
std::string to_json_filename(const Json& opts);

}  // namespace blk
