// blkimg check: a consistency check of an image's metadata and its repair with -r (qemu-img
// check compatible: report lines, summary, JSON and exit codes).
#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "blk/check.h"
#include "common.h"
#include "qjson.h"

namespace blkimg {

namespace {

// qemu-img check's exit codes.
constexpr int kExitClean = 0;
constexpr int kExitNotCompleted = 1;
constexpr int kExitCorrupt = 2;
constexpr int kExitLeaks = 3;
constexpr int kExitNoChecks = 63;

void print_human(const blk::CheckResult& r) {
    if (r.corruptions == 0 && r.leaks == 0 && r.check_errors == 0) {
        std::printf("No errors were found on the image.\n");
    } else {
        if (r.corruptions) {
            std::printf("\n%" PRIu64 " errors were found on the image.\n"
                        "Data may be corrupted, or further writes to the image may corrupt it.\n",
                        r.corruptions);
        }
        if (r.leaks) {
            std::printf("\n%" PRIu64 " leaked clusters were found on the image.\n"
                        "This means waste of disk space, but no harm to data.\n",
                        r.leaks);
        }
        if (r.check_errors) std::printf("\n%" PRIu64 " internal errors have occurred during the check.\n", r.check_errors);
    }
    if (r.total_clusters != 0 && r.allocated_clusters != 0) {
        const double alloc = static_cast<double>(r.allocated_clusters);
        std::printf("%" PRIu64 "/%" PRIu64 " = %0.2f%% allocated, %0.2f%% fragmented, %0.2f%% compressed clusters\n",
                    r.allocated_clusters, r.total_clusters, alloc * 100.0 / static_cast<double>(r.total_clusters),
                    static_cast<double>(r.fragmented_clusters) * 100.0 / alloc,
                    static_cast<double>(r.compressed_clusters) * 100.0 / alloc);
    }
    if (r.image_end_offset > 0) std::printf("Image end offset: %" PRIu64 "\n", r.image_end_offset);
}

// qemu-img's ImageCheck: every counter but check-errors is left out when it is zero.
void add_check_fields(blk::Json& j, const blk::CheckResult& r) {
    j["check-errors"] = r.check_errors;
    if (r.image_end_offset) j["image-end-offset"] = r.image_end_offset;
    if (r.corruptions) j["corruptions"] = r.corruptions;
    if (r.leaks) j["leaks"] = r.leaks;
    if (r.total_clusters) j["total-clusters"] = r.total_clusters;
    if (r.allocated_clusters) j["allocated-clusters"] = r.allocated_clusters;
    if (r.fragmented_clusters) j["fragmented-clusters"] = r.fragmented_clusters;
    if (r.compressed_clusters) j["compressed-clusters"] = r.compressed_clusters;
    if (r.corruptions_fixed) j["corruptions-fixed"] = r.corruptions_fixed;
    if (r.leaks_fixed) j["leaks-fixed"] = r.leaks_fixed;
}

std::string json_result(const blk::CheckResult& r, const std::string& filename) {
    blk::Json j = blk::Json::object();
    j["filename"] = filename;
    j["format"] = "qcow2";
    add_check_fields(j, r);
    return qemu_pretty_json(j) + "\n";
}

// The exit code of one finished check.
int check_exit(const blk::CheckResult& r) {
    if (r.check_errors) return kExitNotCompleted;
    if (r.corruptions) return kExitCorrupt;
    if (r.leaks) return kExitLeaks;
    return kExitClean;
}

// --chain: how bad a layer's exit code is. A check that could not be completed says least
// about the image, so it ranks worst; then corruption, then leaks (harmless to data), then
// clean. A format without checks counts as clean (it has no metadata to check).
int severity(int exit_code) {
    switch (exit_code) {
    case kExitNotCompleted: return 3;
    case kExitCorrupt: return 2;
    case kExitLeaks: return 1;
    default: return 0;
    }
}

const char* verdict(int exit_code) {
    switch (exit_code) {
    case kExitClean: return "no errors";
    case kExitNotCompleted: return "check not completed";
    case kExitCorrupt: return "corruptions";
    case kExitLeaks: return "leaked clusters only";
    default: return "no image with checks";
    }
}

// One layer of check --chain: what its own check found and what the chain says about it.
struct LayerReport {
    std::string filename;
    std::string format;  // "" when the layer could not be opened and records no format
    unsigned depth = 0;
    std::optional<blk::CheckResult> result;  // set when the check ran
    bool no_checks = false;                  // a format without checks (raw)
    std::string note;                        // why the layer has no check counters
    std::vector<std::string> errors;         // chain errors: they make the layer's exit 1
    std::vector<std::string> warnings;       // chain warnings: reported, exit unchanged
    int exit_code = kExitClean;
};

// What backing_error says about `overlay` (named `overlay_name`), as a chain error of the
// overlay (a loop, too deep) or as a layer of its own that could not be opened.
void report_backing_error(const blk::BackingError& e, const std::string& overlay_name, LayerReport& overlay,
                          std::vector<LayerReport>& layers) {
    if (e.kind != blk::BackingError::Kind::Open) {
        overlay.errors.push_back("backing file '" + e.name + "' of '" + overlay_name + "': " + e.error.message);
        overlay.exit_code = kExitNotCompleted;
        return;
    }
    LayerReport broken;
    broken.filename = e.name;
    broken.format = e.format;
    broken.depth = overlay.depth + 1;
    broken.note = "the image could not be opened";
    broken.errors.push_back("backing file '" + e.name + "' of '" + overlay_name + "' cannot be opened: " + e.error.message);
    broken.exit_code = kExitNotCompleted;
    layers.push_back(std::move(broken));
}

// The format the first bytes of `layer`'s host file say (qemu's probe), "" when there is
// no host file below it to read. Only the header is read, never guest data beyond it.
std::string probed_format(blk::Node& layer) {
    blk::Node* n = &layer;
    while (n && !n->caps().protocol) n = blk::primary_child(*n);
    if (!n) return {};
    auto name = blk::probe_node(blk::Registry::builtin(), *n);
    return name ? *name : std::string();
}

// One report per image of the chain, top first; the exit code is the worst layer's.
int check_chain(ImageArgs args, const std::string& output, bool quiet) {
    std::vector<blk::BackingError> failures;
    args.on_backing_error = [&](const blk::BackingError& e) { failures.push_back(e); };
    // The whole chain is opened once, read-only, as one graph (as info --backing-chain):
    // the opener resolves each backing name from its overlay's directory, refuses loops and
    // caps the depth; a backing file it cannot open is handed back here and its overlay
    // opens without it, so the layers above are still checked.
    auto g = open_image_args(args, true);
    if (!g) {
        print_error(g.error().message);
        return kExitNotCompleted;
    }
    std::vector<LayerReport> layers;
    std::vector<std::vector<std::string>> stderr_lines;
    unsigned depth = 0;
    // Walked by role: backing_chain_next follows the cow edge and passes over filters.
    for (blk::Node* layer = g->root.get(); layer; layer = blk::backing_chain_next(layer), ++depth) {
        blk::Node* image = blk::skip_filters(layer);
        LayerReport rep;
        rep.depth = depth;
        rep.filename = depth == 0 ? args.filename : image->filename();
        rep.format = image->driver_name();
        auto r = blk::check_image(layer);
        if (r) {
            rep.exit_code = check_exit(*r);
            rep.result = std::move(*r);
        } else if (r.error().code == ENOTSUP) {
            rep.no_checks = true;
            rep.note = "format '" + rep.format + "' has no checks (counted as clean)";
        } else {
            rep.note = r.error().message;
            rep.exit_code = kExitNotCompleted;
        }
        const std::string backing = image->backing_file_name();
        blk::Node* next = blk::backing_chain_next(layer);
        if (!backing.empty() && image->backing_format().empty() && !blk::is_json_filename(backing)) {
            rep.warnings.push_back("'" + rep.filename + "' does not record the format of its backing file '" + backing +
                                   "': it is probed (unsafe; set it with rebase -u -F)");
        }
        if (next && !image->backing_format().empty()) {
            const std::string probed = probed_format(*next);
            if (!probed.empty() && probed != "raw" && probed != image->backing_format()) {
                rep.warnings.push_back("'" + rep.filename + "' records its backing file '" + backing + "' as " +
                                       image->backing_format() + ", but its first bytes are a " + probed +
                                       " image: the guest reads that image's metadata as data");
            }
        }
        if (next && image->size() < next->size()) {
            rep.warnings.push_back("'" + rep.filename + "' (" + std::to_string(image->size()) +
                                   " bytes) is smaller than its backing file '" + next->filename() + "' (" +
                                   std::to_string(next->size()) + " bytes): the guest sees only the first " +
                                   std::to_string(image->size()) + " bytes of it");
        }
        layers.push_back(std::move(rep));
        if (!next) {
            // The overlay's failure, if its backing file could not be had (the last report
            // for this node: it was still being opened when it was made).
            for (auto it = failures.rbegin(); it != failures.rend(); ++it) {
                if (it->overlay != image) continue;
                const std::string name = layers.back().filename;
                report_backing_error(*it, name, layers.back(), layers);
                break;
            }
        }
    }
    // -- output --
    int worst = kExitClean;
    bool any_checked = false;
    for (const LayerReport& l : layers) {
        if (!l.no_checks) any_checked = true;
        if (severity(l.exit_code) > severity(worst)) worst = l.exit_code;
    }
    if (!any_checked) worst = kExitNoChecks;
    if (!quiet && output == "json") {
        blk::Json arr = blk::Json::array();
        for (const LayerReport& l : layers) {
            blk::Json j = blk::Json::object();
            j["filename"] = l.filename;
            j["format"] = l.format;
            j["depth"] = l.depth;
            if (l.result) add_check_fields(j, *l.result);
            j["exit-code"] = l.exit_code;
            if (!l.note.empty()) j["note"] = l.note;
            j["chain-errors"] = l.errors;
            j["chain-warnings"] = l.warnings;
            arr.push_back(std::move(j));
        }
        for (const LayerReport& l : layers)
            if (l.result)
                for (const std::string& line : l.result->lines) std::fprintf(stderr, "%s\n", line.c_str());
        std::fflush(stderr);
        std::printf("%s\n", qemu_pretty_json(arr).c_str());
        return worst;
    }
    for (size_t i = 0; i < layers.size(); ++i) {
        const LayerReport& l = layers[i];
        // The walker's report lines go to stderr as in a plain check, each layer's right
        // after its header.
        if (!quiet) {
            std::printf("%sChecking image '%s' (layer %u, format %s):\n", i ? "\n" : "", l.filename.c_str(), l.depth,
                        l.format.empty() ? "unknown" : l.format.c_str());
            std::fflush(stdout);
        }
        if (l.result) {
            for (const std::string& line : l.result->lines) std::fprintf(stderr, "%s\n", line.c_str());
            std::fflush(stderr);
        }
        if (quiet) continue;
        if (l.result) print_human(*l.result);
        if (!l.note.empty()) std::printf("%s: %s\n", l.no_checks ? "Not checked" : "Check not completed", l.note.c_str());
        for (const std::string& e : l.errors) std::printf("Chain error: %s\n", e.c_str());
        for (const std::string& w : l.warnings) std::printf("Chain warning: %s\n", w.c_str());
        std::fflush(stdout);
    }
    if (!quiet) {
        std::printf("\nBacking chain of '%s': %zu images, worst result: %s (exit %d)\n", args.filename.c_str(),
                    layers.size(), verdict(worst), worst);
    }
    return worst;
}

}  // namespace

int cmd_check(int argc, char** argv) {
    CLI::App app("Check an image's metadata for consistency; with -r, repair it (read-write, as qemu-img). Exit "
                 "status: 0 no errors, 1 check not completed, 2 corruptions, 3 leaked clusters only, 63 format "
                 "without checks.",
                 prog_name() + " check");
    ImageArgs args;
    std::string cache, output = "human", repair;
    bool quiet = false, chain = false;
    add_image_flags(app, args);
    app.add_option("-T,--cache", cache, "cache mode (none, off, directsync: O_DIRECT)")->type_name("CACHE");
    app.add_option("-r,--repair", repair, "repair: 'leaks' frees leaked clusters, 'all' also fixes refcounts, COPIED flags and rebuilds the refcount structure")->type_name("leaks|all");
    app.add_flag("-q,--quiet", quiet, "print nothing but errors (the exit status tells the verdict)");
    add_output_flag(app, output);
    app.add_flag("--chain", chain,
                 "check every image of the backing chain, top first: one report per image plus chain findings "
                 "(backing file missing or unopenable, loop, backing format not recorded, overlay smaller than "
                 "its backing); exit status the worst layer's (1 > 2 > 3 > 0); not with -r");
    if (int rc = parse_cli(app, argc, argv); rc >= 0) return rc;
    if (int rc = check_one_filename(app); rc >= 0) return rc;
    if (!check_output(output)) return 1;
    if (chain && !repair.empty()) {
        print_error("--chain cannot be used with -r: repair one image at a time (check --chain never writes)");
        return 1;
    }
    if (!repair.empty()) {
        if (repair != "leaks" && repair != "all") {
            return usage_error("Unknown option value for -r (expecting 'leaks' or 'all'): " + repair);
        }
        // A repair writes: a shared (-U) open is refused, as qemu-img refuses it.
        if (args.force_share) {
            print_error("Could not open '" + args.filename + "': force-share=on can only be used with read-only images");
            return 1;
        }
    }
    if (!cache.empty()) {
        if (!valid_cache_mode(cache)) {
            print_error("Invalid source cache option: " + cache);
            return 1;
        }
        args.cache_direct = cache_mode_direct(cache);
    }
    if (chain) return check_chain(args, output, quiet);
    const blk::Repair mode = repair.empty() ? blk::Repair::None : repair == "leaks" ? blk::Repair::Leaks : blk::Repair::All;
    // qemu-img check -r opens the image read-write at once, so any holder of the image fails
    // its "write" permission first: its two-line message, whether the read-only open or the
    // reopen for writing met the holder.
    auto write_lock_error = [&](const blk::Error& e) {
        const std::string& m = e.message;
        const size_t lb = m.find('['), rb = m.rfind(']');
        const std::string path = lb != std::string::npos && rb > lb ? m.substr(lb + 1, rb - lb - 1) : args.filename;
        print_error("Could not open '" + args.filename + "': Failed to get \"write\" lock\nIs another process using the image [" +
                    path + "]?");
        return kExitNotCompleted;
    };
    auto g = open_image_args(args, false);
    if (!g && mode != blk::Repair::None && is_lock_conflict(g.error())) return write_lock_error(g.error());
    if (!g) {
        print_error(g.error().message);
        return kExitNotCompleted;
    }
    blk::Node* target = blk::check_target(g->root.get());
    if (mode != blk::Repair::None && target) {
        // The image's file is reopened read-write in place (its write locks taken); the
        // format node above stays read-only: the repair writes the file itself.
        if (auto st = g->reopen_read_write(*target); !st) {
            if (is_lock_conflict(st.error())) return write_lock_error(st.error());
            print_error("Could not open '" + args.filename + "': " + st.error().message);
            return kExitNotCompleted;
        }
    }
    auto r = blk::check_image(g->root.get(), mode);
    if (r && mode != blk::Repair::None) {
        for (const std::string& line : r->lines) std::fprintf(stderr, "%s\n", line.c_str());
        std::fflush(stderr);
        if (r->failed) {
            print_error(std::string("Check failed: ") + std::strerror(r->failed));
            return kExitNotCompleted;
        }
        if (r->corruptions_fixed || r->leaks_fixed) {
            if (!quiet && output != "json") {
                std::printf("The following inconsistencies were found and repaired:\n\n"
                            "    %" PRIu64 " leaked clusters\n"
                            "    %" PRIu64 " corruptions\n\n"
                            "Double checking the fixed image now...\n",
                            r->leaks_fixed, r->corruptions_fixed);
                std::fflush(stdout);
            }
            const uint64_t cf = r->corruptions_fixed, lf = r->leaks_fixed;
            if (r->disabled) {
                print_error(std::string("Check failed: ") + std::strerror(ENOMEDIUM));
                return kExitNotCompleted;
            }
            r = blk::check_image(g->root.get());
            if (r) {
                r->corruptions_fixed = cf;
                r->leaks_fixed = lf;
            }
        } else {
            r->lines.clear();  // printed above
        }
    }
    if (!r) {
        if (r.error().code == ENOTSUP) {
            print_error(r.error().message);
            return kExitNoChecks;
        }
        print_error(args.filename + ": " + r.error().message);
        return kExitNotCompleted;
    }
    for (const std::string& line : r->lines) std::fprintf(stderr, "%s\n", line.c_str());
    std::fflush(stderr);
    if (!quiet) {
        if (output == "json") {
            const std::string text = json_result(*r, args.filename);
            std::fwrite(text.data(), 1, text.size(), stdout);
        } else {
            print_human(*r);
        }
    }
    if (r->check_errors) {
        print_error("Check failed");  // after the report, as qemu-img
        return kExitNotCompleted;
    }
    if (r->corruptions) return kExitCorrupt;
    if (r->leaks) return kExitLeaks;
    return kExitClean;
}

}  // namespace blkimg
