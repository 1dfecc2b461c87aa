// Printing JSON exactly as qemu-img prints it: its pretty layout and its dictionary key order.
#include "qjson.h"

#include <cinttypes>
#include <cmath>
#include <cstdio>

namespace blkimg {

namespace {

void quoted(std::string& out, const std::string& s) { out += blk::qemu_json_quote(s); }

void scalar(std::string& out, const blk::Json& j) {
    if (j.is_string()) quoted(out, j.get<std::string>());
    else out += j.dump();
}

void newline(std::string& out, int depth) {
    out += '\n';
    out.append(static_cast<size_t>(depth) * 4, ' ');
}

void pretty(std::string& out, const blk::Json& j, int depth) {
    if (j.is_object()) {
        std::vector<std::string> keys;
        for (auto it = j.begin(); it != j.end(); ++it) keys.push_back(it.key());
        out += '{';
        bool first = true;
        for (size_t i : blk::qemu_dict_order(keys)) {
            if (!first) out += ',';
            first = false;
            newline(out, depth + 1);
            quoted(out, keys[i]);
            out += ": ";
            pretty(out, j[keys[i]], depth + 1);
        }
        newline(out, depth);
        out += '}';
    } else if (j.is_array()) {
        out += '[';
        bool first = true;
        for (const blk::Json& e : j) {
            if (!first) out += ',';
            first = false;
            newline(out, depth + 1);
            pretty(out, e, depth + 1);
        }
        newline(out, depth);
        out += ']';
    } else {
        scalar(out, j);
    }
}

void human(std::string& out, const blk::Json& j, int indent);

void human_value(std::string& out, const blk::Json& v, int indent) {
    if (v.is_object() || v.is_array()) {
        human(out, v, indent);
    } else if (v.is_string()) {
        out += v.get<std::string>();
        out += '\n';
    } else {
        out += v.dump();
        out += '\n';
    }
}

void human(std::string& out, const blk::Json& j, int indent) {
    const std::string pad(static_cast<size_t>(indent) * 4, ' ');
    if (j.is_array()) {
        int i = 0;
        for (const blk::Json& e : j) {
            const bool composite = e.is_object() || e.is_array();
            out += pad + "[" + std::to_string(i++) + "]:" + (composite ? "\n" : " ");
            human_value(out, e, indent + 1);
        }
        return;
    }
    std::vector<std::string> keys;
    for (auto it = j.begin(); it != j.end(); ++it) keys.push_back(it.key());
    for (size_t i : blk::qemu_dict_order(keys)) {
        const blk::Json& v = j[keys[i]];
        std::string name = keys[i];
        for (char& c : name)
            if (c == '-') c = ' ';
        const bool composite = v.is_object() || v.is_array();
        out += pad + name + ":" + (composite ? "\n" : " ");
        human_value(out, v, indent + 1);
    }
}

}  // namespace

std::string qemu_pretty_json(const blk::Json& j) {
    std::string out;
    pretty(out, j, 0);
    return out;
}

std::string qemu_human_dump(const blk::Json& dict, int indent) {
    std::string out;
    human(out, dict, indent);
    return out;
}

std::string size_to_str(uint64_t v) {
    static const char* const kSuffixes[] = {"", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"};
    int e = 0;
    // The exponent of v * 1024 / 1000 picks the unit, so 1000 KiB and up print as MiB.
    std::frexp(static_cast<double>(v) / (1000.0 / 1024.0), &e);
    int i = (e - 1) / 10;
    if (i < 0) i = 0;
    if (i > 6) i = 6;
    const uint64_t div = 1ull << (i * 10);
    char buf[64];
    std::snprintf(buf, sizeof buf, "%0.3g %sB", static_cast<double>(v) / static_cast<double>(div), kSuffixes[i]);
    return buf;
}

}  // namespace blkimg
