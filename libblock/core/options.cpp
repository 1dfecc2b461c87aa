// The options tree: qemu's dotted key=value grammar, json: filenames, sizes, booleans,
// and validation against a driver's schema.
#include "blk/options.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>

namespace blk {

namespace {

bool is_index(std::string_view s) {
    if (s.empty()) return false;
    for (char c : s)
        if (c < '0' || c > '9') return false;
    return true;
}

// Turns objects whose keys are all indices 0..n-1 into arrays, recursively.
Result<Json> arrayify(Json j, const std::string& path) {
    if (!j.is_object()) return j;
    bool any_index = false, all_index = true;
    for (auto it = j.begin(); it != j.end(); ++it) {
        BLK_TRY_ASSIGN(Json v, arrayify(it.value(), path.empty() ? it.key() : path + "." + it.key()));
        it.value() = std::move(v);
        if (is_index(it.key())) any_index = true;
        else all_index = false;
    }
    if (!any_index || j.empty()) return j;
    if (!all_index) return make_error(EINVAL, "Parameter '" + path + "' mixes array indices and names");
    Json arr = Json::array();
    for (size_t i = 0; i < j.size(); ++i) {
        std::string k = std::to_string(i);
        if (!j.contains(k)) return make_error(EINVAL, "Parameter '" + path + "." + k + "' is missing (array indices must be contiguous from 0)");
        arr.push_back(j[k]);
    }
    return arr;
}

Status insert_dotted(Json& root, const std::string& key, Json value) {
    if (key.empty()) return make_error(EINVAL, "Invalid parameter: empty key");
    Json* cur = &root;
    size_t start = 0;
    for (;;) {
        size_t dot = key.find('.', start);
        std::string part = key.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
        if (part.empty()) return make_error(EINVAL, "Invalid parameter '" + key + "': empty key component");
        if (dot == std::string::npos) {
            if (cur->contains(part) && (*cur)[part].is_object() && !value.is_object()) {
                return make_error(EINVAL, "Parameters '" + key + ".*' used inconsistently");
            }
            (*cur)[part] = std::move(value);  // a repeated key: the last one wins, as in qemu
            return {};
        }
        if (!cur->contains(part)) (*cur)[part] = Json::object();
        else if (!(*cur)[part].is_object())
            return make_error(EINVAL, "Parameters '" + key.substr(0, dot) + "' used inconsistently");
        cur = &(*cur)[part];
        start = dot + 1;
    }
}

}  // namespace

Result<Json> parse_dotted(std::string_view text, std::string_view implied_key) {
    Json root = Json::object();
    size_t i = 0;
    bool first = true;
    while (i < text.size()) {
        // key up to '=' or ','
        size_t k = i;
        while (k < text.size() && text[k] != '=' && text[k] != ',') ++k;
        std::string key(text.substr(i, k - i));
        std::string value;
        bool has_value = k < text.size() && text[k] == '=';
        if (!has_value && first && !implied_key.empty()) {
            // "secret,id=x": the first element is the implied key's value (",," escapes too).
            size_t j = i;
            while (j < text.size()) {
                if (text[j] == ',') {
                    if (j + 1 < text.size() && text[j + 1] == ',') {
                        value += ',';
                        j += 2;
                        continue;
                    }
                    break;
                }
                value += text[j++];
            }
            key = std::string(implied_key);
            i = j;
        } else if (has_value) {
            size_t j = k + 1;
            while (j < text.size()) {
                if (text[j] == ',') {
                    if (j + 1 < text.size() && text[j + 1] == ',') {
                        value += ',';
                        j += 2;
                        continue;
                    }
                    break;
                }
                value += text[j++];
            }
            i = j;
        } else {
            // A bare key is a boolean switch, as QemuOpts reads it.
            if (key.empty()) return make_error(EINVAL, "Invalid parameter: empty key in '" + std::string(text) + "'");
            value = "on";
            i = k;
        }
        if (key.empty()) return make_error(EINVAL, "Invalid parameter: empty key in '" + std::string(text) + "'");
        for (char c : key) {
            if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' || c == '_')) {
                return make_error(EINVAL, "Invalid parameter '" + key + "'");
            }
        }
        BLK_TRY(insert_dotted(root, key, value));
        first = false;
        if (i < text.size()) ++i;  // skip ','
    }
    return arrayify(std::move(root), "");
}

Result<Json> parse_create_options(std::string_view text) {
    Json out = Json::object();
    size_t i = 0;
    while (i <= text.size()) {
        std::string item;
        while (i < text.size()) {
            if (text[i] == ',') {
                if (i + 1 < text.size() && text[i + 1] == ',') {
                    item += ',';
                    i += 2;
                    continue;
                }
                break;
            }
            item += text[i++];
        }
        ++i;  // the separating ','
        if (item.empty()) {
            if (i > text.size()) break;
            continue;
        }
        auto eq = item.find('=');
        std::string key = item.substr(0, eq);
        if (key.empty()) return make_error(EINVAL, "Invalid parameter ''");
        if (eq == std::string::npos) {
            // A bare key is a switch: "help" and "?" ask for help, "noX" turns X off (qemu's
            // short form; "nocow" is thus "cow=off"), anything else turns it on.
            if (key == "help" || key == "?") out["help"] = true;
            else if (key.rfind("no", 0) == 0) out[key.substr(2)] = "off";
            else out[key] = "on";
            continue;
        }
        out[key] = item.substr(eq + 1);
    }
    return out;
}

bool is_json_filename(std::string_view filename) { return filename.rfind("json:", 0) == 0; }

Result<Json> expand_dotted_keys(const Json& obj) {
    if (!obj.is_object()) return obj;
    Json out = Json::object();
    for (auto it = obj.begin(); it != obj.end(); ++it) {
        BLK_TRY_ASSIGN(Json v, expand_dotted_keys(it.value()));
        if (it.key().find('.') == std::string::npos) {
            if (out.contains(it.key()) && out[it.key()].is_object() && v.is_object()) {
                for (auto jt = v.begin(); jt != v.end(); ++jt) out[it.key()][jt.key()] = jt.value();
            } else if (out.contains(it.key())) {
                return make_error(EINVAL, "Parameter '" + it.key() + "' is given twice");
            } else {
                out[it.key()] = std::move(v);
            }
        } else {
            BLK_TRY(insert_dotted(out, it.key(), std::move(v)));
        }
    }
    return arrayify(std::move(out), "");
}

Result<Json> parse_json_filename(std::string_view filename) {
    if (!is_json_filename(filename)) return make_error(EINVAL, "not a json: filename");
    auto parsed = parse_qemu_json(filename.substr(5), 5);
    if (!parsed) return std::move(parsed).error().with_context("Could not parse the JSON options");
    const Json& j = *parsed;
    if (!j.is_object()) return make_error(EINVAL, "Invalid JSON object given");
    return expand_dotted_keys(j);
}

Result<uint64_t> parse_size(std::string_view text) {
    // qemu_strtosz's grammar: optional leading blanks and '+', decimal digits (or 0x hex
    // without a fraction), an optional fraction (only with a suffix), one suffix letter.
    const std::string s(text);
    auto invalid = [&] { return make_error(EINVAL, "invalid size '" + s + "'"); };
    auto too_large = [&] { return make_error(ERANGE, "size '" + s + "' is too large"); };
    size_t pos = 0;
    while (pos < s.size() && std::isspace(static_cast<unsigned char>(s[pos]))) ++pos;
    if (pos < s.size() && s[pos] == '+') ++pos;
    const size_t digits = pos;
    while (pos < s.size() && std::isdigit(static_cast<unsigned char>(s[pos]))) ++pos;
    if (pos == digits) return invalid();
    errno = 0;
    unsigned long long whole = std::strtoull(s.c_str() + digits, nullptr, 10);
    if (errno == ERANGE) return too_large();
    uint64_t frac = 0;  // the fraction as 0.64 fixed point, as qemu computes it
    bool hex = false;
    if (whole == 0 && pos == digits + 1 && pos < s.size() && (s[pos] == 'x' || s[pos] == 'X')) {
        const size_t h = ++pos;
        while (pos < s.size() && std::isxdigit(static_cast<unsigned char>(s[pos]))) ++pos;
        if (pos == h) return invalid();
        errno = 0;
        whole = std::strtoull(s.c_str() + h, nullptr, 16);
        if (errno == ERANGE) return too_large();
        hex = true;
    } else if (pos < s.size() && s[pos] == '.') {
        size_t f = pos + 1;
        while (f < s.size() && std::isdigit(static_cast<unsigned char>(s[f]))) ++f;
        if (f < s.size() && (s[f] == 'e' || s[f] == 'E') && f + 1 < s.size() &&
            (std::isdigit(static_cast<unsigned char>(s[f + 1])) || s[f + 1] == '-' || s[f + 1] == '+')) {
            return invalid();  // an exponent makes the whole input invalid
        }
        const double fraction = std::strtod(s.substr(pos, f - pos).c_str(), nullptr);
        const double scaled = fraction * 0x1p64;
        // qemu converts with a plain cast; a fraction that rounds to 1.0 ends up as 0.
        frac = scaled >= 0x1p64 ? 0 : static_cast<uint64_t>(scaled);
        pos = f;
    }
    uint64_t mult = 1;
    if (pos < s.size()) {
        switch (s[pos]) {
            case 'b': case 'B': mult = 1; break;
            case 'k': case 'K': mult = 1ull << 10; break;
            case 'm': case 'M': mult = 1ull << 20; break;
            case 'g': case 'G': mult = 1ull << 30; break;
            case 't': case 'T': mult = 1ull << 40; break;
            case 'p': case 'P': mult = 1ull << 50; break;
            case 'e': case 'E': mult = 1ull << 60; break;
            default: return invalid();
        }
        if (pos + 1 != s.size()) return invalid();
        // Accepted with a deprecation warning by qemu 7.2; rejected by later versions.
        (void)hex;
    }
    if (mult == 1) {
        if (frac != 0) return invalid();  // a fraction needs a unit suffix
        return static_cast<uint64_t>(whole);
    }
    // Exact 64.64 fixed-point product, rounding half a unit up, as qemu does.
    const unsigned __int128 low = static_cast<unsigned __int128>(frac) * mult;
    unsigned __int128 total = static_cast<unsigned __int128>(whole) * mult + (low >> 64) +
                              ((static_cast<uint64_t>(low) >> 63) & 1);
    if (total > std::numeric_limits<uint64_t>::max()) return too_large();
    return static_cast<uint64_t>(total);
}

Result<bool> parse_bool(std::string_view text) {
    if (text == "on" || text == "true" || text == "yes") return true;
    if (text == "off" || text == "false" || text == "no") return false;
    return make_error(EINVAL, "'" + std::string(text) + "' is not a boolean (use on/off)");
}

const Schema& common_schema() {
    static const Schema s = {
        {"driver", OptType::String, "block driver name"},
        {"node-name", OptType::String, "name of the node"},
        {"read-only", OptType::Bool, "open read-only"},
        {"auto-read-only", OptType::Bool, "fall back to read-only if writing is not possible"},
        {"force-share", OptType::Bool, "open without taking locks (-U)"},
        {"cache.direct", OptType::Bool, "bypass the host page cache"},
        {"cache.no-flush", OptType::Bool, "ignore flush requests"},
        {"discard", OptType::Enum, "discard requests", {"ignore", "off", "unmap", "on"}},
        {"detect-zeroes", OptType::Enum, "detect zero writes", {"off", "on", "unmap"}},
    };
    return s;
}

namespace {

const OptSpec* find_spec(const Schema& schema, std::string_view name) {
    for (const OptSpec& o : common_schema())
        if (o.name == name) return &o;
    for (const OptSpec& o : schema)
        if (o.name == name) return &o;
    return nullptr;
}

bool has_prefix_spec(const Schema& schema, const std::string& prefix) {
    auto check = [&](const Schema& s) {
        for (const OptSpec& o : s)
            if (o.name.rfind(prefix + ".", 0) == 0) return true;
        return false;
    };
    return check(common_schema()) || check(schema);
}

Status check_value(const OptSpec& spec, const Json& v, const std::string& key) {
    auto expects = [&](const char* what) {
        return make_error(EINVAL, "Parameter '" + key + "' expects " + what);
    };
    switch (spec.type) {
        case OptType::Child:
            if (v.is_object() || v.is_string() || v.is_null()) return {};
            return expects("a block device definition or reference");
        case OptType::String:
            if (v.is_string() || v.is_number()) return {};
            return expects("a string");
        case OptType::Bool:
            if (v.is_boolean()) return {};
            if (v.is_string() && parse_bool(v.get<std::string>())) return {};
            return expects("'on' or 'off'");
        case OptType::Size:
            if (v.is_number_unsigned() || (v.is_number_integer() && v.get<int64_t>() >= 0)) return {};
            if (v.is_string()) {
                auto r = parse_size(v.get<std::string>());
                if (r) return {};
                return expects("a non-negative number below 2^64 (optional suffix k, M, G, T, P, E)");
            }
            return expects("a size value");
        case OptType::Int:
            if (v.is_number_integer()) return {};
            if (v.is_string()) {
                const std::string s = v.get<std::string>();
                char* end = nullptr;
                errno = 0;
                (void)std::strtoll(s.c_str(), &end, 0);
                if (!s.empty() && end && *end == '\0' && errno == 0) return {};
            }
            return expects("an integer");
        case OptType::Enum: {
            if (v.is_string()) {
                for (const auto& c : spec.choices)
                    if (c == v.get<std::string>()) return {};
                std::string list;
                for (const auto& c : spec.choices) list += (list.empty() ? "" : ", ") + c;
                return make_error(EINVAL, "Parameter '" + key + "' does not accept value '" + v.get<std::string>() +
                                              "' (expected one of: " + list + ")");
            }
            return expects("a string");
        }
    }
    return {};
}

Status validate_level(const Json& opts, const Schema& schema, std::string_view driver, bool is_protocol,
                      const std::string& prefix) {
    for (auto it = opts.begin(); it != opts.end(); ++it) {
        std::string name = prefix.empty() ? it.key() : prefix + "." + it.key();
        const OptSpec* spec = find_spec(schema, name);
        if (!spec) {
            if (it.value().is_object() && has_prefix_spec(schema, name)) {
                BLK_TRY(validate_level(it.value(), schema, driver, is_protocol, name));
                continue;
            }
            return make_error(EINVAL, std::string("Block ") + (is_protocol ? "protocol '" : "format '") +
                                          std::string(driver) + (is_protocol ? "' doesn't support" : "' does not support") +
                                          " the option '" + name + "'");
        }
        BLK_TRY(check_value(*spec, it.value(), name));
    }
    return {};
}

}  // namespace

Status validate_options(const Json& opts, const Schema& schema, std::string_view driver, bool is_protocol) {
    if (!opts.is_object()) return make_error(EINVAL, "options for '" + std::string(driver) + "' must be an object");
    return validate_level(opts, schema, driver, is_protocol, "");
}

Result<std::optional<std::string>> opt_string(const Json& opts, std::string_view key) {
    auto it = opts.find(std::string(key));
    if (it == opts.end() || it->is_null()) return std::optional<std::string>();
    if (it->is_string()) return std::optional<std::string>(it->get<std::string>());
    if (it->is_number()) return std::optional<std::string>(it->dump());
    return make_error(EINVAL, "Parameter '" + std::string(key) + "' expects a string");
}

Result<std::optional<bool>> opt_bool(const Json& opts, std::string_view key) {
    auto it = opts.find(std::string(key));
    if (it == opts.end() || it->is_null()) return std::optional<bool>();
    if (it->is_boolean()) return std::optional<bool>(it->get<bool>());
    if (it->is_string()) {
        auto b = parse_bool(it->get<std::string>());
        if (!b) return std::move(b).error().with_context("Parameter '" + std::string(key) + "'");
        return std::optional<bool>(*b);
    }
    return make_error(EINVAL, "Parameter '" + std::string(key) + "' expects 'on' or 'off'");
}

Result<std::optional<uint64_t>> opt_size(const Json& opts, std::string_view key) {
    auto it = opts.find(std::string(key));
    if (it == opts.end() || it->is_null()) return std::optional<uint64_t>();
    if (it->is_number_unsigned()) return std::optional<uint64_t>(it->get<uint64_t>());
    if (it->is_number_integer() && it->get<int64_t>() >= 0)
        return std::optional<uint64_t>(static_cast<uint64_t>(it->get<int64_t>()));
    if (it->is_string()) {
        auto r = parse_size(it->get<std::string>());
        if (!r) return std::move(r).error().with_context("Parameter '" + std::string(key) + "'");
        return std::optional<uint64_t>(*r);
    }
    return make_error(EINVAL, "Parameter '" + std::string(key) + "' expects a size value");
}

Result<std::optional<int64_t>> opt_int(const Json& opts, std::string_view key) {
    auto it = opts.find(std::string(key));
    if (it == opts.end() || it->is_null()) return std::optional<int64_t>();
    if (it->is_number_integer()) return std::optional<int64_t>(it->get<int64_t>());
    if (it->is_string()) {
        const std::string s = it->get<std::string>();
        char* end = nullptr;
        errno = 0;
        long long v = std::strtoll(s.c_str(), &end, 0);
        if (!s.empty() && end && *end == '\0' && errno == 0) return std::optional<int64_t>(v);
    }
    return make_error(EINVAL, "Parameter '" + std::string(key) + "' expects an integer");
}

namespace {

// qemu's QDict: 512 buckets chosen by the tdb hash of the key.
constexpr unsigned kQdictBuckets = 512;

unsigned qdict_bucket(const std::string& key) {
    unsigned value = 0x238F13AFu * static_cast<unsigned>(key.size());
    for (size_t i = 0; i < key.size(); ++i) {
        value += static_cast<unsigned>(static_cast<unsigned char>(key[i])) << (i * 5 % 24);
    }
    return (1103515243u * value + 12345u) % kQdictBuckets;
}

// Decodes one UTF-8 sequence at s[i]; returns the code point (-1 if invalid) and advances i.
long decode_utf8(std::string_view s, size_t& i) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    int len = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 0;
    if (len == 0) {
        ++i;
        return -1;
    }
    long cp = len == 1 ? c : c & (0x7F >> len);
    for (int k = 1; k < len; ++k) {
        if (i + k >= s.size() || (static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) {
            i += k;
            return -1;
        }
        cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3F);
    }
    i += len;
    // qemu reads modified UTF-8: C0 80 is NUL.
    if (len == 2 && cp == 0) return 0;
    static const long kMin[] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < kMin[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return -1;
    return cp;
}

void append_json(std::string& out, const Json& j) {
    if (j.is_object()) {
        std::vector<std::string> keys;
        for (auto it = j.begin(); it != j.end(); ++it) keys.push_back(it.key());
        out += '{';
        bool first = true;
        for (size_t i : qemu_dict_order(keys)) {
            if (!first) out += ", ";
            first = false;
            out += qemu_json_quote(keys[i]);
            out += ": ";
            append_json(out, j[keys[i]]);
        }
        out += '}';
    } else if (j.is_array()) {
        out += '[';
        bool first = true;
        for (const Json& e : j) {
            if (!first) out += ", ";
            first = false;
            append_json(out, e);
        }
        out += ']';
    } else if (j.is_string()) {
        out += qemu_json_quote(j.get_ref<const std::string&>());
    } else {
        out += j.dump();
    }
}

}  // namespace

std::string qemu_json_quote(std::string_view s) {
    std::string out = "\"";
    char buf[16];
    for (size_t i = 0; i < s.size();) {
        long cp = decode_utf8(s, i);
        switch (cp) {
            case '"': out += "\\\""; continue;
            case '\\': out += "\\\\"; continue;
            case '\b': out += "\\b"; continue;
            case '\f': out += "\\f"; continue;
            case '\n': out += "\\n"; continue;
            case '\r': out += "\\r"; continue;
            case '\t': out += "\\t"; continue;
            default: break;
        }
        if (cp < 0) cp = 0xFFFD;
        if (cp > 0xFFFF) {
            std::snprintf(buf, sizeof buf, "\\u%04lX\\u%04lX", 0xD800 + ((cp - 0x10000) >> 10), 0xDC00 + ((cp - 0x10000) & 0x3FF));
            out += buf;
        } else if (cp < 0x20 || cp >= 0x7F) {
            std::snprintf(buf, sizeof buf, "\\u%04lX", cp);
            out += buf;
        } else {
            out += static_cast<char>(cp);
        }
    }
    out += '"';
    return out;
}

std::vector<size_t> qemu_dict_order(const std::vector<std::string>& keys) {
    std::vector<size_t> idx(keys.size());
    std::vector<unsigned> bucket(keys.size());
    for (size_t i = 0; i < keys.size(); ++i) {
        idx[i] = i;
        bucket[i] = qdict_bucket(keys[i]);
    }
    std::sort(idx.begin(), idx.end(), [&](size_t a, size_t b) {
        if (bucket[a] != bucket[b]) return bucket[a] < bucket[b];
        return a > b;  // a bucket is a list with the newest entry first
    });
    return idx;
}

std::string to_json_filename(const Json& opts) {
    std::string out = "json:";
    append_json(out, opts);
    return out;
}

}  // namespace blk
