// The driver registry, and opening a graph from an options tree.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "blk/node.h"
#include "blk/options.h"
#include "blk/result.h"

namespace blk {

enum class DriverKind { Protocol, Format, Filter };

class OpenContext;
class Registry;
struct ObjectStore;

// What qemu-img prints after "Formatting 'NAME', fmt=FMT ": every create option that is set
// or has a default, in the order of the format's and then the protocol's schema, each once,
// with the value as qemu shows it (sizes and numbers in decimal, a ',' in a string doubled).
using CreateSummary = std::vector<std::pair<std::string, std::string>>;

// A request to create a new image: what `qemu-img create` and convert's new targets do.
struct CreateRequest {
    std::string format;             // "qcow2", "raw", ...
    std::string filename;           // path of the new image (a host file; "file:" prefix allowed)
    Json options = Json::object();  // -o KEY=VALUE pairs, values as given ("64k", "on")
    const ObjectStore* objects = nullptr;
    std::optional<uint64_t> size{};               // qemu-img create's SIZE argument (not with -o size)
    std::optional<std::string> backing_file{};    // -b: overrides -o backing_file
    std::optional<std::string> backing_format{};  // -F/-B: overrides -o backing_fmt
    // False (-u): the backing file is not opened, so its format and the size must be given.
    // True: it is opened read-only (relative names from the new image's directory) to check
    // it, to find its format for the error message, and to take the size from it.
    bool open_backing = true;
    // Called once the options are final (size from the backing file filled in), right before
    // anything is written: qemu-img prints its "Formatting ..." line here.
    std::function<void(const CreateSummary&)> on_ready{};
    // True: the new image is born flagged incomplete (see Node::set_incomplete), best effort:
    // the host file gets user.blkimg.incomplete before it is emptied and, where that worked,
    // a qcow2 header is written with its corrupt bit. convert overwriting an existing file in
    // place sets it, so no moment of the overwrite shows a whole-looking image.
    bool incomplete = false;
};

// What a format's create receives besides its protocol node. This is the contract every
// format that creates images implements (qcow2 and raw today; vmdk, vhdx, vpc, vdi and qed
// next). create_image() runs a create in this order:
//   1. parses and types the -o options against the format's and then the protocol's schema,
//      checks the size and the backing file, calls CreateRequest::on_ready (the
//      "Formatting ..." line);
//   2. DriverSpec::check_create(ctx): the format's checks, no I/O;
//   3. the protocol's create_file, with the protocol's own options (those the format does
//      not declare itself: nocow, extent_size_hint, and preallocation for raw) and size 0,
//      or the image size when create_file_is_image; then opens the file read-write with
//      its locks as a protocol Node;
//   4. DriverSpec::create(file, ctx): the format writes its metadata through Node I/O
//      (write, write_zeroes, truncate, flush) and nothing else: no host paths, no fds, no
//      protocol calls. Further files (qcow2's external data file, vmdk's extents) come from
//      ctx.create_extra_file, created the same way and opened the same way;
//   5. on any failure, the core removes every file steps 3 and 4 made (an existing file
//      that was overwritten keeps its name), and maps EFBIG to qemu's "The image size is
//      too large for file format 'FMT'".
// Because the format sees only nodes, its create runs as well on any node: a unit test
// creates a qcow2 image in memory with no host file at all. A format writes its header
// (whatever makes the file recognisable) last, after a flush, so an interrupted create
// never leaves a file that looks whole.
struct FormatCreateContext {
    Json options = Json::object();  // typed as described at DriverSpec::create_options
    const Registry* registry = nullptr;
    const ObjectStore* objects = nullptr;
    // The image's name without protocol prefix: what relative names (backing file, extent
    // files) are resolved against. Informational: the format never opens it.
    std::string filename;
    // The image is born flagged incomplete (CreateRequest::incomplete); the protocol file
    // already carries the flag where the node says so (Node::incomplete()).
    bool incomplete = false;
    // Checks, before anything is created, a name the format will create as an extra file
    // (`what`: "data file"): a protocol we can create on, neither the image itself nor the
    // backing file. Null: nothing to check against (no host files involved).
    std::function<Status(const std::string& name, const std::string& what)> check_extra_file;
    // Creates (or empties) the extra file `name` as given by the user (relative to the
    // working directory, "file:" allowed) with the image's protocol options and size 0,
    // and opens it read-write as a protocol node. Removed again if the create fails.
    // Null: extra files cannot be made here (ENOTSUP).
    std::function<Result<std::shared_ptr<Node>>(const std::string& name)> create_extra_file;
};

struct DriverSpec {
    std::string name;  // qemu's name: "qcow2", "raw", "file", "null-co", ...
    DriverKind kind = DriverKind::Format;
    std::string description;
    Schema options;  // open options (keys beyond common_schema())
    bool needs_filename = false;  // opening without a "filename" is an error (qemu's bdrv_needs_filename)
    // Format probing: a score 0..100 for the first bytes of an image (0: not this format).
    // Null for drivers that are never probed.
    std::function<int(std::span<const std::byte> head, const std::string& filename)> probe;
    // Opens a node from validated `opts` (opts["driver"] == name). Children are opened
    // through ctx.open_child().
    std::function<Result<std::shared_ptr<Node>>(OpenContext& ctx, const Json& opts)> open;
    // Filters only: makes the node from validated `opts` without its child (nothing is
    // opened), to be given one by the opener or by Graph::insert_filter_above.
    std::function<Result<std::shared_ptr<Node>>(const Json& opts)> make_filter;
    // Image creation: the -o keys the driver takes, in qemu's order (they drive parsing, -o
    // help, the Formatting line and completions; OptSpec::default_value is qemu's default
    // shown in the Formatting line). create_image() checks and types them (booleans as JSON
    // booleans, sizes and numbers as JSON numbers, "size" always set) before any of the
    // functions below sees them. See FormatCreateContext for how a create runs.
    Schema create_options;
    // Protocols: makes (or empties) the host object req.filename names (no "file:" prefix),
    // sized and preallocated as req.options ask. Returns true when it made a new object,
    // false when it reused one that was there (a file overwritten in place). It cleans up
    // after its own failure; after a later failure the core removes a new object with
    // delete_file.
    std::function<Result<bool>(const CreateRequest& req)> create_file;
    std::function<Status(const std::string& filename)> delete_file;
    // Formats: true when the protocol file is the image's data (raw): the core creates it at
    // the image size with the protocol's preallocation. False: it is created empty, and the
    // format lays out and sizes it.
    bool create_file_is_image = false;
    // Formats: qemu's option checks, in qemu's order and words, and anything else that can
    // fail without I/O (sizes too large: EFBIG). Runs before anything is created, so an
    // existing file the create would overwrite is untouched when it fails. May be null.
    std::function<Status(const FormatCreateContext& ctx)> check_create;
    // Formats: writes a new image into `file`, the opened protocol node (read-write, locked).
    std::function<Status(Node& file, const FormatCreateContext& ctx)> create;

    // Whether images (or, for protocols, files) can be created with this driver.
    bool can_create() const { return kind == DriverKind::Protocol ? static_cast<bool>(create_file) : static_cast<bool>(create); }
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

// A backing file the opener could not open, handed to OpenFlags::on_backing_error instead of
// failing the whole open (blkimg check --chain reports it and checks the layers above).
struct BackingError {
    enum class Kind {
        Open,   // the name could not be resolved, or the file not opened as an image
        Loop,   // the name leads back to an image already in the chain
        Depth,  // the chain is deeper than max_chain_depth
    };
    Kind kind = Kind::Open;
    const Node* overlay = nullptr;  // the image naming the backing file (still being opened)
    std::string name;               // the backing file as the opener tried it (path or json:)
    std::string format;             // the format the overlay records for it ("" if none)
    Error error;                    // the opener's error, as a failed open would return it
};

struct OpenFlags {
    bool read_only = true;
    bool force_share = false;     // -U
    bool allow_probe = true;      // probe formats when no driver is named
    bool open_backing = true;     // false: -u style, don't open backing files
    // Metadata only (qemu's BDRV_O_NO_IO, as qemu-img info opens): no guest data is read,
    // so an encrypted image opens without its key.
    bool no_io = false;
    // With no_io: the external data file an image names is not opened either, as qemu-img
    // 7.2(.x) info does since the fix for CVE-2024-4467 (vetting an untrusted image touches
    // no file it names as data). `graph` leaves it false to show the whole graph.
    bool skip_data_file = false;
    unsigned max_chain_depth = 16;
    // Cache mode for every node of the graph (qemu-img's -t/-T): O_DIRECT (cache.direct) and
    // no host flush (cache.no-flush). Children and backing files inherit them; an option
    // the image spec names itself wins.
    bool cache_direct = false;
    bool cache_no_flush = false;
    // The default of the top node's "discard" option: false is qemu's "ignore", true "unmap"
    // (qemu's BDRV_O_UNMAP, which qemu-img sets on convert targets unless -S 0, and on
    // commit). Nodes opened below it default to "unmap", as in qemu. detect-zeroes=unmap
    // needs "unmap".
    bool discard_unmap = false;
    // Set: a backing file that cannot be opened (missing, unreadable, a loop, too deep) is
    // reported here and its overlay opens without it, so the rest of the chain still opens.
    // Unset: such a backing file fails the open.
    std::function<void(const BackingError&)> on_backing_error{};
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
    unsigned depth_ = 0;              // opens in progress: above 0, the node is below another
    // A file opened to probe its format, waiting to become the format node's "file" child
    // (opts: the child's options object inside the options the driver is given).
    struct Probed {
        const Json* opts = nullptr;
        std::shared_ptr<Node> node;
    };
    Probed probed_;
};

// A filter's `open` from its make_filter: makes the node, opens the child named by the
// filter's edge (required) and attaches it as the filtered child.
std::function<Result<std::shared_ptr<Node>>(OpenContext& ctx, const Json& opts)> open_filter_with(
    std::function<Result<std::shared_ptr<Node>>(const Json& opts)> make);

// Makes a filter node from its options alone ({"driver": "preallocate", ...}, no child
// key): checks them against the driver's schema and calls its make_filter. The node has
// no child until Graph::insert_filter_above gives it one.
Result<std::shared_ptr<Node>> make_filter_node(const Json& opts, const Registry& reg = Registry::builtin());

// Probing as qemu-img 7.2 does: `head` is the image's first 2048 bytes (zero padded past the
// end). Returns the best-scoring format, "raw" when nothing else matches. The name may be a
// format qemu probes that has no driver here (is_foreign_format): callers refuse those.
std::string probe_head(const Registry& reg, std::span<const std::byte> head, const std::string& filename);
// qemu's find_image_format on an opened node: an empty node is raw; otherwise its first
// 2048 bytes (zero padded past the end, as qemu reads them) go to probe_head.
Result<std::string> probe_node(const Registry& reg, Node& file);
// A format qemu 7.2 probes and reads that libblock has no driver for yet (vmdk, vdi, ...).
bool is_foreign_format(std::string_view name);

// How qemu-img names an image on its command line.
struct ImageSpec {
    std::string filename;      // a path, "json:{...}", or dotted options with image_opts
    std::string format;        // -f; empty: probe
    bool image_opts = false;   // --image-opts
};

// Builds the options tree for an image spec (-f FMT FILE, --image-opts, json:).
Result<Json> image_spec_options(const ImageSpec& spec);

// Opens an image spec into a graph: the one open path of every command. Options are built
// from the spec (image_spec_options); a json: filename is taken as `blkimg graph
// --output=json` prints it (its '@' facts are dropped, so that output opens again as the
// graph it describes); the flags' cache mode is applied; then the root is opened.
Result<Graph> open_image(const ImageSpec& spec, const OpenFlags& flags,
                         const ObjectStore* objects = nullptr,
                         const Registry& reg = Registry::builtin());

// Creates an image as qemu-img create does: the format and the protocol (only host files:
// "file:" or no prefix), the -o keys against the format's and then the file protocol's create
// schema ("Invalid parameter 'KEY'") and their values as qemu's QemuOpts parses them, the size
// (given once, or taken from the backing file), the backing file (opened read-only unless
// !open_backing; a backing format is required, as in qemu 6.1+), then req.on_ready, then the
// steps described at FormatCreateContext. A protocol named as the format (-f file) creates
// just the file. Prints nothing; error messages carry no filename prefix.
Status create_image(const CreateRequest& req, const Registry& reg = Registry::builtin());

// create_image's option checks alone (keys, value types, size, backing file, protocol),
// creating nothing and calling neither on_ready nor the format's checks.
Status check_create_request(const CreateRequest& req, const Registry& reg = Registry::builtin());

// The protocol driver for a new image's filename, as qemu finds it: "proto:rest" with the
// colon before any '/' names a protocol ("Unknown protocol 'proto'" unless it is one we can
// create on); anything else is a host file. Returns the spec and the filename without prefix.
Result<std::pair<const DriverSpec*, std::string>> create_protocol(const std::string& filename,
                                                                  const Registry& reg = Registry::builtin());

// Resolves a backing file name against the overlay's filename as qemu does: absolute names
// and json: stay; relative names are joined to the overlay's directory.
Result<std::string> resolve_backing_name(const std::string& overlay_filename, const std::string& name);

}  // namespace blk
