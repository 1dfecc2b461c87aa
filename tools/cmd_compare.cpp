// blkimg compare: do two images read the same? (qemu-img compare compatible, plus JSON output
// listing every differing range).
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <string>

#include <unistd.h>

#include "blk/compare.h"
#include "common.h"
#include "progress.h"
#include "qjson.h"

namespace blkimg {

namespace {

// qemu-img compare's exit codes.
constexpr int kExitIdentical = 0;
constexpr int kExitDiffer = 1;
constexpr int kExitOpen = 2;
constexpr int kExitStatus = 3;
constexpr int kExitRead = 4;

// qemu-img's text (strerror of the code), and the cause when it says more than that.
std::string error_text(const blk::Error& e) {
    std::string text = std::strerror(e.code);
    if (!e.message.empty() && e.message != text) text += " (" + e.message + ")";
    return text;
}

std::string json_result(const blk::CompareResult& r, const std::string& f1, const std::string& f2, bool strict) {
    blk::Json j = blk::Json::object();
    const char* verdict = "identical";
    switch (r.verdict) {
        case blk::CompareVerdict::Identical: break;
        case blk::CompareVerdict::Differ: verdict = "content-mismatch"; break;
        case blk::CompareVerdict::SizeMismatch: verdict = "size-mismatch"; break;
        case blk::CompareVerdict::StatusMismatch: verdict = "block-status-mismatch"; break;
        default: break;
    }
    j["identical"] = r.verdict == blk::CompareVerdict::Identical;
    j["verdict"] = verdict;
    j["strict"] = strict;
    j["filename1"] = f1;
    j["filename2"] = f2;
    j["size1"] = r.size[0];
    j["size2"] = r.size[1];
    if (r.verdict == blk::CompareVerdict::Differ || r.verdict == blk::CompareVerdict::StatusMismatch) {
        j["offset"] = r.offset;
    }
    blk::Json diffs = blk::Json::array();
    for (const blk::DiffRange& d : r.diffs) diffs.push_back({{"offset", d.offset}, {"length", d.length}});
    j["differences"] = std::move(diffs);
    j["differences-truncated"] = r.diffs_truncated;
    return j.dump(4) + "\n";
}

}  // namespace

int cmd_compare(int argc, char** argv) {
    CLI::App app("Compare the guest content of two images, which may differ in format and settings. Unallocated "
                 "ranges and zeroes count as equal, and a longer image's tail must read as zeroes (unless -s). "
                 "Exit status: 0 identical, 1 different, 2 open error, 3 block-status error, 4 read error.",
                 prog_name() + " compare");
    std::string fmt1, fmt2, cache, output = "human";
    bool image_opts = false, strict = false, progress = false, quiet = false, force_share = false;
    std::vector<std::string> objects;
    uint64_t max_diffs = 1000;
    std::string max_diffs_text;
    std::vector<std::string> files;
    app.add_option("-f,--a-format", fmt1, "format of FILE1 (probed from the content when omitted)")->type_name("FMT");
    app.add_option("-F,--b-format", fmt2, "format of FILE2 (probed from the content when omitted)")->type_name("FMT");
    app.add_flag("--image-opts", image_opts, "treat FILE1 and FILE2 as dotted image options (driver=qcow2,file.filename=x)");
    app.add_option("--object", objects, "define an object (secret, throttle-group), e.g. secret,id=sec0,data=pw")
        ->type_name("OBJECTDEF");
    app.add_option("-T,--cache", cache, "cache mode of both images (none, off, directsync: O_DIRECT)")->type_name("CACHE");
    app.add_flag("-s,--strict", strict, "strict: sizes and each range's allocation must match too");
    app.add_flag("-U,--force-share", force_share, "open the images shared, even if a VM is using them");
    app.add_flag("-p,--progress", progress, "show progress");
    app.add_flag("-q,--quiet", quiet, "print nothing but errors (the exit status tells the verdict)");
    add_output_flag(app, output);
    app.add_option("--max-diffs", max_diffs_text, "with --output=json: list at most N differing ranges (default 1000)")
        ->type_name("N");
    app.add_option("files", files, "the two images (file names, json:{...}, or dotted options with --image-opts)")
        ->type_name("FILE1 FILE2");
    if (int rc = parse_cli(app, argc, argv); rc >= 0) return rc;
    if (files.size() != 2 || !extra_words(app).empty()) return usage_error("Expecting two image file names");
    if (!check_output(output)) return 1;
    const bool json = output == "json";
    if (!max_diffs_text.empty()) {
        if (!size_arg(max_diffs_text, "max diffs", max_diffs) || max_diffs == 0) {
            if (max_diffs == 0) print_error("--max-diffs must be at least 1");
            return 1;
        }
    }
    if (quiet) progress = false;

    ImageArgs args[2];
    for (int i = 0; i < 2; ++i) {
        args[i].filename = files[static_cast<size_t>(i)];
        args[i].format = i == 0 ? fmt1 : fmt2;
        args[i].image_opts = image_opts;
        args[i].objects = objects;
        args[i].force_share = force_share;
    }
    if (!cache.empty()) {
        if (!valid_cache_mode(cache)) {
            print_error("Invalid source cache option: " + cache);
            return kExitOpen;
        }
        args[0].cache_direct = args[1].cache_direct = cache_mode_direct(cache);
    }
    auto g1 = open_image_args(args[0], true);
    if (!g1) {
        print_error(g1.error().message);
        return kExitOpen;
    }
    auto g2 = open_image_args(args[1], true);
    if (!g2) {
        print_error(g2.error().message);
        return kExitOpen;
    }

    ProgressConfig pc;
    pc.show = progress && !json;
    pc.terminal = pc.show && isatty(STDOUT_FILENO);
    pc.quiet = quiet;
    Progress prog(pc);
    if (pc.show) prog.begin();
    blk::CompareOptions o;
    o.strict = strict;
    o.max_diffs = json ? max_diffs : 0;
    if (pc.show) o.progress = [&](uint64_t done, uint64_t total) { prog.update(done, total); };
    const blk::CompareResult r = blk::compare_images(g1->root.get(), g2->root.get(), o);

    const bool failed = r.verdict == blk::CompareVerdict::StatusError || r.verdict == blk::CompareVerdict::ReadError;
    // qemu-img prints its verdict after the last "(NN.NN/100%)" line, on the same line, and
    // then the newline that ends the progress output; a live terminal line is ended first.
    if (pc.terminal) prog.end(failed ? ProgressEnd::Failed : ProgressEnd::Ok);
    struct EndProgress {
        Progress& p;
        bool on;
        ~EndProgress() {
            if (on) p.end(ProgressEnd::Failed);  // just the newline: 100% was shown, or not reached
        }
    } end_progress{prog, pc.show && !pc.terminal};
    auto say = [&](const std::string& line) {
        if (!quiet && !json) std::printf("%s\n", line.c_str());
    };
    if (r.tail_checked) say("Warning: Image size mismatch!");
    const std::string& name = files[r.image];
    switch (r.verdict) {
        case blk::CompareVerdict::StatusError:
            print_error("Sector allocation test failed for " + name + " (" + r.error.message + ")");
            return kExitStatus;
        case blk::CompareVerdict::ReadError:
            print_error("Error while reading offset " + std::to_string(r.offset) + " of " + name + ": " +
                        error_text(r.error));
            return kExitRead;
        default: break;
    }
    if (json && !quiet) {
        const std::string text = json_result(r, files[0], files[1], strict);
        std::fwrite(text.data(), 1, text.size(), stdout);
    }
    switch (r.verdict) {
        case blk::CompareVerdict::Identical: say("Images are identical."); return kExitIdentical;
        case blk::CompareVerdict::Differ: say("Content mismatch at offset " + std::to_string(r.offset) + "!"); break;
        case blk::CompareVerdict::SizeMismatch: say("Strict mode: Image size mismatch!"); break;
        case blk::CompareVerdict::StatusMismatch:
            say("Strict mode: Offset " + std::to_string(r.offset) + " block status mismatch!");
            break;
        default: break;
    }
    return kExitDiffer;
}

}  // namespace blkimg
