// blkimg convert: copies one or more images into a new (or, with -n, an existing) image
// (qemu-img convert compatible; the copy itself is libblock's engine, blk/copy.h).
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#include "blk/copy.h"
#include "common.h"
#include "convert_target.h"
#include "create_opts.h"
#include "progress.h"

namespace blkimg {

namespace {

// qemu-img's limits: -S up to 16 MiB in 512-byte steps, -m 1..16 coroutines.
constexpr uint64_t kSectorSize = 512;
constexpr uint64_t kMaxSparse = 16u << 20;
constexpr long kMaxParallel = 16;
constexpr uint64_t kDefaultSparse = 4096;


// Every flag as parsed; `*_given` where qemu distinguishes "absent" from a value.
struct ConvertArgs {
    std::vector<std::string> files;  // sources..., target
    std::string src_fmt;
    bool image_opts = false;
    std::string src_cache;
    std::string snapshot;
    bool bitmaps = false;
    bool skip_broken = false;
    bool salvage = false;
    std::string out_fmt;
    bool tgt_image_opts = false;
    std::vector<std::string> options;
    std::string cache = "unsafe";
    std::string backing;
    std::string backing_fmt;
    std::string sparse;
    bool no_create = false;
    bool target_is_zero = false;
    bool compress = false;
    bool force_share = false;
    std::string rate;
    std::string parallel;
    bool oob_writes = false;
    bool copy_range = false;
    bool progress = false;
    bool quiet = false;
    std::vector<std::string> objects;
    std::string progress_fd;
};

// Everything checked and converted, ready to run.
struct ConvertPlan {
    std::vector<std::string> sources;
    std::string target;
    std::string out_fmt;  // "" only with --target-image-opts
    uint64_t min_sparse = kDefaultSparse;
    bool explicit_sparse = false;
    unsigned requests = 8;
    uint64_t rate_limit = 0;
    bool flush = false;   // the cache mode wants the target flushed at the end
    bool direct = false;  // the target's cache mode bypasses the host page cache (O_DIRECT)
    bool src_direct = false;  // the same for the sources (-T)
    blk::Json create_opts = blk::Json::object();
};

// qemu_strtol(text, base 0) within 1..16: leading blanks allowed, nothing after the number.
bool parse_parallel(const std::string& text, unsigned& out) {
    const char* s = text.c_str();
    char* end = nullptr;
    errno = 0;
    long long v = std::strtoll(s, &end, 0);
    if (end == s || *end != '\0' || errno == ERANGE || v < 1 || v > kMaxParallel) return false;
    out = static_cast<unsigned>(v);
    return true;
}

bool has_key(const blk::Schema& s, const std::string& key) {
    return std::any_of(s.begin(), s.end(), [&](const blk::OptSpec& o) { return o.name == key; });
}

// Runs create_image's option checks (keys, value types, size, protocol) without creating
// anything, so a bad -o fails first and with the bare message, as qemu-img's option parsing
// does. The backing options are checked later, with convert's own rules and messages.
blk::Status check_create_options(const std::string& fmt, const std::string& target, blk::Json opts, const blk::ObjectStore* objects) {
    const blk::DriverSpec* spec = blk::Registry::builtin().find(fmt);
    if (!spec) return blk::make_error(EINVAL, "Unknown file format '" + fmt + "'");
    for (const char* key : {"backing_file", "backing_fmt"}) {
        if (has_key(spec->create_options, key)) opts.erase(key);
    }
    blk::CreateRequest req;
    req.format = fmt;
    req.filename = target;
    req.options = std::move(opts);
    req.objects = objects;
    req.open_backing = false;
    return blk::check_create_request(req);
}


std::string opt_text(const blk::Json& opts, const std::string& key) {
    auto it = opts.find(key);
    if (it == opts.end() || it->is_null()) return {};
    return it->is_string() ? it->get<std::string>() : it->dump();
}

// A new qcow2 image grows as its clusters are allocated, and the file system would then
// allocate blocks behind every write: a preallocate filter inserted above the image's file
// (a graph edit on the opened target, so the qcow2 node reaches its file through it) grows
// the file in large allocated steps and cuts it back when the image closes (tests/bench:
// raw -> qcow2 about a tenth faster here).
blk::Status insert_preallocate(blk::Graph& g) {
    blk::Node* top = blk::skip_filters(g.root.get());
    std::shared_ptr<blk::Node> file;
    for (const blk::Child& c : top->children()) {
        if (c.roles & blk::kRolePrimary) file = c.node;
    }
    if (!file) return {};
    BLK_TRY_ASSIGN(std::shared_ptr<blk::Node> pre, blk::make_filter_node(blk::Json{{"driver", "preallocate"}}));
    return g.insert_filter_above(std::move(file), std::move(pre));
}

// What a target flagged with set_incomplete() carries, for messages.
std::string incomplete_mark(blk::Node* root) {
    // Down every Filtered edge: filters, and raw without a window (whose flag is its file's).
    blk::Node* n = root;
    for (blk::Node* f; n && (f = blk::filtered_child(*n));) n = f;
    if (n && n->driver_name() == "qcow2") return "flagged with its qcow2 'corrupt' bit";
    if (n && n->driver_name() == "file") return "flagged with the extended attribute user.blkimg.incomplete";
    return "flagged as incomplete";
}

class Converter {
public:
    Converter(const ConvertArgs& a, ConvertPlan p, Progress& progress, Interrupts& intr)
        : a_(a), p_(std::move(p)), progress_(progress), intr_(intr) {}

    // Runs the conversion; prints its error and returns the exit code.
    int run();
    const std::string& error() const { return error_; }
    bool interrupted() const { return interrupted_; }

private:
    int fail(const std::string& msg) {
        error_ = msg;
        progress_.clear_line();
        print_error(msg);
        return 1;
    }
    void warn(const std::string& msg) {
        if (a_.quiet) return;
        progress_.clear_line();
        print_warning(msg);
    }
    void note_salvage(const std::string& msg);
    bool open_sources();
    int prepare_new_target();
    int open_target();
    int copy();
    int stop_interrupted();

public:
    // Prints the --salvage errors gathered during the copy: one line per run of unreadable
    // sectors with the same reason, then the totals.
    void report_salvage();

private:
    const ConvertArgs& a_;
    ConvertPlan p_;
    // --salvage's per-sector warnings ("error while reading [block status at ]offset N: R"),
    // by reason; workers report them out of order, so they are sorted and merged at the end.
    std::map<std::string, std::vector<uint64_t>> salvage_;
    Progress& progress_;
    Interrupts& intr_;
    blk::ObjectStore objects_;
    std::vector<blk::Graph> sources_;
    uint64_t total_ = 0;
    const blk::DriverSpec* fmt_ = nullptr;
    std::string out_backing_;
    NewTarget new_target_;
    std::optional<blk::Graph> target_;
    bool flagged_ = false;
    bool created_ = false;
    std::string mark_;
    std::string error_;
    bool interrupted_ = false;
};

void Converter::note_salvage(const std::string& msg) {
    // A sector per warning: a damaged 64 MiB image would print 262,144 lines.
    static const std::string kReadPrefix = "error while reading offset ";
    static const std::string kStatusPrefix = "error while reading block status at offset ";
    std::string rest;
    if (msg.rfind(kStatusPrefix, 0) == 0) rest = msg.substr(kStatusPrefix.size());
    else if (msg.rfind(kReadPrefix, 0) == 0) rest = msg.substr(kReadPrefix.size());
    const auto colon = rest.find(": ");
    if (colon == std::string::npos || colon == 0 || rest.find_first_not_of("0123456789") != colon) {
        warn(msg);
        return;
    }
    salvage_[rest.substr(colon + 2)].push_back(std::stoull(rest.substr(0, colon)));
}

void Converter::report_salvage() {
    if (salvage_.empty()) return;
    uint64_t runs = 0, bytes = 0;
    for (auto& [why, offs] : salvage_) {
        std::sort(offs.begin(), offs.end());
        offs.erase(std::unique(offs.begin(), offs.end()), offs.end());
        // The engine reports one piece per sector (or per request-alignment block).
        uint64_t step = 0;
        for (size_t i = 1; i < offs.size(); ++i)
            if (!step || offs[i] - offs[i - 1] < step) step = offs[i] - offs[i - 1];
        step = std::max<uint64_t>(step ? std::min<uint64_t>(step, 4096) : kSectorSize, kSectorSize);
        for (size_t i = 0; i < offs.size();) {
            size_t j = i + 1;
            while (j < offs.size() && offs[j] <= offs[j - 1] + step) ++j;
            const uint64_t len = offs[j - 1] + step - offs[i];
            warn("error while reading offset " + std::to_string(offs[i]) + ", " + std::to_string(len) +
                 " bytes: " + why + " (read as zeroes)");
            ++runs;
            bytes += len;
            i = j;
        }
    }
    warn("--salvage: " + std::to_string(runs) + " unreadable run" + (runs == 1 ? "" : "s") + ", " +
         std::to_string(bytes) + " bytes in all, read as zeroes");
}

bool Converter::open_sources() {
    for (const std::string& f : p_.sources) {
        ImageArgs ia;
        ia.filename = f;
        ia.format = a_.src_fmt;
        ia.image_opts = a_.image_opts;
        ia.objects = a_.objects;
        ia.force_share = a_.force_share;
        ia.cache_direct = p_.src_direct;
        auto g = open_image_args(ia, true);
        if (!g) {
            fail(g.error().message);
            return false;
        }
        total_ += g->root->size();
        sources_.push_back(std::move(*g));
    }
    return true;
}

// qemu-img's checks on a new target, in its order, then the hidden temporary image.
int Converter::prepare_new_target() {
    blk::Json& opts = p_.create_opts;
    if (!a_.backing.empty()) {
        if (!has_key(fmt_->create_options, "backing_file")) return fail("Backing file not supported for file format '" + p_.out_fmt + "'");
        opts["backing_file"] = a_.backing;
    }
    if (!a_.backing_fmt.empty()) {
        if (!has_key(fmt_->create_options, "backing_fmt")) return fail("Backing file format not supported for file format '" + p_.out_fmt + "'");
        opts["backing_fmt"] = a_.backing_fmt;
    }
    out_backing_ = opt_text(opts, "backing_file");
    if (a_.target_is_zero && !out_backing_.empty()) {
        // qemu-img 7.2 prints this and exits 0 having done nothing; a failure must not read as success.
        return fail("Cannot use --target-is-zero when the destination image has a backing file");
    }
    if (p_.sources.size() > 1 && !out_backing_.empty()) {
        return fail("Having a backing file for the target makes no sense when concatenating multiple input images");
    }
    if (!out_backing_.empty() && opt_text(opts, "backing_fmt").empty()) return fail("Use of backing file requires explicit backing format");
    if (a_.compress) {
        // Among our formats, those that store compressed clusters say which codec.
        if (!has_key(fmt_->create_options, "compression_type")) return fail("Compression not supported for this file format");
        const std::string enc = opt_text(opts, "encryption");
        if ((!enc.empty() && enc != "off") || !opt_text(opts, "encrypt.format").empty()) {
            return fail("Compression and encryption not supported at the same time");
        }
        const std::string prealloc = opt_text(opts, "preallocation");
        if (!prealloc.empty() && prealloc != "off") return fail("Compression and preallocation not supported at the same time");
    }
    if (intr_.raised()) return stop_interrupted();

    const std::string converting = p_.target + ": error while converting " + p_.out_fmt + ": ";
    auto nt = NewTarget::prepare(p_.target, opt_text(opts, "data_file"));
    if (!nt) return fail(converting + nt.error().message);
    new_target_ = std::move(*nt);
    intr_.guard_paths(new_target_.cleanup_paths());

    blk::CreateRequest req;
    req.format = p_.out_fmt;
    req.filename = new_target_.write_path();
    req.options = opts;
    req.objects = &objects_;
    // qemu-img convert creates without opening the backing file; opening the new image
    // opens it, and a bad one fails there ("Could not open 'x': ...").
    req.open_backing = false;
    // Overwriting in place: flagged from before the old content goes until the copy is done.
    req.incomplete = new_target_.flag_in_place();
    if (auto st = blk::create_image(req); !st) return fail(converting + new_target_.describe(st.error().message));
    created_ = true;
    return 0;
}

int Converter::open_target() {
    blk::ImageSpec spec;
    if (a_.no_create) {
        if (a_.tgt_image_opts && !a_.out_fmt.empty()) return fail("--image-opts and --format are mutually exclusive");
        spec = blk::ImageSpec{p_.target, p_.out_fmt, a_.tgt_image_opts};
    } else {
        spec = blk::ImageSpec{new_target_.write_path(), p_.out_fmt, false};
    }
    const std::string label = "Could not open '" + p_.target + "'";
    auto opened = [&]() -> blk::Result<blk::Graph> {
        blk::OpenFlags flags;
        flags.read_only = false;
        flags.allow_probe = a_.tgt_image_opts;
        // -t: "unsafe" skips the host's flush, so only format caches are written back at the
        // end; "none", "off" and "directsync" bypass the host's page cache.
        flags.cache_no_flush = !p_.flush;
        flags.cache_direct = p_.direct;
        flags.discard_unmap = p_.min_sparse != 0;  // as qemu-img: the target unmaps unless -S 0
        BLK_TRY_ASSIGN(blk::Graph g, blk::open_image(spec, flags, &objects_));
        if (!a_.no_create && !new_target_.direct() && p_.out_fmt == "qcow2") BLK_TRY(insert_preallocate(g));
        return g;
    }();
    if (!opened) {
        std::string msg = new_target_.describe(opened.error().message);
        return fail(msg.rfind(label, 0) == 0 ? msg : label + ": " + msg);
    }
    target_ = std::move(*opened);
    blk::Node* root = target_->root.get();
    if (a_.compress && !root->caps().write_compressed) return fail("Compression not supported for this file format");
    if (a_.no_create && root->size() < total_) return fail("output file is smaller than input file");
    return 0;
}

int Converter::stop_interrupted() {
    interrupted_ = true;
    std::string what;
    if (a_.no_create || new_target_.direct()) {
        what = flagged_ ? "the target '" + p_.target + "' is incomplete (" + mark_ + ")"
                        : "the target '" + p_.target + "' may be partly written";
        // Written in place, the create has already emptied it (born flagged, best effort).
        if (!target_ && !created_) what = "the target '" + p_.target + "' was not changed";
    } else {
        what = new_target_.replaces() ? "the target '" + p_.target + "' was left as it was"
                                      : "the target '" + p_.target + "' was not created";
    }
    return fail("interrupted by " + intr_.signal_name() + "; " + what);
}

int Converter::copy() {
    blk::Node* root = target_->root.get();
    blk::CopyOptions co;
    for (auto& g : sources_) co.sources.push_back(g.root.get());
    co.target = root;
    co.min_sparse = p_.min_sparse;
    co.target_has_backing = !out_backing_.empty();
    co.target_is_zero = a_.target_is_zero ||
                        (!a_.no_create && p_.min_sparse && !co.target_has_backing && root->caps().zero_init);
    if (co.target_has_backing && !a_.no_create) {
        if (blk::Node* b = blk::backing_chain_next(root)) co.target_backing_size = b->size();
    }
    co.compress = a_.compress;
    co.in_order = !a_.oob_writes;
    co.requests = p_.requests;
    co.rate_limit = p_.rate_limit;
    co.copy_range = a_.copy_range;
    co.salvage = a_.salvage;
    co.progress = [this](uint64_t done, uint64_t total) { progress_.update(done, total); };
    co.warn = [this](const std::string& m) { note_salvage(m); };
    co.cancel = intr_.flag();

    // Writing in place (-n, or a new image over a device or a file in a directory we cannot
    // write): flag the target so a failed copy cannot pass for a whole image.
    if (a_.no_create || new_target_.flag_in_place()) {
        if (auto st = root->set_incomplete(true); st) {
            flagged_ = true;
            mark_ = incomplete_mark(root);
        } else {
            warn("cannot flag '" + p_.target + "' as incomplete while it is overwritten (" + st.error().message +
                         "); if the copy fails, nothing marks it as incomplete");
        }
    }

    auto r = blk::copy_image(co);
    if (!r || intr_.raised()) {
        if (intr_.raised()) return stop_interrupted();
        std::string msg = new_target_.describe(r.error().message);
        if (a_.no_create || new_target_.direct()) {
            msg += flagged_ ? "; the target '" + p_.target + "' is incomplete (" + mark_ + ")"
                            : "; the target '" + p_.target + "' is incomplete (and could not be flagged)";
        } else {
            msg += new_target_.replaces() ? "; the target '" + p_.target + "' was left as it was"
                                          : "; the target '" + p_.target + "' was not created";
        }
        return fail(msg);
    }
    // copy_image flushed the target; with the unsafe cache mode that wrote back format
    // caches only. Clear the flag last, so it stays on whatever did not make it.
    if (flagged_) {
        if (auto st = root->set_incomplete(false); !st) return fail(new_target_.describe(st.error().message));
        if (p_.flush) {
            if (auto st = root->flush(); !st) return fail(new_target_.describe(st.error().message));
        }
    }
    return 0;
}

int Converter::run() {
    for (const std::string& o : a_.objects) {
        if (auto st = objects_.add(o); !st) return fail(st.error().message);
    }
    if (!open_sources()) return 1;
    if (intr_.raised()) return stop_interrupted();
    if (!a_.no_create) {
        const blk::DriverSpec* fmt = blk::Registry::builtin().find(p_.out_fmt);
        if (!fmt || fmt->kind != blk::DriverKind::Format) return fail("Unknown file format '" + p_.out_fmt + "'");
        if (!fmt->can_create()) return fail("Format driver '" + p_.out_fmt + "' does not support image creation");
        fmt_ = fmt;
        blk::Json checked = p_.create_opts;
        if (!checked.contains("size")) checked["size"] = std::to_string(total_);
        if (auto st = check_create_options(p_.out_fmt, p_.target, checked, &objects_); !st) return fail(st.error().message);
        // The target's size is the sources' (whatever -o size said, as in qemu-img).
        p_.create_opts["size"] = std::to_string(total_);
        if (int rc = prepare_new_target()) return rc;
    } else {
        out_backing_ = a_.backing;
        if (a_.target_is_zero && !out_backing_.empty()) {
            // qemu-img 7.2 says this and exits 0 having written nothing; scripts see the same.
            progress_.clear_line();
            print_error("Cannot use --target-is-zero when the destination image has a backing file");
            return 0;
        }
        if (p_.sources.size() > 1 && !out_backing_.empty()) {
            return fail("Having a backing file for the target makes no sense when concatenating multiple input images");
        }
    }
    if (intr_.raised()) return stop_interrupted();
    if (int rc = open_target()) return rc;
    if (intr_.raised()) return stop_interrupted();
    if (int rc = copy()) return rc;
    if (!a_.no_create) {
        // Close the image (its last metadata goes out) before it takes the target's name.
        target_.reset();
        if (intr_.raised()) return stop_interrupted();
        if (auto st = new_target_.commit(p_.flush); !st) return fail(st.error().message);
    }
    return 0;
}

void add_flags(CLI::App& app, ConvertArgs& a) {
    // As with getopt, a repeated option's last value counts (-o and --object accumulate).
    app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
    app.add_option("-f,--source-format", a.src_fmt, "format of every source (probed from the content when omitted)")->type_name("FMT");
    app.add_flag("--image-opts", a.image_opts, "treat each source as dotted image options (driver=qcow2,file.filename=x)");
    app.add_option("-T,--source-cache", a.src_cache, "cache mode of the sources (none, off, directsync: O_DIRECT)")->type_name("CACHE");
    app.add_option("-l,--snapshot", a.snapshot, "convert an internal snapshot (not supported yet)")->type_name("SNAPSHOT");
    app.add_flag("--bitmaps", a.bitmaps, "also copy persistent bitmaps (not supported yet)");
    app.add_flag("--skip-broken-bitmaps", a.skip_broken, "with --bitmaps, skip inconsistent bitmaps (not supported yet)");
    app.add_flag("--salvage", a.salvage, "read errors become zeroes (with a warning) instead of failing");
    app.add_option("-O,--target-format", a.out_fmt, "format of the target (default: raw)")->type_name("FMT");
    app.add_flag("--target-image-opts", a.tgt_image_opts, "treat the target as dotted image options (needs -n)");
    app.add_option("-o,--target-format-options", a.options, "create options for the target (repeatable; -o help lists them)")
        ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll)
        ->allow_extra_args(false)
        ->type_name("OPTIONS");
    app.add_option("-t,--target-cache", a.cache, "cache mode of the target (default: unsafe, no flush)")->type_name("CACHE");
    app.add_option("-b,-B,--backing", a.backing, "make the target a copy-on-write overlay of this backing file")->type_name("BACKING_FILE");
    app.add_option("-F,--backing-format", a.backing_fmt, "format of the backing file given with -b/-B")->type_name("BACKING_FMT");
    app.add_option("-S,--sparse-size", a.sparse, "zero runs at least this long become holes (default: 4k; 0: allocate everything)")
        ->type_name("SIZE");
    app.add_flag("-n,--no-create", a.no_create, "write into an existing target instead of creating one");
    app.add_flag("--target-is-zero", a.target_is_zero, "the existing target already reads as zeroes (needs -n)");
    app.add_flag("-c,--compress", a.compress, "write compressed clusters (qcow2)");
    app.add_flag("-U,--force-share", a.force_share, "open the sources shared, even if a VM is using them");
    app.add_option("-r,--rate-limit", a.rate, "limit the copy to this many bytes per second (suffixes k, M, G, ...)")->type_name("RATE");
    app.add_option("-m,--parallel", a.parallel, "requests in flight, 1 to 16 (default: 8)")->type_name("NUM");
    app.add_flag("-W,--oob-writes", a.oob_writes, "allow out-of-order writes (faster; a qcow2 target may fragment)");
    app.add_flag("-C,--copy-range-offloading", a.copy_range, "let the host copy data ranges (copy_file_range)");
    app.add_flag("-p,--progress", a.progress, "show progress on stdout");
    app.add_flag("-q,--quiet", a.quiet, "print nothing but errors");
    app.add_option("--object", a.objects, "define an object (secret, throttle-group), e.g. secret,id=sec0,data=pw")
        ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll)
        ->allow_extra_args(false)
        ->type_name("OBJECTDEF");
    app.add_option("--progress-fd", a.progress_fd,
                   "write progress as JSON lines ({\"done\", \"total\", \"elapsed\"}) to this file descriptor")
        ->type_name("FD");
    app.add_option("files", a.files, "SOURCE... TARGET: the images to read, then the image to write")
        ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll)
        ->type_name("FILE");
}

// Flag checks, in the order qemu-img makes them. Returns -1 to go on, else the exit code.
int check_flags(const ConvertArgs& a, ConvertPlan& p) {
    if (!a.sparse.empty()) {
        uint64_t v = 0;
        if (!size_arg(a.sparse, "buffer size for sparse output", v)) return 1;
        if (v % kSectorSize || v > kMaxSparse) {
            print_error("Invalid buffer size for sparse output specified. Valid sizes are multiples of 512 up to 16777216. "
                        "Select 0 to disable sparse detection (fully allocates output).");
            return 1;
        }
        p.min_sparse = v;
        p.explicit_sparse = true;
    }
    if (!a.rate.empty() && !size_arg(a.rate, "rate limit", p.rate_limit)) return 1;
    if (!a.parallel.empty() && !parse_parallel(a.parallel, p.requests)) {
        print_error("Invalid number of coroutines. Allowed number of coroutines is between 1 and 16");
        return 1;
    }
    p.out_fmt = a.out_fmt.empty() && !a.tgt_image_opts ? "raw" : a.out_fmt;
    if (a.skip_broken && !a.bitmaps) return print_error("Use of --skip-broken-bitmaps requires --bitmaps"), 1;
    if (a.compress && a.copy_range) return print_error("Cannot enable copy offloading when -c is used"), 1;
    if (p.explicit_sparse && a.copy_range) return print_error("Cannot enable copy offloading when -S is used"), 1;
    if (a.copy_range && a.salvage) return print_error("Cannot use copy offloading in salvaging mode"), 1;
    if (a.tgt_image_opts && !a.no_create) return print_error("--target-image-opts requires use of -n flag"), 1;
    if (a.no_create && !a.options.empty()) return print_error("-o has no effect when skipping image creation"), 1;
    if (a.target_is_zero && !a.no_create) return print_error("--target-is-zero requires use of -n flag"), 1;

    if (!a.options.empty()) {
        std::string joined;
        for (const std::string& o : a.options) {
            if (auto st = accumulate_options(joined, o); !st) return print_error(st.error().message), 1;
        }
        if (has_help_option(joined)) {
            if (p.out_fmt.empty()) return print_error("Option help requires a format be specified"), 1;
            return print_create_options_help(p.out_fmt, a.files.size() >= 2 ? &a.files.back() : nullptr);
        }
        auto parsed = blk::parse_create_options(joined);
        if (!parsed) return print_error(parsed.error().message), 1;
        p.create_opts = std::move(*parsed);
    }
    if (a.files.size() < 2) return print_error("Must specify image file name"), 1;
    p.sources.assign(a.files.begin(), a.files.end() - 1);
    p.target = a.files.back();
    if (!a.src_cache.empty() && !valid_cache_mode(a.src_cache)) return print_error("Invalid source cache option: " + a.src_cache), 1;
    if (!valid_cache_mode(a.cache)) return print_error("Invalid cache option: " + a.cache), 1;
    p.flush = a.cache != "unsafe";
    // qemu's bdrv_parse_cache_mode: these three open with O_DIRECT.
    p.direct = cache_mode_direct(a.cache);
    p.src_direct = cache_mode_direct(a.src_cache);
    if (!a.snapshot.empty()) return print_error("-l/--snapshot: converting internal snapshots is not supported yet"), 1;
    if (a.bitmaps) return print_error("--bitmaps: copying persistent bitmaps is not supported yet"), 1;
    return -1;
}

}  // namespace

int cmd_convert(int argc, char** argv) {
    CLI::App app("Convert images: copy one or more sources, concatenated, into a new image (or, with -n, an "
                 "existing one). A new target is written under a hidden temporary name and renamed into place "
                 "when complete; an existing file is overwritten in place (its owner, mode and links stay), "
                 "flagged incomplete until the copy is done.",
                 prog_name() + " convert");
    ConvertArgs a;
    add_flags(app, a);
    if (int rc = parse_cli(app, argc, argv); rc >= 0) return rc;

    ConvertPlan plan;
    ProgressConfig pc;
    if (!a.progress_fd.empty()) {
        auto fd = Progress::parse_fd(a.progress_fd);
        if (!fd) return print_error(fd.error().message), 1;
        pc.json_fd = *fd;
    }
    if (int rc = check_flags(a, plan); rc >= 0) return rc;

    pc.show = a.progress && !a.quiet;
    pc.terminal = ::isatty(STDOUT_FILENO) == 1;
    pc.quiet = a.quiet;
    Progress progress(pc);
    Progress::install_sigusr1();
    Interrupts intr;
    progress.begin();
    Converter conv(a, std::move(plan), progress, intr);
    const int rc = conv.run();
    conv.report_salvage();
    progress.end(rc == 0 ? ProgressEnd::Ok : conv.interrupted() ? ProgressEnd::Interrupted : ProgressEnd::Failed, conv.error());
    return rc;
}

}  // namespace blkimg
