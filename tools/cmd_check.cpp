// blkimg check: a consistency check of an image's metadata and its repair with -r (qemu-img
// check compatible: report lines, summary, JSON and exit codes).
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <string>

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
std::string json_result(const blk::CheckResult& r, const std::string& filename) {
    blk::Json j = blk::Json::object();
    j["filename"] = filename;
    j["format"] = "qcow2";
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
    return qemu_pretty_json(j) + "\n";
}

}  // namespace

int cmd_check(int argc, char** argv) {
    CLI::App app("Check an image's metadata for consistency; with -r, repair it (read-write, as qemu-img). Exit "
                 "status: 0 no errors, 1 check not completed, 2 corruptions, 3 leaked clusters only, 63 format "
                 "without checks.",
                 prog_name() + " check");
    ImageArgs args;
    std::string cache, output = "human", repair;
    bool quiet = false;
    add_image_flags(app, args);
    app.add_option("-T,--cache", cache, "cache mode (none, off, directsync: O_DIRECT)")->type_name("CACHE");
    app.add_option("-r,--repair", repair, "repair: 'leaks' frees leaked clusters, 'all' also fixes refcounts, COPIED flags and rebuilds the refcount structure")->type_name("leaks|all");
    app.add_flag("-q,--quiet", quiet, "print nothing but errors (the exit status tells the verdict)");
    add_output_flag(app, output);
    if (int rc = parse_cli(app, argc, argv); rc >= 0) return rc;
    if (int rc = check_one_filename(app); rc >= 0) return rc;
    if (!check_output(output)) return 1;
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
