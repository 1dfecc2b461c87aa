// Creating images as qemu-img create does: the -o options parsed the way qemu's QemuOpts
// parses them, the backing file checked; then the protocol file created and opened, handed
// to the format's create, and removed again if anything fails.
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

namespace {

// A create request after create_image's own checks: the typed options, with size set.
struct Prepared {
    const DriverSpec* fmt = nullptr;
    const DriverSpec* proto = nullptr;
    std::string path;  // the image's name without protocol prefix
    Json typed = Json::object();
    std::vector<const OptSpec*> schema;
    std::map<std::string, std::string> shown;
};

Result<Prepared> prepare(const CreateRequest& req, const Registry& reg) {
    Prepared p;
    p.fmt = reg.find(req.format);
    if (!p.fmt || p.fmt->kind == DriverKind::Filter) return make_error(EINVAL, "Unknown file format '" + req.format + "'");
    BLK_TRY_ASSIGN(auto proto_and_path, create_protocol(req.filename, reg));
    p.proto = proto_and_path.first;
    p.path = proto_and_path.second;
    if (!p.fmt->can_create()) return make_error(ENOTSUP, "Format driver '" + req.format + "' does not support image creation");
    if (!p.proto || !p.proto->create_file) return make_error(ENOTSUP, "Protocol driver 'file' does not support image creation");
    if (!req.options.is_object()) return make_error(EINVAL, "create options must be an object");
    p.schema = merged_schema(*p.fmt, p.proto);
    auto lookup = [&](const std::string& key) -> const OptSpec* {
        for (const OptSpec* o : p.schema)
            if (o->name == key) return o;
        return nullptr;
    };
    Json& typed = p.typed;
    auto& shown = p.shown;

    // Parse and type every -o value (qemu checks them while parsing, in the order given).
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
        BLK_TRY(check_backing(req, p.path, typed["backing_file"].get<std::string>(), backing_fmt, size, reg));
    }
    if (!size) return make_error(EINVAL, "Image creation needs a size parameter");
    typed["size"] = *size;
    shown["size"] = std::to_string(static_cast<int64_t>(*size));
    return p;
}

// Like same_file, but names that cannot be looked up are compared as names.
bool same_name_or_file(const std::string& a, const std::string& b) {
    struct stat sa, sb;
    if (::stat(a.c_str(), &sa) != 0 || ::stat(b.c_str(), &sb) != 0) return a == b;
    return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

// The protocol files one create made, removed again unless it succeeded (dismiss()).
class CreatedFiles {
public:
    ~CreatedFiles() {
        for (auto& [proto, name] : files_) (void)proto->delete_file(name);
    }
    void add(const DriverSpec* proto, std::string name) {
        if (proto->delete_file) files_.emplace_back(proto, std::move(name));
    }
    void dismiss() { files_.clear(); }

private:
    std::vector<std::pair<const DriverSpec*, std::string>> files_;
};

// Creates the protocol file `path` with `opts` and opens it read-write, locked.
Result<std::shared_ptr<Node>> create_and_open(const DriverSpec& proto, const std::string& path, Json opts, bool incomplete,
                                              const Registry& reg, CreatedFiles& created) {
    CreateRequest req;
    req.format = proto.name;
    req.filename = path;
    req.options = std::move(opts);
    req.incomplete = incomplete;
    BLK_TRY_ASSIGN(bool made, proto.create_file(req));
    // Only what this create made is removed on failure: an existing file (a target
    // overwritten in place, a data file named again) keeps its name and inode.
    if (made) created.add(&proto, path);
    OpenFlags flags;
    flags.read_only = false;
    OpenContext ctx(reg, flags);
    return ctx.open(Json{{"driver", proto.name}, {"filename", path}});
}

// The steps after on_ready (see FormatCreateContext).
Status run_create(const CreateRequest& req, const Prepared& p, const Registry& reg) {
    const DriverSpec& fmt = *p.fmt;
    const DriverSpec& proto = *p.proto;
    if (fmt.kind == DriverKind::Protocol) {
        // -f file: the protocol file is all there is.
        CreateRequest file_req;
        file_req.format = proto.name;
        file_req.filename = p.path;
        file_req.options = p.typed;
        file_req.incomplete = req.incomplete;
        BLK_TRY(fmt.create_file(file_req));
        return {};
    }

    // The protocol's own options: those the format does not declare itself.
    Json protocol_opts = Json::object();
    for (const OptSpec& o : proto.create_options) {
        if (o.name == "size" || find_spec(fmt.create_options, o.name)) continue;
        if (p.typed.contains(o.name)) protocol_opts[o.name] = p.typed[o.name];
    }

    CreatedFiles created;
    FormatCreateContext ctx;
    ctx.options = p.typed;
    ctx.registry = &reg;
    ctx.objects = req.objects;
    ctx.filename = p.path;
    ctx.incomplete = req.incomplete;
    ctx.check_extra_file = [&](const std::string& name, const std::string& what) -> Status {
        BLK_TRY_ASSIGN(auto extra, create_protocol(name, reg));
        const std::string& path = extra.second;
        if (same_name_or_file(path, p.path)) return make_error(EINVAL, "The " + what + " '" + path + "' is the image file itself");
        if (p.typed.contains("backing_file")) {
            auto backing = resolve_backing_name(p.path, p.typed["backing_file"].get<std::string>());
            if (backing && same_name_or_file(path, *backing)) {
                return make_error(EINVAL, "The " + what + " '" + path + "' is the backing file");
            }
        }
        return {};
    };
    ctx.create_extra_file = [&](const std::string& name) -> Result<std::shared_ptr<Node>> {
        BLK_TRY_ASSIGN(auto extra, create_protocol(name, reg));
        Json opts = protocol_opts;
        opts["size"] = 0;
        return create_and_open(*extra.first, extra.second, std::move(opts), false, reg, created);
    };
    if (fmt.check_create) BLK_TRY(fmt.check_create(ctx));

    Json image_opts = protocol_opts;
    image_opts["size"] = fmt.create_file_is_image ? p.typed["size"].get<uint64_t>() : 0;
    BLK_TRY_ASSIGN(std::shared_ptr<Node> file, create_and_open(proto, p.path, std::move(image_opts), req.incomplete, reg, created));
    BLK_TRY(fmt.create(*file, ctx));
    created.dismiss();
    return {};
}

}  // namespace

Status check_create_request(const CreateRequest& req, const Registry& reg) {
    BLK_TRY(prepare(req, reg));
    return {};
}

Status create_image(const CreateRequest& req, const Registry& reg) {
    BLK_TRY_ASSIGN(Prepared p, prepare(req, reg));
    if (req.on_ready) {
        CreateSummary summary;
        for (const OptSpec* o : p.schema) {
            auto s = p.shown.find(o->name);
            if (s != p.shown.end()) summary.emplace_back(o->name, s->second);
            else if (!o->default_value.empty()) summary.emplace_back(o->name, o->default_value);
        }
        req.on_ready(summary);
    }

    auto st = run_create(req, p, reg);
    if (!st && st.error().code == EFBIG) {
        // qemu's wording: the driver's own message is most likely "too large" anyway.
        const OptSpec* cs = nullptr;
        for (const OptSpec* o : p.schema)
            if (o->name == "cluster_size") cs = o;
        bool hint = cs && ((p.typed.contains("cluster_size") && p.typed["cluster_size"] != 0) ||
                           (!p.typed.contains("cluster_size") && !cs->default_value.empty() && cs->default_value != "0"));
        return make_error(EFBIG, "The image size is too large for file format '" + req.format + "'" +
                                     (hint ? " (try using a larger cluster size)" : ""));
    }
    return st;
}

}  // namespace blk
