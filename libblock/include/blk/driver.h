// The driver registry, and opening a graph from an options tree.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "blk/node.h"
#include "blk/options.h"
#include "blk/result.h"

namespace blk {

enum class DriverKind { Protocol, Format, Filter };

class OpenContext;
class Registry;
struct ObjectStore;

// A request to create a new image: what `qemu-img create` and convert's new targets do.
struct CreateRequest {
    std::string format;             // "qcow2", "raw", ...
    std::string filename;           // path of the new image (a host file)
    Json options = Json::object();  // -o KEY=VALUE pairs, values as given ("64k", "on")
    const ObjectStore* objects = nullptr;
};

struct DriverSpec {
    std::string name;  // qemu's name: "qcow2", "raw", "file", "null-co", ...
    DriverKind kind = DriverKind::Format;
    std::string description;
    Schema options;  // open options (keys beyond common_schema())
    // Format probing: a score 0..100 for the first bytes of an image (0: not this format).
    // Null for drivers that are never probed.
    std::function<int(std::span<const std::byte> head, const std::string& filename)> probe;
    // Opens a node from validated `opts` (opts["driver"] == name). Children are opened
    // through ctx.open_child().
    std::function<Result<std::shared_ptr<Node>>(OpenContext& ctx, const Json& opts)> open;
    // Image creation: the -o keys the driver takes (they drive parsing, -o help and
    // completions) and the function that writes a new image. Null for drivers that
    // cannot create images. `req.options` has been checked against create_options.
    Schema create_options;
    std::function<Status(const CreateRequest& req, const Registry& reg)> create;
};

// The set of drivers, found by name.
class Registry {
public:
    void add(DriverSpec spec);
    const DriverSpec* find(std::string_view name) const;
    std::vector<const DriverSpec*> all() const;  // sorted by name

    // Registry with every built-in driver (built once; immutable afterwards).
    static const Registry& builtin();

private:
    std::map<std::string, DriverSpec, std::less<>> drivers_;
};

// User-defined objects (--object): secrets, throttle groups. Keyed by id.
struct ObjectStore {
    std::map<std::string, Json, std::less<>> objects;
    // Parses one --object argument ("secret,id=sec0,data=x" or json:/JSON) and stores it.
    Status add(std::string_view spec);
};

struct OpenFlags {
    bool read_only = true;
    bool force_share = false;     // -U
    bool allow_probe = true;      // probe formats when no driver is named
    bool open_backing = true;     // false: -u style, don't open backing files
    unsigned max_chain_depth = 16;
};

// State shared by every node opened for one graph: flags, objects, the chain being opened
// (for loop detection) and the node-names in use.
class OpenContext {
public:
    OpenContext(const Registry& reg, OpenFlags flags, const ObjectStore* objects = nullptr)
        : reg_(reg), flags_(flags), objects_(objects) {}

    const Registry& registry() const { return reg_; }
    const OpenFlags& flags() const { return flags_; }
    const ObjectStore* objects() const { return objects_; }

    // Opens a node from an options object: validates against the driver's schema; if no
    // "driver" is named and probing is allowed, opens the "file" child and probes it.
    Result<std::shared_ptr<Node>> open(const Json& opts);

    // Opens the child `name` of `parent` from parent_opts[name] (an object; a string is a
    // filename for protocol children) and attaches it with `roles`. If the key is absent
    // and `required`, errors. Returns the child node (null if absent and not required).
    Result<std::shared_ptr<Node>> open_child(Node& parent, const Json& parent_opts,
                                             const std::string& name, unsigned roles,
                                             bool required);
    // The same without attaching: for drivers that choose the roles after looking at it.
    Result<std::shared_ptr<Node>> open_child_unattached(const Json& parent_opts, const std::string& name,
                                                        bool required);

    // Opens the backing file named in an image: `name` as stored (may be json:), `format`
    // as stored (may be empty: probe), resolved relative to `overlay_filename`'s directory.
    // Honors parent_opts["backing"] (null/"" disables; an object overrides). Detects loops
    // and caps the depth. Attaches the result as "backing" with kRoleCow.
    // Returns null if there is no backing file or backing files are not opened.
    Result<std::shared_ptr<Node>> open_backing(Node& parent, const Json& parent_opts,
                                               const std::string& name, const std::string& format,
                                               const std::string& overlay_filename);

private:
    const Registry& reg_;
    OpenFlags flags_;
    const ObjectStore* objects_;
    std::vector<std::string> chain_;  // filenames of the backing chain being opened
};

// How qemu-img names an image on its command line.
struct ImageSpec {
    std::string filename;      // a path, "json:{...}", or dotted options with image_opts
    std::string format;        // -f; empty: probe
    bool image_opts = false;   // --image-opts
};

// Builds the options tree for an image spec (-f FMT FILE, --image-opts, json:).
Result<Json> image_spec_options(const ImageSpec& spec);

// Opens an image spec into a graph.
Result<Graph> open_image(const ImageSpec& spec, const OpenFlags& flags,
                         const ObjectStore* objects = nullptr,
                         const Registry& reg = Registry::builtin());

// Creates an image: checks req.options against the format's create schema and, for formats
// over a host file, the file protocol's (an unknown key is "Invalid parameter 'KEY'"), then
// calls the format's create. Prints nothing.
Status create_image(const CreateRequest& req, const Registry& reg = Registry::builtin());

// Resolves a backing file name against the overlay's filename as qemu does: absolute names
// and json: stay; relative names are joined to the overlay's directory.
Result<std::string> resolve_backing_name(const std::string& overlay_filename, const std::string& name);

}  // namespace blk
