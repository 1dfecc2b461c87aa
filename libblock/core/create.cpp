// Creating images as qemu-img create does: the -o options parsed the way qemu's QemuOpts
// parses them, the backing file checked, then the format's create function.
#include <sys/stat.h>

#include <algorithm>
#include <cstdlib>

#include "blk/driver.h"

namespace blk {

namespace {

const OptSpec* find_spec(const Schema& schema, const std::string& key) {
    auto it = std::find_if(schema.begin(), schema.end(), [&](const OptSpec& o) { return o.name == key; });
    return it == schema.end() ? nullptr : &*it;
}

// qemu's boolean words (qapi_bool_parse).
std::optional<bool> qemu_bool(const std::string& v) {
    if (v == "on" || v == "yes" || v == "true" || v == "y") return true;
    if (v == "off" || v == "no" || v == "false" || v == "n") return false;
    return std::nullopt;
}

// qemu's number options: strtoull with base 0 (so 0x10 and 010 are numbers), the whole text.
Result<uint64_t> qemu_number(const std::string& key, const std::string& v) {
    auto expects = make_error(EINVAL, "Parameter '" + key + "' expects a number");
    if (v.empty()) return expects;
    char* end = nullptr;
    errno = 0;
    unsigned long long n = std::strtoull(v.c_str(), &end, 0);
    if (errno == ERANGE) return make_error(ERANGE, "Value '" + v + "' is too large for parameter '" + key + "'");
    if (end == v.c_str() || *end != '\0') return expects;
    return static_cast<uint64_t>(n);
}

// A ',' in a string value is doubled, as qemu prints option strings.
std::string escape_commas(const std::string& v) {
    std::string out;
    for (char c : v) {
        out += c;
        if (c == ',') out += ',';
    }
    return out;
}

// Types one -o value as QemuOpts does: booleans, sizes and numbers are parsed (errors as qemu
// words them), strings pass through. `shown` receives the value as the Formatting line shows it.
Result<Json> type_value(const OptSpec& spec, const std::string& key, const Json& value, std::string& shown) {
    if (!value.is_string()) {
        // Typed values from library callers (convert): accept the JSON types directly.
        if (spec.type == OptType::Bool && value.is_boolean()) {
            shown = value.get<bool>() ? "on" : "off";
            return value;
        }
        if ((spec.type == OptType::Size || spec.type == OptType::Int) && value.is_number_integer()) {
            shown = value.dump();
            return value;
        }
        return make_error(EINVAL, "Parameter '" + key + "' expects a string");
    }
    const std::string v = value.get<std::string>();
    switch (spec.type) {
        case OptType::Bool: {
            auto b = qemu_bool(v);
            if (!b) return make_error(EINVAL, "Parameter '" + key + "' expects 'on' or 'off'");
            shown = v;
            return Json(*b);
        }
        case OptType::Size: {
            auto n = parse_size(v);
            if (!n && n.error().code == ERANGE) {
                return make_error(ERANGE, "Value '" + v + "' is out of range for parameter '" + key + "'");
            }
            if (!n) return make_error(EINVAL, "Parameter '" + key + "' expects a non-negative number below 2^64");
            shown = std::to_string(static_cast<int64_t>(*n));  // qemu prints sizes signed
            return Json(*n);
        }
        case OptType::Int: {
            BLK_TRY_ASSIGN(uint64_t n, qemu_number(key, v));
            // qemu keeps the 64 bits and prints them signed: "-1" stays -1.
            const auto s = static_cast<int64_t>(n);
            shown = std::to_string(s);
            return Json(s);
        }
        default:
            shown = escape_commas(v);
            return value;
    }
}

// The format's create options, then the protocol's that the format does not have.
std::vector<const OptSpec*> merged_schema(const DriverSpec& fmt, const DriverSpec* proto) {
    std::vector<const OptSpec*> out;
    for (const OptSpec& o : fmt.create_options) out.push_back(&o);
    if (proto && proto != &fmt) {
        for (const OptSpec& o : proto->create_options)
            if (!find_spec(fmt.create_options, o.name)) out.push_back(&o);
    }
    return out;
}

bool same_file(const std::string& a, const std::string& b) {
    struct stat sa, sb;
    if (::stat(a.c_str(), &sa) != 0 || ::stat(b.c_str(), &sb) != 0) return false;
    return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

// The backing file rules of qemu-img create (qemu 6.1+): a backing format must be named;
// the backing file is opened to check it and, without a size, to take its size.
Status check_backing(const CreateRequest& req, const std::string& path, const std::string& backing,
                     const std::optional<std::string>& backing_fmt, std::optional<uint64_t>& size,
                     const Registry& reg) {
    if (backing == req.filename) return make_error(EINVAL, "Error: Trying to create an image with the same filename as the backing file");
    if (backing.empty()) return make_error(EINVAL, "Expected backing file name, got empty string");
    if (!req.open_backing) {
        if (!backing_fmt) return make_error(EINVAL, "Backing file specified without backing format");
        return {};
    }
    BLK_TRY_ASSIGN(std::string full, resolve_backing_name(path, backing));
    if (!is_json_filename(full) && same_file(full, path)) {
        return make_error(EINVAL, "Error: Trying to create an image with the same filename as the backing file");
    }
    OpenFlags flags;
    flags.read_only = true;
    flags.force_share = true;  // a backing file in use by a VM may still serve as a base
    ImageSpec spec{full, backing_fmt.value_or(""), false};
    auto g = open_image(spec, flags, req.objects, reg);
    if (!g) {
        // qemu's error and its hint line.
        Error e = std::move(g).error();
        e.message += "\nCould not open backing image.";
        return e;
    }
    if (!backing_fmt) {
        // qemu's hint line, which tells the user what to pass as -F.
        return make_error(EINVAL, "Backing file specified without backing format\nDetected format of " +
                                      g->root->driver_name() + ".");
    }
    if (!size) size = g->root->size();
    return {};
}

}  // namespace

Result<std::pair<const DriverSpec*, std::string>> create_protocol(const std::string& filename, const Registry& reg) {
    const size_t stop = filename.find_first_of(":/");
    if (stop != std::string::npos && filename[stop] == ':') {
        const std::string proto = filename.substr(0, stop);
        if (proto != "file") return make_error(EINVAL, "Unknown protocol '" + proto + "'");
        return std::make_pair(reg.find("file"), filename.substr(stop + 1));
    }
    return std::make_pair(reg.find("file"), filename);
}

Status create_image(const CreateRequest& req, const Registry& reg) {
    const DriverSpec* fmt = reg.find(req.format);
    if (!fmt || fmt->kind == DriverKind::Filter) return make_error(EINVAL, "Unknown file format '" + req.format + "'");
    BLK_TRY_ASSIGN(auto proto_and_path, create_protocol(req.filename, reg));
    const DriverSpec* proto = proto_and_path.first;
    const std::string& path = proto_and_path.second;
    if (!fmt->create) return make_error(ENOTSUP, "Format driver '" + req.format + "' does not support image creation");
    if (!proto || !proto->create) return make_error(ENOTSUP, "Protocol driver 'file' does not support image creation");
    if (!req.options.is_object()) return make_error(EINVAL, "create options must be an object");
    const std::vector<const OptSpec*> schema = merged_schema(*fmt, proto);
    auto lookup = [&](const std::string& key) -> const OptSpec* {
        for (const OptSpec* o : schema)
            if (o->name == key) return o;
        return nullptr;
    };

    // Parse and type every -o value (qemu checks them while parsing, in the order given).
    Json typed = Json::object();
    std::map<std::string, std::string> shown;
    for (auto it = req.options.begin(); it != req.options.end(); ++it) {
        const OptSpec* spec = lookup(it.key());
        if (!spec) return make_error(EINVAL, "Invalid parameter '" + it.key() + "'");
        std::string text;
        BLK_TRY_ASSIGN(Json v, type_value(*spec, it.key(), it.value(), text));
        typed[it.key()] = std::move(v);
        shown[it.key()] = std::move(text);
    }

    std::optional<uint64_t> size;
    if (typed.contains("size")) {
        if (req.size) return make_error(EINVAL, "The image size must be specified only once");
        size = typed["size"].get<uint64_t>();
    } else if (req.size) {
        size = req.size;
    }
    if (req.backing_file) {
        if (!lookup("backing_file")) return make_error(EINVAL, "Backing file not supported for file format '" + req.format + "'");
        typed["backing_file"] = *req.backing_file;
        shown["backing_file"] = escape_commas(*req.backing_file);
    }
    if (req.backing_format) {
        if (!lookup("backing_fmt")) {
            return make_error(EINVAL, "Backing file format not supported for file format '" + req.format + "'");
        }
        typed["backing_fmt"] = *req.backing_format;
        shown["backing_fmt"] = escape_commas(*req.backing_format);
    }
    std::optional<std::string> backing_fmt;
    if (typed.contains("backing_fmt")) backing_fmt = typed["backing_fmt"].get<std::string>();
    if (typed.contains("backing_file")) {
        BLK_TRY(check_backing(req, path, typed["backing_file"].get<std::string>(), backing_fmt, size, reg));
    }
    if (!size) return make_error(EINVAL, "Image creation needs a size parameter");
    typed["size"] = *size;
    shown["size"] = std::to_string(static_cast<int64_t>(*size));

    if (req.on_ready) {
        CreateSummary summary;
        for (const OptSpec* o : schema) {
            auto s = shown.find(o->name);
            if (s != shown.end()) summary.emplace_back(o->name, s->second);
            else if (!o->default_value.empty()) summary.emplace_back(o->name, o->default_value);
        }
        req.on_ready(summary);
    }

    CreateRequest typed_req;
    typed_req.format = req.format;
    typed_req.filename = path;
    typed_req.options = std::move(typed);
    typed_req.objects = req.objects;
    typed_req.incomplete = req.incomplete;
    auto st = fmt->create(typed_req, reg);
    if (!st && st.error().code == EFBIG) {
        // qemu's wording: the driver's own message is most likely "too large" anyway.
        const OptSpec* cs = lookup("cluster_size");
        bool hint = cs && ((typed_req.options.contains("cluster_size") && typed_req.options["cluster_size"] != 0) ||
                           (!typed_req.options.contains("cluster_size") && !cs->default_value.empty() && cs->default_value != "0"));
        return make_error(EFBIG, "The image size is too large for file format '" + req.format + "'" +
                                     (hint ? " (try using a larger cluster size)" : ""));
    }
    return st;
}

}  // namespace blk
