// Opening a graph: image specs to options trees, probing, children and backing chains.
#include <algorithm>
#include <climits>
#include <cstdio>
#include <cstring>
#include <cstdlib>
#include <utility>
#include <vector>

#include "blk/driver.h"

namespace blk {

namespace {

constexpr size_t kProbeBytes = 2048;

// A stable name for loop detection: the real path of a plain file, the text otherwise.
std::string chain_key(const std::string& filename) {
    if (is_json_filename(filename)) return filename;
    char buf[PATH_MAX];
    if (realpath(filename.c_str(), buf)) return buf;
    return filename;
}

// probe_node, and a format we recognise but cannot read is refused by name: reading it as
// raw would hand out its metadata as data.
Result<std::string> probe_format(const Registry& reg, Node& file, const std::string& filename) {
    BLK_TRY_ASSIGN(std::string name, probe_node(reg, file).context("Could not read image for determining its format"));
    if (!reg.find(name)) return make_error(ENOTSUP, filename + " is a " + name + " image; blkimg cannot read " + name + " yet");
    return name;
}

// A child or backing file takes its parent's cache options unless it sets its own (as
// qemu's bdrv_inherited_options does for cache.direct and cache.no-flush).
Json with_parent_cache(const Json& parent, Json child) {
    auto pc = parent.find("cache");
    if (pc == parent.end() || !pc->is_object() || !child.is_object()) return child;
    for (const char* key : {"direct", "no-flush"}) {
        auto v = pc->find(key);
        if (v == pc->end()) continue;
        auto cc = child.find("cache");
        if (cc == child.end()) cc = child.emplace("cache", Json::object()).first;
        if (cc->is_object() && !cc->contains(key)) (*cc)[key] = *v;
    }
    return child;
}

// A node's request modes from its options: detect-zeroes and discard (qemu's names and
// values; `unmap_default` when discard is not given).
struct Modes {
    Node::DetectZeroes detect = Node::DetectZeroes::Off;
    bool unmap = true;
};

Result<Modes> request_modes(const Json& opts, bool unmap_default) {
    Modes m;
    const std::string detect = opts.contains("detect-zeroes") ? opts["detect-zeroes"].get<std::string>() : "off";
    if (detect == "on") m.detect = Node::DetectZeroes::On;
    if (detect == "unmap") m.detect = Node::DetectZeroes::Unmap;
    m.unmap = unmap_default;
    if (auto d = opts.find("discard"); d != opts.end()) m.unmap = *d == "unmap" || *d == "on";
    // detect-zeroes=unmap turns zero writes into discards, which discard=ignore forbids:
    // refused in qemu's words.
    if (m.detect == Node::DetectZeroes::Unmap && !m.unmap)
        return make_error(EINVAL, "setting detect-zeroes to unmap is not allowed without setting discard operation to unmap");
    return m;
}

}  // namespace

Result<std::string> probe_node(const Registry& reg, Node& file) {
    if (file.size() == 0) return std::string("raw");
    std::vector<std::byte> head(kProbeBytes);
    const size_t n = static_cast<size_t>(std::min<uint64_t>(kProbeBytes, file.size()));
    BLK_TRY(file.read(0, std::span(head).first(n)));
    return probe_head(reg, head, file.filename());
}

Result<std::shared_ptr<Node>> OpenContext::open(const Json& opts_in) {
    if (!opts_in.is_object()) return make_error(EINVAL, "block options must be an object");
    const bool below = depth_ > 0;
    ++depth_;
    struct Leave {
        unsigned& d;
        ~Leave() { --d; }
    } leave{depth_};
    Json opts = opts_in;
    // The file a probe opened, handed to the driver as its "file" child instead of being
    // opened a second time (open_child_unattached).
    std::shared_ptr<Node> probed;
    if (!opts.contains("driver")) {
        if (opts.contains("file")) {
            // A format node with no format named: probe the file's first bytes.
            if (!flags_.allow_probe) return make_error(EINVAL, "no format given and probing is not allowed");
            Json probe_opts = opts["file"];
            if (probe_opts.is_string()) return make_error(EINVAL, "node references are not supported; use file.filename=");
            BLK_TRY_ASSIGN(probed, open(with_parent_cache(opts, probe_opts)));
            BLK_TRY_ASSIGN(std::string fmt, probe_format(reg_, *probed, probed->filename()));
            opts["driver"] = fmt;
        } else if (opts.contains("filename")) {
            opts["driver"] = "file";
        } else {
            return make_error(EINVAL, "Must specify either driver or file");
        }
    }
    if (!opts["driver"].is_string()) return make_error(EINVAL, "Parameter 'driver' expects a string");
    std::string drv = opts["driver"].get<std::string>();
    const DriverSpec* spec = reg_.find(drv);
    if (!spec && is_foreign_format(drv)) return make_error(ENOTSUP, "blkimg cannot read " + drv + " yet");
    if (!spec) return make_error(EINVAL, "Unknown driver '" + drv + "'");
    // qemu checks for the filename before it looks at the other keys, so a misspelt
    // filename key reads "requires a file name", as in qemu-img.
    if (spec->needs_filename) {
        auto f = opts.find("filename");
        if (f == opts.end() || (f->is_string() && f->get<std::string>().empty()))
            return make_error(EINVAL, "The '" + drv + "' block driver requires a file name");
    }
    BLK_TRY(validate_options(opts, spec->options, drv, spec->kind == DriverKind::Protocol));
    // force-share=on and read-only=on on a node hold for everything below it, as in qemu
    // (bdrv_inherited_options): a format node's force-share reaches its file's locks.
    BLK_TRY_ASSIGN(auto share, opt_bool(opts, "force-share"));
    BLK_TRY_ASSIGN(auto ro, opt_bool(opts, "read-only"));
    BLK_TRY_ASSIGN(auto auto_ro, opt_bool(opts, "auto-read-only"));
    // A node opened below another one (a child, a backing file, the file a probe reads)
    // defaults to discard=unmap, as qemu's bdrv_inherited_options sets it; the top node
    // takes the open's default (qemu-img's BDRV_O_UNMAP).
    BLK_TRY_ASSIGN(const Modes modes, request_modes(opts, below || flags_.discard_unmap));
    const OpenFlags saved = flags_;
    if (share.value_or(false)) flags_.force_share = true;
    if (ro.value_or(false)) flags_.read_only = true;
    // The probed node serves only if it was opened in the mode the driver's child would
    // be: this node's read-only and force-share options apply from here on.
    if (probed && (flags_.read_only != saved.read_only || flags_.force_share != saved.force_share)) probed.reset();
    Probed outer = std::exchange(probed_, Probed{probed ? &opts["file"] : nullptr, std::move(probed)});
    auto opened = spec->open(*this, opts);
    probed_ = Probed{};
    // auto-read-only=on: an image that cannot be opened for writing (no permission, a
    // read-only file system) opens read-only instead, as qemu's.
    if (!opened && auto_ro.value_or(false) && !flags_.read_only &&
        (opened.error().code == EACCES || opened.error().code == EROFS || opened.error().code == EPERM)) {
        flags_.read_only = true;
        opened = spec->open(*this, opts);
    }
    probed_ = std::move(outer);
    flags_.force_share = saved.force_share;
    flags_.read_only = saved.read_only;
    BLK_TRY_ASSIGN(std::shared_ptr<Node> node, std::move(opened));
    // The node's name, once its children are open (qemu names a format node after its file).
    if (auto nn = opts.find("node-name"); nn != opts.end() && nn->is_string())
        BLK_TRY(check_node_name(nn->get<std::string>()));
    node->set_detect_zeroes(modes.detect);
    node->set_discard_unmap(modes.unmap, modes.unmap || !below);
    std::vector<std::string> strong;
    for (const OptSpec& o : spec->options)
        if (o.strong) strong.push_back(o.name);
    BLK_TRY(node->set_driver_facts(std::move(strong), spec->kind == DriverKind::Filter));
    // Whatever the driver attached, the edges it left must keep the role invariants
    // (above all: a filter has exactly one Filtered|Primary child).
    BLK_TRY(node->check_roles());
    // The node is complete: its capabilities are fixed now (its children's already are).
    node->refresh_caps();
    return node;
}

Result<std::shared_ptr<Node>> OpenContext::open_child(Node& parent, const Json& parent_opts,
                                                      const std::string& name, unsigned roles,
                                                      bool required) {
    BLK_TRY_ASSIGN(std::shared_ptr<Node> child, open_child_unattached(parent_opts, name, required));
    if (child) BLK_TRY(parent.attach_child(name, child, roles));
    return child;
}

Result<std::shared_ptr<Node>> OpenContext::open_child_unattached(const Json& parent_opts, const std::string& name,
                                                                 bool required) {
    if (!parent_opts.contains(name)) {
        if (required) return make_error(EINVAL, "A block device must be specified for \"" + name + "\"");
        return std::shared_ptr<Node>();
    }
    const Json& copts = parent_opts[name];
    if (copts.is_null()) {
        if (required) return make_error(EINVAL, "A block device must be specified for \"" + name + "\"");
        return std::shared_ptr<Node>();
    }
    if (copts.is_string()) {
        return make_error(EINVAL, "'" + name + "=" + copts.get<std::string>() +
                                      "': node references are not supported; use " + name + ".filename= or " +
                                      name + ".driver=");
    }
    // The very options a probe just opened (same object): the node it opened.
    if (probed_.node && probed_.opts == &copts) {
        probed_.opts = nullptr;
        return std::move(probed_.node);
    }
    return open(with_parent_cache(parent_opts, copts));
}

Result<std::shared_ptr<Node>> OpenContext::open_backing(Node& parent, const Json& parent_opts,
                                                        const std::string& name, const std::string& format,
                                                        const std::string& overlay_filename) {
    Json bopts;
    std::string label;
    // With on_backing_error, a backing file that cannot be had is reported and the overlay
    // opens without one.
    auto give_up = [&](BackingError::Kind kind, Error e) -> Result<std::shared_ptr<Node>> {
        if (!flags_.on_backing_error) return e;
        flags_.on_backing_error(BackingError{kind, &parent, label, format, std::move(e)});
        return std::shared_ptr<Node>();
    };
    if (parent_opts.contains("backing")) {
        const Json& b = parent_opts["backing"];
        if (b.is_null() || (b.is_string() && b.get<std::string>().empty())) return std::shared_ptr<Node>();
        if (b.is_string()) return make_error(EINVAL, "'backing=" + b.get<std::string>() + "': node references are not supported");
        bopts = b;
        label = to_json_filename(b);
    } else {
        if (name.empty() || !flags_.open_backing) return std::shared_ptr<Node>();
        if (is_json_filename(name)) {
            label = name;
            auto parsed = parse_json_filename(name).context("backing file name '" + name + "'");
            if (!parsed) return give_up(BackingError::Kind::Open, std::move(parsed).error());
            bopts = std::move(*parsed);
        } else {
            label = name;
            auto resolved = resolve_backing_name(overlay_filename, name);
            if (!resolved) return give_up(BackingError::Kind::Open, std::move(resolved).error());
            const std::string path = std::move(*resolved);
            bopts = Json::object();
            if (!format.empty()) bopts["driver"] = format;
            bopts["file"] = Json{{"driver", "file"}, {"filename", path}};
            label = path;
        }
    }
    bopts = with_parent_cache(parent_opts, std::move(bopts));
    std::string own = chain_key(overlay_filename);
    std::string key = chain_key(label);
    const bool loops = key == own || std::find(chain_.begin(), chain_.end(), key) != chain_.end();
    if (loops) return give_up(BackingError::Kind::Loop, make_error(ELOOP, "Backing file '" + label + "' creates an infinite loop."));
    if (chain_.size() + 1 >= flags_.max_chain_depth) {
        return give_up(BackingError::Kind::Depth,
                       make_error(ELOOP, "backing chain deeper than " + std::to_string(flags_.max_chain_depth) + " images"));
    }
    chain_.push_back(own);
    // A backing file is only ever read, whatever the overlay's mode (as qemu opens it).
    const bool overlay_read_only = flags_.read_only;
    flags_.read_only = true;
    auto child = open(bopts);
    flags_.read_only = overlay_read_only;
    chain_.pop_back();
    if (!child) return give_up(BackingError::Kind::Open, std::move(child).error().with_context("Could not open backing file '" + label + "'"));
    BLK_TRY(parent.attach_child("backing", *child, kRoleCow));
    return *child;
}

std::function<Result<std::shared_ptr<Node>>(OpenContext& ctx, const Json& opts)> open_filter_with(
    std::function<Result<std::shared_ptr<Node>>(const Json& opts)> make) {
    return [make = std::move(make)](OpenContext& ctx, const Json& opts) -> Result<std::shared_ptr<Node>> {
        BLK_TRY_ASSIGN(std::shared_ptr<Node> node, make(opts));
        if (!node || !node->is_filter()) return make_error(EINVAL, "driver made no filter node");
        auto& f = static_cast<FilterNode&>(*node);
        BLK_TRY_ASSIGN(std::shared_ptr<Node> child, ctx.open_child_unattached(opts, f.filtered_edge_name(), true));
        BLK_TRY(f.attach_filtered(std::move(child)));
        return node;
    };
}

Result<std::shared_ptr<Node>> make_filter_node(const Json& opts, const Registry& reg) {
    if (!opts.is_object() || !opts.contains("driver") || !opts["driver"].is_string())
        return make_error(EINVAL, "a filter's options must name its driver");
    const std::string drv = opts["driver"].get<std::string>();
    const DriverSpec* spec = reg.find(drv);
    if (!spec) return make_error(EINVAL, "Unknown driver '" + drv + "'");
    if (spec->kind != DriverKind::Filter || !spec->make_filter)
        return make_error(EINVAL, "'" + drv + "' is not a filter driver");
    for (const OptSpec& o : spec->options) {
        if (o.type == OptType::Child && opts.contains(o.name))
            return make_error(EINVAL, "filter '" + drv + "' is made without its child; '" + o.name +
                                          "' is given by the graph edit that inserts it");
    }
    BLK_TRY(validate_options(opts, spec->options, drv, false));
    BLK_TRY_ASSIGN(const Modes modes, request_modes(opts, true));
    BLK_TRY_ASSIGN(std::shared_ptr<Node> node, spec->make_filter(opts));
    node->set_detect_zeroes(modes.detect);
    node->set_discard_unmap(modes.unmap, modes.unmap);
    std::vector<std::string> strong;
    for (const OptSpec& o : spec->options)
        if (o.strong) strong.push_back(o.name);
    BLK_TRY(node->set_driver_facts(std::move(strong), true));
    if (auto nn = opts.find("node-name"); nn != opts.end() && nn->is_string())
        BLK_TRY(check_node_name(nn->get<std::string>()));
    node->refresh_caps();
    return node;
}

Result<std::string> resolve_backing_name(const std::string& overlay_filename, const std::string& name) {
    if (name.empty() || name[0] == '/' || is_json_filename(name)) return name;
    if (is_json_filename(overlay_filename)) {
        return make_error(EINVAL, "Cannot use relative backing file names for '" + overlay_filename + "'");
    }
    auto slash = overlay_filename.rfind('/');
    if (slash == std::string::npos) return name;
    return overlay_filename.substr(0, slash + 1) + name;
}

Result<Json> image_spec_options(const ImageSpec& spec) {
    Json opts;
    if (spec.image_opts) {
        BLK_TRY_ASSIGN(opts, parse_dotted(spec.filename));
    } else if (is_json_filename(spec.filename)) {
        BLK_TRY_ASSIGN(opts, parse_json_filename(spec.filename));
    } else {
        opts = Json::object();
        opts["file"] = Json{{"driver", "file"}, {"filename", spec.filename}};
    }
    if (!spec.format.empty()) {
        // -f naming a protocol (-f file) opens the file node itself, as qemu-img does: the
        // name is that node's filename, not a child's.
        const DriverSpec* d = Registry::builtin().find(spec.format);
        if (d && d->kind == DriverKind::Protocol && !spec.image_opts && !is_json_filename(spec.filename)) {
            return Json{{"driver", spec.format}, {"filename", spec.filename}};
        }
        // -f wins over a "driver" the json: names (qemu merges the json: options under the
        // ones it already has), so `-f raw json:{"driver":"qcow2",...}` is raw over that file.
        // Keep "driver" first, as qemu prints it.
        Json out = Json::object();
        out["driver"] = spec.format;
        for (auto it = opts.begin(); it != opts.end(); ++it)
            if (it.key() != "driver") out[it.key()] = it.value();
        opts = std::move(out);
    }
    return opts;
}

namespace {

// Removes every key starting with '@' from an options tree, at any depth: the facts `blkimg
// graph --output=json` prints beside the options (node names, sizes, edges, children the
// image names itself).
void strip_graph_facts(Json& opts) {
    if (opts.is_array()) {
        for (Json& e : opts) strip_graph_facts(e);
        return;
    }
    if (!opts.is_object()) return;
    for (auto it = opts.begin(); it != opts.end();) {
        if (!it.key().empty() && it.key()[0] == '@') {
            it = opts.erase(it);
        } else {
            strip_graph_facts(it.value());
            ++it;
        }
    }
}

}  // namespace

Result<Graph> open_image(const ImageSpec& spec, const OpenFlags& flags, const ObjectStore* objects,
                         const Registry& reg) {
    BLK_TRY_ASSIGN(Json opts, image_spec_options(spec));
    if (!spec.image_opts && is_json_filename(spec.filename)) strip_graph_facts(opts);
    if ((flags.cache_direct || flags.cache_no_flush) && opts.is_object()) {
        if (!opts.contains("cache")) opts["cache"] = Json::object();
        Json& cache = opts["cache"];
        if (flags.cache_direct && cache.is_object() && !cache.contains("direct")) cache["direct"] = "on";
        if (flags.cache_no_flush && cache.is_object() && !cache.contains("no-flush")) cache["no-flush"] = "on";
    }
    OpenContext ctx(reg, flags, objects);
    BLK_TRY_ASSIGN(std::shared_ptr<Node> root, ctx.open(opts));
    Graph g{std::move(root)};
    BLK_TRY(g.check_node_names());
    return g;
}

namespace {

// The properties qemu 7.2 gives each object type blkimg knows (an int: a number; else a string).
const std::vector<std::pair<std::string, bool>>& object_properties(const std::string& type) {
    static const std::vector<std::pair<std::string, bool>> secret = {
        {"data", false}, {"file", false}, {"format", false}, {"iv", false}, {"keyid", false}};
    static const std::vector<std::pair<std::string, bool>> throttle = [] {
        std::vector<std::pair<std::string, bool>> v = {{"limits", false}, {"x-iops-size", true}};
        for (const char* what : {"bps", "iops"})
            for (const char* dir : {"total", "read", "write"})
                for (const char* suffix : {"", "-max", "-max-length"})
                    v.emplace_back(std::string("x-") + what + "-" + dir + suffix, true);
        return v;
    }();
    return type == "secret" ? secret : throttle;
}

// What qemu's secret object checks when it is created: where the data comes from, that a
// file can be read, the format, and that a key secret exists.
Status check_secret(const Json& obj, const ObjectStore& store) {
    if (auto f = obj.find("format"); f != obj.end() && *f != "raw" && *f != "base64")
        return make_error(EINVAL, "Parameter 'format' does not accept value '" +
                                      (f->is_string() ? f->get<std::string>() : f->dump()) + "'");
    const bool has_file = obj.contains("file"), has_data = obj.contains("data");
    if (has_file && has_data) return make_error(EINVAL, "'file' and 'data' are mutually exclusive");
    if (!has_file && !has_data) return make_error(EINVAL, "Either 'file' or 'data' must be provided");
    if (has_file) {
        const std::string path = obj["file"].is_string() ? obj["file"].get<std::string>() : obj["file"].dump();
        FILE* f = std::fopen(path.c_str(), "rb");
        if (!f) {
            return make_error(errno, "Unable to read " + path + ": Failed to open file \u201C" + path +
                                         "\u201D: " + std::strerror(errno));
        }
        char buf[4096];
        while (std::fread(buf, 1, sizeof buf, f) == sizeof buf) {
        }
        const int err = std::ferror(f) ? errno : 0;
        std::fclose(f);
        if (err) {
            return make_error(err, "Unable to read " + path + ": Error reading file \u201C" + path + "\u201D: " +
                                       std::strerror(err));
        }
    }
    if (auto k = obj.find("keyid"); k != obj.end()) {
        const std::string id = k->is_string() ? k->get<std::string>() : k->dump();
        auto it = store.objects.find(id);
        if (it == store.objects.end()) return make_error(ENOENT, "No secret with id '" + id + "'");
        if (it->second["qom-type"] != "secret") return make_error(EINVAL, "Object with id '" + id + "' is not a secret");
    }
    return {};
}

}  // namespace

Status ObjectStore::add(std::string_view spec) {
    Json obj;
    if (!spec.empty() && spec.front() == '{') {
        BLK_TRY_ASSIGN(obj, parse_qemu_json(spec));
    } else {
        BLK_TRY_ASSIGN(obj, parse_dotted(spec, "qom-type"));
    }
    if (!obj.is_object() || !obj.contains("qom-type") || !obj["qom-type"].is_string())
        return make_error(EINVAL, "Parameter 'qom-type' is missing");
    std::string type = obj["qom-type"].get<std::string>();
    if (type != "secret" && type != "throttle-group")
        return make_error(EINVAL, "Parameter 'qom-type' does not accept value '" + type + "'");
    if (!obj.contains("id") || !obj["id"].is_string()) return make_error(EINVAL, "Parameter 'id' is missing");
    const auto& props = object_properties(type);
    for (auto it = obj.begin(); it != obj.end(); ++it) {
        if (it.key() == "qom-type" || it.key() == "id") continue;
        auto p = std::find_if(props.begin(), props.end(), [&](const auto& e) { return e.first == it.key(); });
        if (p == props.end()) return make_error(EINVAL, "Parameter '" + it.key() + "' is unexpected");
        if (p->second && !it.value().is_number_integer()) {
            char* end = nullptr;
            const std::string v = it.value().is_string() ? it.value().get<std::string>() : "";
            errno = 0;
            (void)std::strtoll(v.c_str(), &end, 0);
            if (v.empty() || *end != '\0' || errno) return make_error(EINVAL, "Parameter '" + it.key() + "' expects integer");
        }
    }
    if (type == "secret") BLK_TRY(check_secret(obj, *this));
    std::string id = obj["id"].get<std::string>();
    if (objects.count(id))
        return make_error(EEXIST, "attempt to add duplicate property '" + id + "' to object (type 'container')");
    objects.emplace(std::move(id), std::move(obj));
    return {};
}

}  // namespace blk
